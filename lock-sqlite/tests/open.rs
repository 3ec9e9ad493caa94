//! Opening a database: the schema is created, reused, and refused (without touching the
//! file) when it is foreign, newer, or not a database at all.

mod common;

use std::path::Path;

use common::{DRIVERS, Driver, LONG, assert_config, holder, raw, raw_i64, raw_string, snapshot};
use futures_util::future::join_all;
use lock_core::LockName;
use lock_core::backend_kit::time::fence_seed_now;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_file_gets_the_versioned_schema() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let b = driver
            .open(&path)
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        let tables = raw_string(
            &path,
            "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master \
             WHERE type = 'table' ORDER BY name)",
        );
        assert_eq!(tables, "lock_leases,lock_meta", "{driver:?}");
        assert_eq!(
            raw_string(
                &path,
                "SELECT group_concat(name, ',') FROM (SELECT name FROM \
                 pragma_table_info('lock_leases') ORDER BY cid)"
            ),
            "name,slot,owner,label,pid,host,fence,lease_limit,acquired_at_ms,boot_id,\
             expires_boot_ms,hold",
            "{driver:?}: one row per permit, expiry on the boot clock, the holder's hold"
        );
        assert_eq!(
            raw_i64(
                &path,
                "SELECT value FROM lock_meta WHERE key = 'schema_version'"
            ),
            4,
            "{driver:?}"
        );
        assert_eq!(
            raw_i64(
                &path,
                "SELECT value FROM lock_meta WHERE key = 'fence_seed'"
            ),
            0,
            "{driver:?}"
        );
        assert_eq!(raw_i64(&path, "PRAGMA user_version"), 0, "{driver:?}");
        let mode = raw_string(&path, "PRAGMA journal_mode");
        let expected = if driver.sets_wal() { "wal" } else { "delete" };
        assert_eq!(mode, expected, "{driver:?}");
        let name = LockName::new("fresh").unwrap();
        let seed_before = fence_seed_now();
        let lease = b
            .try_acquire(&name, &holder("a"), LONG)
            .await
            .unwrap()
            .unwrap();
        // A name's first fence is seeded from the clock (microseconds) and recorded.
        assert!(lease.fence >= seed_before, "{driver:?}: {}", lease.fence);
        let seed = || {
            raw_i64(
                &path,
                "SELECT value FROM lock_meta WHERE key = 'fence_seed'",
            )
        };
        assert_eq!(u64::try_from(seed()).unwrap(), lease.fence, "{driver:?}");
        assert!(b.release(&lease).await.unwrap());
        // Released, the row stays (free) and keeps the fence; the next one is above it
        // (the row's fence + 1, or the clock if that is ahead).
        assert_eq!(
            raw_i64(
                &path,
                "SELECT count(*) FROM lock_leases WHERE expires_boot_ms <= 0"
            ),
            1,
            "{driver:?}"
        );
        let again = b
            .try_acquire(&name, &holder("b"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert!(again.fence > lease.fence, "{driver:?}");
        assert_eq!(
            u64::try_from(seed()).unwrap(),
            lease.fence,
            "{driver:?}: a known name does not touch the seed"
        );
        assert!(b.release(&again).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_leases_and_the_fence_counter() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("again.db");
        let name = LockName::new("kept").unwrap();
        let (held, freed) = {
            let b = driver.open(&path).await.unwrap();
            let freed = b
                .try_acquire(&name, &holder("a"), LONG)
                .await
                .unwrap()
                .unwrap();
            assert!(b.release(&freed).await.unwrap());
            let held = b
                .try_acquire(&name, &holder("b"), LONG)
                .await
                .unwrap()
                .unwrap();
            (held, freed)
        };
        let b = driver
            .open(&path)
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        assert_eq!(
            b.inspect(&name).await.unwrap().expect("still held").fence,
            held.fence,
            "{driver:?}"
        );
        assert!(b.release(&held).await.unwrap(), "{driver:?}");
        let next = b
            .try_acquire(&name, &holder("c"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert!(
            next.fence > held.fence && held.fence > freed.fence,
            "{driver:?}"
        );
        assert!(b.release(&next).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_first_opens_all_succeed() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("race.db");
        let opens = (0..8).map(|_| {
            let path = path.clone();
            tokio::spawn(async move { driver.open(&path).await })
        });
        let backends: Vec<_> = join_all(opens)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap_or_else(|e| panic!("{driver:?}: {e}")))
            .collect();
        assert_eq!(
            raw_i64(&path, "SELECT count(*) FROM lock_meta"),
            2,
            "{driver:?}: the schema was seeded exactly once"
        );
        let name = LockName::new("shared").unwrap();
        let lease = backends[0]
            .try_acquire(&name, &holder("first"), LONG)
            .await
            .unwrap()
            .unwrap();
        for other in &backends[1..] {
            assert_eq!(
                other.inspect(&name).await.unwrap().unwrap().fence,
                lease.fence
            );
            assert!(
                other
                    .try_acquire(&name, &holder("x"), LONG)
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        assert!(backends[7].release(&lease).await.unwrap());
    }
}

/// Opens `path` with every driver, expecting a `Config` error mentioning `needles`, and
/// checks that no byte of any file in its directory changed and no file appeared.
async fn refused_untouched(path: &Path, needles: &[&str]) {
    let dir = path.parent().unwrap();
    let before = snapshot(dir);
    for &driver in DRIVERS {
        assert_config(
            driver.open(path).await,
            needles,
            &format!("{driver:?} on {}", path.display()),
        );
        assert!(
            snapshot(dir) == before,
            "{driver:?} modified {} (or created files next to it)",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).unwrap();
    refused_untouched(&path, &["not a SQLite database", "notes.txt"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_tables_with_our_names_are_refused_untouched() {
    let schemas = [
        (
            "CREATE TABLE lock_leases (id INTEGER PRIMARY KEY, name TEXT, holder TEXT);\
             INSERT INTO lock_leases (name, holder) VALUES ('x', 'someone');",
            "columns (id, name, holder)",
        ),
        (
            "CREATE TABLE lock_meta (k TEXT, v TEXT); INSERT INTO lock_meta VALUES ('a', 'b');",
            "columns (k, v)",
        ),
        (
            // An application's own key/value table that happens to be called lock_meta.
            "CREATE TABLE lock_meta (key TEXT PRIMARY KEY, value INTEGER);\
             INSERT INTO lock_meta VALUES ('retries', 3);",
            "without a `schema_version` row",
        ),
        (
            "CREATE TABLE t (a); CREATE VIEW lock_leases AS SELECT a FROM t;",
            "a view named `lock_leases`",
        ),
    ];
    for (schema, needle) in schemas {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        raw(&path).execute_batch(schema).unwrap();
        refused_untouched(&path, &[needle, "untouched", "app.db"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    let name = LockName::new("job").unwrap();
    {
        let b = Driver::Rusqlite.open(&path).await.unwrap();
        b.try_acquire(&name, &holder("old"), LONG)
            .await
            .unwrap()
            .unwrap();
    }
    // What a future version might leave: a higher version and a changed table, in
    // rollback-journal mode so that reading it creates no side files.
    raw(&path)
        .execute_batch(
            "PRAGMA journal_mode = DELETE;\
             UPDATE lock_meta SET value = 5 WHERE key = 'schema_version';\
             ALTER TABLE lock_leases ADD COLUMN priority INTEGER;",
        )
        .unwrap();
    refused_untouched(&path, &["schema version 5", "newer", "Upgrade lock-sqlite"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_database_keeps_its_tables_and_user_version() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        raw(&path)
            .execute_batch(
                "PRAGMA user_version = 42;\
                 CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);\
                 INSERT INTO users (name) VALUES ('ada');",
            )
            .unwrap();
        let b = driver
            .open(&path)
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        let name = LockName::new("report").unwrap();
        let lease = b
            .try_acquire(&name, &holder("a"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(raw_i64(&path, "PRAGMA user_version"), 42, "{driver:?}");
        assert_eq!(
            raw_string(&path, "SELECT name FROM users"),
            "ada",
            "{driver:?}"
        );
        assert!(b.release(&lease).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_or_a_directory_path_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    for &driver in DRIVERS {
        let missing = dir.path().join("no/such/dir/locks.db");
        // An application's own pool is opened by sqlx: SQLite's "unable to open" is all
        // there is to report.
        let needles: &[&str] = if driver.sets_wal() {
            &["does not exist", "create it first"]
        } else {
            &["cannot open", "check that its directory exists"]
        };
        assert_config(driver.open(&missing).await, needles, &format!("{driver:?}"));
        assert!(
            !dir.path().join("no").exists(),
            "{driver:?} created the directory"
        );
    }
    assert_config(
        Driver::Rusqlite.open(dir.path()).await,
        &["is a directory"],
        "directory as database",
    );
}
