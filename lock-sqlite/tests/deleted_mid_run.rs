//! The database file deleted (with its -wal and -shm files and its directory), replaced by
//! another database, or moved away while a backend has it open and holds a lease: every
//! operation of that backend is then a `Config` error that says the file was deleted or
//! replaced, never a lease in a database nobody else can see, never a panic; and once a new
//! database is at the path, the old backend never grants or renews a lease that the new
//! database gives to someone else.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{DRIVERS, Driver, LONG, assert_config, holder};
use lock_core::{Lease, LockBackend, LockName};

/// What happens to the database file while the backend has it open.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// The directory, with the file and its -wal and -shm files, is deleted; later an
    /// operator recreates the directory.
    DirectoryDeleted,
    /// Another database (closed, with a lease of its own) is renamed over the file, as when
    /// a backup is restored; the old -wal and -shm files are removed first.
    Replaced,
    /// The file and its -wal and -shm files are renamed to another name in the directory.
    MovedAway,
}

/// `path` with `suffix` appended (`locks.db-wal`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The -wal and -shm files of the database at `path`, as far as they exist (in WAL mode;
/// not with an application's rollback-journal pool).
fn sidecars(path: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm"]
        .into_iter()
        .map(|suffix| suffixed(path, suffix))
        .filter(|file| file.exists())
        .collect()
}

/// Asserts that `result` is the error for a database deleted or replaced under the backend.
fn assert_lost<T: std::fmt::Debug>(result: lock_core::Result<T>, context: &str) {
    assert_config(
        result,
        &["locks.db", "deleted or replaced", "reopen the lock store"],
        context,
    );
}

/// Every operation of `backend`, each refused as the database being lost.
async fn assert_every_operation_refused(backend: &dyn LockBackend, lease: &Lease, context: &str) {
    let held = &lease.name;
    let fresh = LockName::new("fresh").unwrap();
    let ctx = |op: &str| format!("{context}: {op}");
    assert_lost(
        backend.try_acquire(held, &holder("after"), LONG).await,
        &ctx("try_acquire of the held name"),
    );
    assert_lost(
        backend.try_acquire(&fresh, &holder("after"), LONG).await,
        &ctx("try_acquire of a free name"),
    );
    assert_lost(backend.heartbeat(lease, LONG).await, &ctx("heartbeat"));
    let many = backend
        .heartbeat_many(std::slice::from_ref(lease), LONG)
        .await;
    assert_eq!(many.len(), 1, "{context}: heartbeat_many answers");
    for answer in many {
        assert_lost(answer, &ctx("heartbeat_many"));
    }
    assert_lost(backend.inspect(held).await, &ctx("inspect"));
    assert_lost(backend.list("").await, &ctx("list"));
    assert_lost(backend.release(lease).await, &ctx("release"));
    assert_lost(backend.force_release(held).await, &ctx("force_release"));
}

/// Does `fate` to the database at `path`, opened by `driver`. For [`Fate::Replaced`], the
/// database put in its place already has `held` taken by someone else: that lease.
async fn befall(fate: Fate, driver: Driver, path: &Path, held: &LockName) -> Option<Lease> {
    let dir = path.parent().unwrap();
    match fate {
        Fate::DirectoryDeleted => {
            std::fs::remove_dir_all(dir).unwrap();
            None
        }
        Fate::Replaced => {
            let backup = dir.join("backup.db");
            let theirs = {
                // Closed when dropped (synchronously: rusqlite), so its -wal is folded in.
                let other = Driver::Rusqlite.open(&backup).await.unwrap();
                other
                    .try_acquire(held, &holder("restored"), LONG)
                    .await
                    .unwrap()
                    .expect("free in the backup")
            };
            for sidecar in sidecars(path) {
                std::fs::remove_file(&sidecar)
                    .unwrap_or_else(|e| panic!("{driver:?}: remove {}: {e}", sidecar.display()));
            }
            std::fs::rename(&backup, path).unwrap();
            Some(theirs)
        }
        Fate::MovedAway => {
            let away = dir.join("elsewhere.db");
            for from in sidecars(path) {
                let suffix = &from.to_str().unwrap()[path.to_str().unwrap().len()..];
                std::fs::rename(&from, suffixed(&away, suffix)).unwrap();
            }
            std::fs::rename(path, &away).unwrap();
            None
        }
    }
}

async fn lost_while_open(driver: Driver, fate: Fate) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("db");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("locks.db");
    let backend = driver.open(&path).await.unwrap();
    let held = LockName::new("held").unwrap();
    let lease = backend
        .try_acquire(&held, &holder("before"), LONG)
        .await
        .unwrap()
        .unwrap();
    let restored = befall(fate, driver, &path, &held).await;

    let context = format!("{driver:?}, database {fate:?}");
    assert_every_operation_refused(&*backend, &lease, &context).await;
    if matches!(fate, Fate::DirectoryDeleted) {
        assert!(!dir.exists(), "{context}: the directory was recreated");
        // An operator recreates the directory.
        std::fs::create_dir(&dir).unwrap();
    }

    // Another client opens the database now at the path, and takes the name (or finds it
    // taken in the restored backup).
    let newcomer: Arc<dyn LockBackend> = driver.open(&path).await.unwrap();
    let theirs = match restored {
        Some(theirs) => theirs,
        None => newcomer
            .try_acquire(&held, &holder("newcomer"), LONG)
            .await
            .unwrap()
            .expect("free in the new database"),
    };
    let ctx = |op: &str| format!("{context}, with a new database at the path: {op}");
    assert_lost(
        backend.try_acquire(&held, &holder("old"), LONG).await,
        &ctx("the old backend answered for a name the new database has given out"),
    );
    assert_lost(
        backend.heartbeat(&lease, LONG).await,
        &ctx("the old backend answered a heartbeat of a lease of the lost database"),
    );
    assert_lost(backend.force_release(&held).await, &ctx("force_release"));
    let info = newcomer
        .inspect(&held)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{context}: the name is no longer theirs"));
    assert_eq!(info.fence, theirs.fence, "{context}");
    assert_eq!(info.label, theirs.holder.label, "{context}");
    assert!(newcomer.release(&theirs).await.unwrap(), "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_deleted_mid_run_never_yields_a_lease_nobody_else_can_see() {
    for &driver in DRIVERS {
        lost_while_open(driver, Fate::DirectoryDeleted).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_replaced_or_moved_away_mid_run_is_refused_by_the_backend_that_had_it() {
    for &driver in DRIVERS {
        for fate in [Fate::Replaced, Fate::MovedAway] {
            lost_while_open(driver, fate).await;
        }
    }
}
