//! Backend-specific behaviour beyond the conformance suite: exact prefixes in `list`, URLs,
//! options, in-process release notification, capabilities.

mod common;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{DRIVERS, Driver, LONG, assert_config, holder, url_for};
use lock_core::{LockBackend, LockName};
use lock_sqlite::{SqliteBackend, SqliteOptions, Synchronous, URL_SCHEMES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prefixes_are_exact_not_like_patterns() {
    let names = [
        "a_b/1",
        "a%b/1",
        "A_b/1",
        "axb/1",
        "a_b",
        "caf\u{e9}/1",
        "cafe\u{301}/1",
        "b/1",
    ];
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let b = driver.open(&dir.path().join("list.db")).await.unwrap();
        let mut leases = Vec::new();
        for n in names {
            let name = LockName::new(n).unwrap();
            leases.push(
                b.try_acquire(&name, &holder(n), LONG)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let listed = |prefix: &'static str| {
            let b = Arc::clone(&b);
            async move {
                b.list(prefix)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|i| i.name.as_str().to_owned())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            listed("a_b/").await,
            ["a_b/1"],
            "{driver:?}: _ is not a wildcard"
        );
        assert_eq!(
            listed("a%").await,
            ["a%b/1"],
            "{driver:?}: % is not a wildcard"
        );
        assert_eq!(
            listed("A").await,
            ["A_b/1"],
            "{driver:?}: prefixes are case-sensitive"
        );
        assert_eq!(listed("caf\u{e9}").await, ["caf\u{e9}/1"], "{driver:?}");
        assert_eq!(listed("zzz").await, Vec::<String>::new(), "{driver:?}");
        let mut all: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        all.sort();
        assert_eq!(
            listed("").await,
            all,
            "{driver:?}: sorted by name, bytewise"
        );
        let expiring = LockName::new("a_b/expiring").unwrap();
        b.try_acquire(&expiring, &holder("short"), Duration::from_millis(50))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            listed("a_b/").await,
            ["a_b/1"],
            "{driver:?}: expired leases are not listed"
        );
        for lease in &leases {
            assert!(b.release(lease).await.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_change_wakes_on_a_release_by_the_same_backend() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let b = driver.open(&dir.path().join("notify.db")).await.unwrap();
        let name = LockName::new("notify").unwrap();
        let lease = b
            .try_acquire(&name, &holder("a"), LONG)
            .await
            .unwrap()
            .unwrap();
        let waiter = {
            let (b, name) = (Arc::clone(&b), name.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                b.wait_for_change(
                    &name,
                    lock_core::backend_kit::time::monotonic_now(),
                    Duration::from_secs(30),
                )
                .await;
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(b.release(&lease).await.unwrap());
        let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(waited < Duration::from_secs(5), "{driver:?}: {waited:?}");
        // A free lock is worth another attempt: the wait ends after one poll.
        let start = Instant::now();
        b.wait_for_change(
            &name,
            lock_core::backend_kit::time::monotonic_now(),
            Duration::from_secs(30),
        )
        .await;
        assert!(start.elapsed() < Duration::from_secs(5), "{driver:?}");
        // While the same holder keeps it and nothing is released, it waits its budget.
        let lease = b
            .try_acquire(&name, &holder("b"), LONG)
            .await
            .unwrap()
            .unwrap();
        let start = Instant::now();
        b.wait_for_change(
            &name,
            lock_core::backend_kit::time::monotonic_now(),
            Duration::from_millis(100),
        )
        .await;
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(b.release(&lease).await.unwrap());
    }
}

/// A lease that expires (its holder died) is noticed by a waiter within milliseconds,
/// although nobody released it: the waiter looks at the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_change_wakes_when_the_lease_expires() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let b = driver.open(&dir.path().join("expiry.db")).await.unwrap();
        let name = LockName::new("expiry").unwrap();
        let ttl = Duration::from_millis(300);
        let lease = b.try_acquire(&name, &holder("a"), ttl).await.unwrap();
        assert!(lease.is_some());
        let start = Instant::now();
        b.wait_for_change(
            &name,
            lock_core::backend_kit::time::monotonic_now(),
            Duration::from_secs(30),
        )
        .await;
        let waited = start.elapsed();
        assert!(
            waited >= ttl - Duration::from_millis(50) && waited < ttl + Duration::from_secs(2),
            "{driver:?}: {waited:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_are_honest() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let b = driver.open(&dir.path().join("caps.db")).await.unwrap();
        let caps = b.capabilities();
        assert!(caps.list, "{driver:?}");
        assert!(!caps.shared_across_hosts, "{driver:?}: a local file");
        assert!(
            caps.notifies_release,
            "{driver:?}: this process at once, others by polling the row every 1-2 ms"
        );
        assert!(caps.batched_heartbeat, "{driver:?}: one transaction");
        assert!(caps.semaphores, "{driver:?}: one row per permit");
    }
}

/// Acquiring a name that was used before, renewing and releasing each change its one row
/// in place: one database page, so one WAL frame per commit (what makes them cheap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_name_writes_one_page_per_acquire_heartbeat_and_release() {
    // WAL frames can only be counted where the driver puts the database in WAL mode.
    for &driver in DRIVERS.iter().filter(|d| d.sets_wal()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages.db");
        let b = driver.open(&path).await.unwrap();
        let frame = 24 + u64::try_from(common::raw_i64(&path, "PRAGMA page_size")).unwrap();
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap();
        let name = LockName::new("known").unwrap();
        let first = b
            .try_acquire(&name, &holder("first"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert!(b.release(&first).await.unwrap());

        let before = wal_size();
        let lease = b
            .try_acquire(&name, &holder("again"), LONG)
            .await
            .unwrap()
            .unwrap();
        let after_acquire = wal_size();
        // Another TTL, so that the expiry changes even within the same millisecond (SQLite
        // does not write a page whose row is rewritten unchanged).
        let renewed = b.heartbeat(&lease, LONG * 2).await.unwrap();
        let after_heartbeat = wal_size();
        assert!(b.release(&renewed).await.unwrap());
        let after_release = wal_size();
        assert_eq!(
            [
                after_acquire - before,
                after_heartbeat - after_acquire,
                after_release - after_heartbeat,
            ],
            [frame; 3],
            "{driver:?}: bytes appended to the WAL by acquire, heartbeat, release \
             (one {frame}-byte frame each expected)"
        );
        assert!(lease.fence > first.fence, "{driver:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_full_works_and_is_shared_with_normal_clients() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.db");
        let full = driver
            .open_with(SqliteOptions::new(&path).with_synchronous(Synchronous::Full))
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        let normal = driver.open(&path).await.unwrap();
        let name = LockName::new("durable").unwrap();
        let lease = full
            .try_acquire(&name, &holder("f"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            normal.inspect(&name).await.unwrap().unwrap().fence,
            lease.fence
        );
        let renewed = full.heartbeat(&lease, LONG).await.unwrap();
        assert!(normal.release(&renewed).await.unwrap());
    }
}

#[cfg(feature = "sqlx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_connect_applies_its_url_options_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sqlx.db");
    let b = lock_sqlite::SqlxSqliteBackend::connect(&format!(
        "sqlite://{}?synchronous=full",
        path.display()
    ))
    .await
    .unwrap();
    let pragma = |name: &'static str| {
        let pool = b.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(pragma("PRAGMA synchronous").await, 2, "FULL");
    assert_eq!(pragma("PRAGMA busy_timeout").await, 0);
}

/// The sqlx driver runs on one connection it detaches from the application's pool: an
/// application holding every connection of its pool still takes locks (before, each lock
/// operation waited for a pool connection, so a task holding the last one waited for itself
/// until the busy budget ran out), and closing the pool does not wait for the backend.
#[cfg(feature = "sqlx")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_backend_runs_on_a_connection_of_its_own_outside_the_pool() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options)
        .await
        .unwrap();
    let b =
        lock_sqlite::SqlxSqliteBackend::new_with_busy_timeout(pool.clone(), Duration::from_secs(3))
            .await
            .unwrap();
    // The application takes the pool's one connection and keeps it.
    let mut app = pool.acquire().await.unwrap();
    let one: i64 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *app)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let name = LockName::new("app-job").unwrap();
    let lease = tokio::time::timeout(
        Duration::from_secs(2),
        b.try_acquire(&name, &holder("app"), LONG),
    )
    .await
    .expect("a lock operation waits for no connection of the pool")
    .unwrap()
    .expect("the lock is free");
    assert_eq!(b.inspect(&name).await.unwrap().unwrap().fence, lease.fence);
    // The lease is in the application's database, where its own connection sees it.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM lock_leases")
        .fetch_one(&mut *app)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    drop(app);
    tokio::time::timeout(Duration::from_secs(2), pool.close())
        .await
        .expect("closing the pool does not wait for the backend's connection");
    // The backend's connection is its own: it outlives the pool.
    assert!(b.release(&lease).await.unwrap());
    assert!(b.inspect(&name).await.unwrap().is_none());
}

/// An application's in-memory pool (one database shared by the pool's connections): each
/// backend takes a connection of its own to that same database, so two backends on one pool
/// still keep each other out, and the application sees their leases.
#[cfg(feature = "sqlx")]
#[tokio::test(flavor = "current_thread")]
async fn sqlx_backends_share_an_in_memory_application_database() {
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    let first = lock_sqlite::SqlxSqliteBackend::new(pool.clone())
        .await
        .unwrap();
    let second = lock_sqlite::SqlxSqliteBackend::new(pool.clone())
        .await
        .unwrap();
    let name = LockName::new("in-memory").unwrap();
    let lease = first
        .try_acquire(&name, &holder("first"), LONG)
        .await
        .unwrap()
        .expect("free");
    assert!(
        second
            .try_acquire(&name, &holder("second"), LONG)
            .await
            .unwrap()
            .is_none(),
        "a second backend on the same in-memory database must see the lease"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM lock_leases")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert!(first.release(&lease).await.unwrap());
    let next = second
        .try_acquire(&name, &holder("second"), LONG)
        .await
        .unwrap()
        .expect("free after the release");
    assert!(next.fence > lease.fence);
}

/// How many descriptors of this process are open on `db`, its -wal or its -shm file.
#[cfg(all(feature = "sqlx", target_os = "linux"))]
fn descriptors_of(db: &Path) -> usize {
    let dir = db.parent().unwrap().canonicalize().unwrap();
    let name = db.file_name().unwrap().to_str().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| {
            target.parent() == Some(dir.as_path())
                && target
                    .file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(name))
        })
        .count()
}

/// Waits (at most 10 s) until no descriptor of `db` is open: sqlx's worker thread closes a
/// connection after the backend lets go of it.
#[cfg(all(feature = "sqlx", target_os = "linux"))]
async fn all_closed(db: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while descriptors_of(db) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} descriptors of the database are still open 10 s after {what}",
            descriptors_of(db)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The connection the sqlx driver takes out of the pool is closed when the last clone of
/// the backend goes: backends opened and dropped again and again leave no database file
/// open (nor a worker thread waiting for the handle, which owns the connection).
#[cfg(all(feature = "sqlx", target_os = "linux"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_backend_closes_its_connection_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.db");
    let open_files = || descriptors_of(&path);
    let name = LockName::new("job").unwrap();
    for round in 0..20 {
        let b =
            lock_sqlite::SqlxSqliteBackend::connect(&format!("sqlite+sqlx://{}", path.display()))
                .await
                .unwrap();
        let lease = b
            .try_acquire(&name, &holder("dropped"), LONG)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: the lock was left held"));
        assert!(b.release(&lease).await.unwrap());
        assert!(
            open_files() > 0,
            "round {round}: the backend has the file open"
        );
        drop(b);
    }
    all_closed(&path, "every backend was dropped").await;
}

/// Opening an sqlx backend (which takes its connection from the pool) cancelled at any
/// point leaves no connection open.
#[cfg(all(feature = "sqlx", target_os = "linux"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_backend_opening_cancelled_anywhere_leaves_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cancelled.db");
    let url = format!("sqlite+sqlx://{}", path.display());
    // Made once, so that later opens only take a connection and check the schema.
    drop(lock_sqlite::SqlxSqliteBackend::connect(&url).await.unwrap());
    let (mut cancelled, mut opened) = (0, 0);
    for step in 0..400u64 {
        let open = lock_sqlite::SqlxSqliteBackend::connect(&url);
        match tokio::time::timeout(Duration::from_micros(step * 5), open).await {
            Ok(backend) => {
                drop(backend.unwrap());
                opened += 1;
            }
            Err(_) => cancelled += 1,
        }
    }
    assert!(
        cancelled > 0 && opened > 0,
        "{cancelled} cancelled, {opened} opened"
    );
    all_closed(&path, "every open was cancelled or dropped").await;
}

/// `path` relative to the current directory (`..` up to the root, then down).
fn relative_to_cwd(path: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    let mut rel = PathBuf::new();
    for _ in 0..ups {
        rel.push("..");
    }
    rel.join(path.strip_prefix("/").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_open_absolute_and_relative_paths_with_options() {
    assert_eq!(URL_SCHEMES, ["sqlite"]);
    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().join("abs.db");
    let b = lock_sqlite::connect(&format!("sqlite://{}", abs.display()))
        .await
        .unwrap();
    assert_eq!(b.path(), abs);
    assert!(abs.exists());

    let rel_file = dir.path().join("sub/rel.db");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let rel = relative_to_cwd(&rel_file);
    let url = format!(
        "sqlite://{}?synchronous=full&busy_timeout=2s",
        rel.display()
    );
    let b = SqliteBackend::connect(&url).await.unwrap();
    assert!(
        rel_file.exists(),
        "{url} did not create {}",
        rel_file.display()
    );
    assert_eq!(b.options().synchronous, Synchronous::Full);
    assert_eq!(b.options().busy_timeout, Duration::from_secs(2));
    let name = LockName::new("via-url").unwrap();
    let lease = b
        .try_acquire(&name, &holder("u"), LONG)
        .await
        .unwrap()
        .unwrap();
    let other = Driver::Rusqlite.open(&rel_file).await.unwrap();
    assert_eq!(
        other.inspect(&name).await.unwrap().unwrap().fence,
        lease.fence
    );
    assert!(format!("{b:?}").contains("rel.db"));

    // mode=rw does not create a missing file.
    let missing = dir.path().join("missing.db");
    assert_config(
        lock_sqlite::connect(&format!("sqlite://{}?mode=rw", missing.display())).await,
        &["does not exist", "mode=rw"],
        "mode=rw",
    );
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_config_errors_for_every_connect() {
    for bad in [
        "postgres://localhost/db",
        "sqlite://",
        "sqlite::memory:",
        "sqlite:///tmp/x.db?synchronous=sometimes",
        "sqlite:///tmp/x.db?busy_timeout=forever",
        "sqlite:///tmp/x.db?busy_budget=30s",
        "sqlite:///tmp/x.db?color=blue",
    ] {
        assert_config(lock_sqlite::connect(bad).await, &["sqlite:///"], bad);
        #[cfg(feature = "sqlx")]
        assert_config(
            lock_sqlite::SqlxSqliteBackend::connect(bad).await,
            &["sqlite:///"],
            bad,
        );
    }
    // The URL helper the other tests use round-trips through the parser.
    let dir = tempfile::tempdir().unwrap();
    let url = url_for(&SqliteOptions::new(dir.path().join("x.db")));
    assert!(lock_sqlite::connect(&url).await.is_ok(), "{url}");
}
