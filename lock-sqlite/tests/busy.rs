//! `SQLITE_BUSY` never reaches the caller while the busy budget lasts: another connection
//! holding the write lock is waited for, and past the budget the caller gets `Unavailable`
//! naming the busy database.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{DRIVERS, LONG, acquire_all, holder, raw, raw_i64};
use lock_core::{LockError, LockName};
use lock_sqlite::SqliteOptions;

/// Another program holding the database's write lock (`BEGIN IMMEDIATE`) for `hold`.
/// Returns once the lock is held; the thread commits and ends after `hold`.
fn hold_write_lock(path: &Path, hold: Duration) -> JoinHandle<()> {
    let path: PathBuf = path.to_owned();
    let (held_tx, held_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let conn = raw(&path);
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("take the write lock");
        held_tx.send(()).expect("signal");
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").expect("commit");
    });
    held_rx.recv().expect("the holder thread started");
    thread
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_hold_is_waited_out_without_an_error() {
    let hold = Duration::from_millis(500);
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let b = driver.open(&path).await.unwrap();
        let name = LockName::new("busy").unwrap();
        let holder_thread = hold_write_lock(&path, hold);
        let start = Instant::now();
        let lease = b
            .try_acquire(&name, &holder("patient"), LONG)
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: busy leaked to the caller: {e}"))
            .expect("free once the other transaction ends");
        let waited = start.elapsed();
        holder_thread.join().unwrap();
        assert!(
            waited >= hold - Duration::from_millis(100),
            "{driver:?}: acquired after {waited:?}, while the write lock was still held"
        );
        assert!(
            waited < hold + Duration::from_secs(3),
            "{driver:?}: {waited:?}"
        );
        assert!(b.release(&lease).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_heartbeat_waits_out_a_short_hold() {
    let hold = Duration::from_millis(500);
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy-batch.db");
        let b = driver.open(&path).await.unwrap();
        let leases = acquire_all(&*b, &["one", "two"]).await;
        let holder_thread = hold_write_lock(&path, hold);
        let start = Instant::now();
        let results = b.heartbeat_many(&leases, LONG).await;
        let waited = start.elapsed();
        holder_thread.join().unwrap();
        assert_eq!(results.len(), 2, "{driver:?}");
        for result in results {
            result.unwrap_or_else(|e| panic!("{driver:?}: busy leaked to the caller: {e}"));
        }
        assert!(
            waited >= hold - Duration::from_millis(100),
            "{driver:?}: renewed after {waited:?}, while the write lock was still held"
        );
        for lease in &leases {
            assert!(b.release(lease).await.unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_are_not_blocked_by_a_writer_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let b = common::Driver::Rusqlite.open(&path).await.unwrap();
    let name = LockName::new("read-while-writing").unwrap();
    let lease = b
        .try_acquire(&name, &holder("a"), LONG)
        .await
        .unwrap()
        .unwrap();
    let hold = Duration::from_secs(2);
    let holder_thread = hold_write_lock(&path, hold);
    let start = Instant::now();
    assert_eq!(b.inspect(&name).await.unwrap().unwrap().fence, lease.fence);
    assert_eq!(b.list("").await.unwrap().len(), 1);
    assert!(
        start.elapsed() < hold / 2,
        "inspect and list waited for the writer: {:?}",
        start.elapsed()
    );
    holder_thread.join().unwrap();
    assert!(b.release(&lease).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_longer_than_the_budget_is_unavailable_naming_the_database() {
    let budget = Duration::from_millis(300);
    let hold = Duration::from_secs(2);
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stuck.db");
        let b = driver
            .open_with(SqliteOptions::new(&path).with_busy_timeout(budget))
            .await
            .unwrap();
        let name = LockName::new("stuck").unwrap();
        let holder_thread = hold_write_lock(&path, hold);
        let start = Instant::now();
        let result = b.try_acquire(&name, &holder("impatient"), LONG).await;
        let gave_up = start.elapsed();
        match &result {
            Err(e @ LockError::Unavailable { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&path.display().to_string()),
                    "{driver:?}: {msg}"
                );
                assert!(msg.contains("busy"), "{driver:?}: {msg}");
                assert!(msg.contains("busy_timeout"), "{driver:?}: {msg}");
                assert!(e.is_transient());
            }
            other => panic!("{driver:?}: expected Unavailable, got {other:?}"),
        }
        assert!(
            gave_up >= budget && gave_up < hold - Duration::from_millis(500),
            "{driver:?}: gave up after {gave_up:?} with a {budget:?} budget"
        );
        // Every change is refused the same way; nothing was written.
        assert!(matches!(
            b.force_release(&name).await,
            Err(LockError::Unavailable { .. })
        ));
        let unsent = |n: &str| {
            lock_core::Lease::new(
                LockName::new(n).unwrap(),
                holder("batch"),
                1,
                std::time::SystemTime::now() + LONG,
                Instant::now(),
                LONG,
            )
        };
        let batch = b
            .heartbeat_many(&[unsent("stuck"), unsent("other")], LONG)
            .await;
        assert_eq!(batch.len(), 2, "{driver:?}");
        assert!(
            batch
                .iter()
                .all(|r| matches!(r, Err(e @ LockError::Unavailable { .. }) if e.is_transient())),
            "{driver:?}: {batch:?}"
        );
        holder_thread.join().unwrap();
        assert_eq!(
            (
                raw_i64(&path, "SELECT count(*) FROM lock_leases"),
                raw_i64(
                    &path,
                    "SELECT value FROM lock_meta WHERE key = 'fence_seed'"
                )
            ),
            (0, 0),
            "{driver:?}: the refused attempts left no trace"
        );
        // The same backend works again once the other transaction is gone.
        let lease = b
            .try_acquire(&name, &holder("later"), LONG)
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: did not recover: {e}"))
            .expect("free");
        assert_eq!(
            u64::try_from(raw_i64(&path, "SELECT fence FROM lock_leases")).unwrap(),
            lease.fence,
            "{driver:?}"
        );
        assert!(b.release(&lease).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_separate_connections_never_see_busy() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.db");
        let mut backends = Vec::new();
        for _ in 0..4 {
            backends.push(driver.open(&path).await.unwrap());
        }
        let tasks = (0..32).map(|i| {
            let b = std::sync::Arc::clone(&backends[i % backends.len()]);
            tokio::spawn(async move {
                let name = LockName::new(format!("n{}", i % 4)).unwrap();
                for _ in 0..10 {
                    if let Some(lease) = b.try_acquire(&name, &holder("w"), LONG).await? {
                        b.heartbeat(&lease, LONG).await?;
                        b.release(&lease).await?;
                    }
                }
                Ok::<_, LockError>(())
            })
        });
        for result in futures_util::future::join_all(tasks).await {
            result
                .unwrap()
                .unwrap_or_else(|e| panic!("{driver:?}: an error reached the caller: {e}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_busy_timeout_waits_instead_of_panicking() {
    let hold = Duration::from_millis(300);
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("forever.db");
        let opts = SqliteOptions::new(&path).with_busy_timeout(Duration::MAX);
        let b = match driver.open_with(opts).await {
            Ok(b) => b,
            // This driver goes through a URL, whose busy_timeout is capped: a typed error.
            Err(LockError::Config { detail, .. }) if driver.uses_url() => {
                assert!(detail.contains("busy_timeout"), "{detail}");
                continue;
            }
            Err(e) => panic!("{driver:?}: {e}"),
        };
        let holder_thread = hold_write_lock(&path, hold);
        let lease = b
            .try_acquire(&LockName::new("patient").unwrap(), &holder("forever"), LONG)
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"))
            .expect("free once the other transaction ends");
        holder_thread.join().unwrap();
        assert!(b.release(&lease).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_with_a_wait_gives_up_on_time_while_the_database_stays_busy() {
    // The database is write-locked for 2 s, past the caller's 500 ms wait plus the attempt
    // floor and a second of slack; the busy budget (30 s by default) must not stretch the
    // wait to the end of the hold.
    let hold = Duration::from_secs(2);
    let wait = Duration::from_millis(500);
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy-wait.db");
        let b = driver.open(&path).await.unwrap();
        let locker = lock_core::Locker::new(b.clone());
        let holder_thread = hold_write_lock(&path, hold);
        let start = Instant::now();
        let result = locker
            .lock(
                "busy-wait",
                lock_core::LockOptions::default().with_wait(wait),
            )
            .await;
        let waited = start.elapsed();
        assert!(
            matches!(result, Err(LockError::Timeout { .. })),
            "{driver:?}: {result:?}"
        );
        assert!(
            waited >= wait && waited < wait + lock_core::ATTEMPT_FLOOR + Duration::from_secs(1),
            "{driver:?}: gave up after {waited:?}"
        );
        holder_thread.join().unwrap();
        // The abandoned attempt finished once the database was free, and released what it
        // was granted.
        let name = LockName::new("busy-wait").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.inspect(&name).await.unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "{driver:?}: the abandoned grant was kept"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
