//! A database opened read-only (`SqliteOptions::read_only`, `?mode=ro`): reading works,
//! changing fails with a configuration error that says so, never a panic. (Tests run as
//! root, where file permissions do not stop writes, so read-only access is asked for with
//! SQLite's own read-only open flag.)

mod common;

use common::{DRIVERS, LONG, assert_config, holder, raw, snapshot};
use lock_core::LockName;
use lock_sqlite::SqliteOptions;

fn read_only(path: &std::path::Path) -> SqliteOptions {
    SqliteOptions::new(path).with_read_only(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_work_and_changes_are_refused() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.db");
        let writer = driver.open(&path).await.unwrap();
        let name = LockName::new("watched").unwrap();
        let lease = writer
            .try_acquire(&name, &holder("w"), LONG)
            .await
            .unwrap()
            .unwrap();

        let reader = driver
            .open_with(read_only(&path))
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        assert_eq!(
            reader.inspect(&name).await.unwrap().unwrap().fence,
            lease.fence
        );
        assert_eq!(reader.list("").await.unwrap().len(), 1);
        let context = format!("{driver:?}");
        let other = LockName::new("other").unwrap();
        assert_config(
            reader.try_acquire(&other, &holder("r"), LONG).await,
            &["read-only", "ro.db"],
            &context,
        );
        assert_config(
            reader.heartbeat(&lease, LONG).await,
            &["read-only"],
            &context,
        );
        assert_config(reader.release(&lease).await, &["read-only"], &context);
        assert_config(reader.force_release(&name).await, &["read-only"], &context);
        assert_eq!(
            writer.inspect(&name).await.unwrap().unwrap().fence,
            lease.fence,
            "{driver:?}: the refused calls changed nothing"
        );
        assert!(writer.release(&lease).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_database_can_be_opened_read_only_and_is_left_as_it_was() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("closed.db");
        let name = LockName::new("left").unwrap();
        {
            // Written and closed by another program (closing is synchronous with rusqlite).
            let writer = common::Driver::Rusqlite.open(&path).await.unwrap();
            writer
                .try_acquire(&name, &holder("gone"), LONG)
                .await
                .unwrap()
                .unwrap();
        }
        raw(&path)
            .execute_batch("PRAGMA journal_mode = DELETE")
            .unwrap();
        let before = snapshot(dir.path());
        let reader = driver.open_with(read_only(&path)).await.unwrap();
        assert!(reader.inspect(&name).await.unwrap().is_some(), "{driver:?}");
        // Acquiring decides and writes in one statement, so a read-only client is told it
        // cannot take locks whether or not the name is held.
        for n in [name.clone(), LockName::new("free").unwrap()] {
            assert_config(
                reader.try_acquire(&n, &holder("r"), LONG).await,
                &["read-only"],
                &format!("{driver:?}: {n}"),
            );
        }
        drop(reader);
        assert!(
            snapshot(dir.path())["closed.db"] == before["closed.db"],
            "{driver:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_without_a_file_or_without_tables_is_a_config_error() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.db");
        let needles: &[&str] = if driver.sets_wal() {
            &["does not exist", "read-only"]
        } else {
            // An application's pool: SQLite's own "unable to open" is all there is.
            &["cannot open"]
        };
        assert_config(
            driver.open_with(read_only(&missing)).await,
            needles,
            &format!("{driver:?}"),
        );
        assert!(!missing.exists(), "{driver:?} created the file");

        let empty = dir.path().join("app.db");
        raw(&empty).execute_batch("CREATE TABLE t (a)").unwrap();
        let before = snapshot(dir.path());
        let needles: &[&str] = if driver.sets_wal() {
            &["read-only", "no lock tables", "app.db"]
        } else {
            // An application's read-only pool: found out when creating the tables fails.
            &["read-only", "app.db"]
        };
        assert_config(
            driver.open_with(read_only(&empty)).await,
            needles,
            &format!("{driver:?}"),
        );
        assert!(
            snapshot(dir.path()) == before,
            "{driver:?} changed the file"
        );
    }
}
