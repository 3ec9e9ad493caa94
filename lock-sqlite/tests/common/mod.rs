//! Helpers shared by the backend-specific tests: the drivers to run each test against, raw
//! access to a database file, and snapshots of a directory's bytes.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lock_conformance::WriteLoss;
use lock_core::{Holder, LockBackend, Result, async_trait};
use lock_sqlite::{SqliteBackend, SqliteOptions};

/// A way to open the lock store in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `SqliteBackend::connect_with`.
    Rusqlite,
    /// `SqlxSqliteBackend::connect(url)`: a pool the crate builds.
    #[cfg(feature = "sqlx")]
    SqlxConnect,
    /// `SqlxSqliteBackend::new_with_busy_timeout(pool)` over an application's pool (sqlx defaults, lazy).
    #[cfg(feature = "sqlx")]
    SqlxPool,
}

/// Every driver this build has.
pub const DRIVERS: &[Driver] = &[
    Driver::Rusqlite,
    #[cfg(feature = "sqlx")]
    Driver::SqlxConnect,
    #[cfg(feature = "sqlx")]
    Driver::SqlxPool,
];

impl Driver {
    /// True for the driver opened from a URL built from the options.
    pub fn uses_url(self) -> bool {
        #[cfg(feature = "sqlx")]
        if self == Self::SqlxConnect {
            return true;
        }
        false
    }

    pub async fn open(self, path: &Path) -> Result<Arc<dyn LockBackend>> {
        self.open_with(SqliteOptions::new(path)).await
    }

    pub async fn open_with(self, opts: SqliteOptions) -> Result<Arc<dyn LockBackend>> {
        match self {
            Self::Rusqlite => Ok(Arc::new(SqliteBackend::connect_with(opts).await?)),
            #[cfg(feature = "sqlx")]
            Self::SqlxConnect => {
                let url = url_for(&opts);
                Ok(Arc::new(
                    lock_sqlite::SqlxSqliteBackend::connect(&url).await?,
                ))
            }
            #[cfg(feature = "sqlx")]
            Self::SqlxPool => {
                let connect = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&opts.path)
                    .create_if_missing(opts.create_if_missing)
                    .read_only(opts.read_only);
                let pool = sqlx::sqlite::SqlitePoolOptions::new().connect_lazy_with(connect);
                Ok(Arc::new(
                    lock_sqlite::SqlxSqliteBackend::new_with_busy_timeout(pool, opts.busy_timeout)
                        .await?,
                ))
            }
        }
    }

    /// Opens the store at `path` judging time by `clock` (the test hook): through
    /// `SqliteOptions::with_clock`, or `SqlxSqliteBackend::new_with_clock` for an
    /// application's pool.
    pub async fn open_with_clock(
        self,
        path: &Path,
        clock: Arc<dyn lock_core::backend_kit::clock::HostClock>,
    ) -> Result<Arc<dyn LockBackend>> {
        let opts = SqliteOptions::new(path).with_clock(Arc::clone(&clock));
        match self {
            Self::Rusqlite => Ok(Arc::new(SqliteBackend::connect_with(opts).await?)),
            #[cfg(feature = "sqlx")]
            Self::SqlxConnect => Ok(Arc::new(
                lock_sqlite::SqlxSqliteBackend::connect_with(opts).await?,
            )),
            #[cfg(feature = "sqlx")]
            Self::SqlxPool => {
                let connect = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true);
                let pool = sqlx::sqlite::SqlitePoolOptions::new().connect_lazy_with(connect);
                Ok(Arc::new(
                    lock_sqlite::SqlxSqliteBackend::new_with_clock(
                        pool,
                        lock_sqlite::DEFAULT_BUSY_TIMEOUT,
                        clock,
                    )
                    .await?,
                ))
            }
        }
    }

    /// True if the driver switches the database to WAL itself.
    pub fn sets_wal(self) -> bool {
        match self {
            Self::Rusqlite => true,
            #[cfg(feature = "sqlx")]
            Self::SqlxConnect => true,
            #[cfg(feature = "sqlx")]
            Self::SqlxPool => false,
        }
    }
}

/// The `sqlite+sqlx:` URL for `opts`.
pub fn url_for(opts: &SqliteOptions) -> String {
    let url = opts.to_url().expect("UTF-8 test path");
    format!(
        "sqlite+sqlx:{}",
        url.strip_prefix("sqlite:").unwrap_or(&url)
    )
}

/// A plain rusqlite connection to `path`, as another program would open it.
pub fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("raw open");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy_timeout");
    conn
}

/// One integer from a query on a raw connection.
pub fn raw_i64(path: &Path, sql: &str) -> i64 {
    raw(path)
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// One string from a query on a raw connection.
pub fn raw_string(path: &Path, sql: &str) -> String {
    raw(path)
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every file in `dir` with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("dir entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read file"),
            )
        })
        .collect()
}

/// Asserts that `result` is a `Config` error whose message contains every one of `needles`.
pub fn assert_config<T: std::fmt::Debug>(result: Result<T>, needles: &[&str], context: &str) {
    match result {
        Err(e @ lock_core::LockError::Config { .. }) => {
            let msg = e.to_string();
            for needle in needles {
                assert!(msg.contains(needle), "{context}: {needle:?} not in {msg}");
            }
        }
        other => panic!("{context}: expected a Config error, got {other:?}"),
    }
}

/// This boot's id, as the backends record it.
pub fn boot_id() -> String {
    use lock_core::backend_kit::clock::HostClock;
    lock_core::backend_kit::clock::SystemClock
        .boot_id()
        .as_str()
        .to_owned()
}

/// The boot clock now, in milliseconds, as the backends judge expiry.
pub fn boot_ms_now() -> i64 {
    use lock_core::backend_kit::clock::HostClock;
    i64::try_from(
        lock_core::backend_kit::clock::SystemClock
            .since_boot()
            .as_millis(),
    )
    .unwrap()
}

/// A boot-clock expiry a year from now: a lease written with it looks live.
pub fn live_expiry() -> i64 {
    boot_ms_now() + 365 * 24 * 3_600_000
}

/// The stored boot-clock expiry of `name`'s row (its latest permit's for a semaphore).
pub fn raw_expiry(path: &Path, name: &str) -> i64 {
    raw(path)
        .query_row(
            "SELECT expires_boot_ms FROM lock_leases WHERE name = ?1 ORDER BY fence DESC",
            [name],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("expiry of {name}: {e}"))
}

/// True if `a` and `b` are at most `within` apart. Shown expiries are boot-clock moments
/// converted to the wall clock at each read, so two reads of one expiry differ by the
/// jitter between the two clocks' readings.
pub fn close(a: std::time::SystemTime, b: std::time::SystemTime, within: Duration) -> bool {
    a.duration_since(b).unwrap_or_else(|e| e.duration()) <= within
}

/// A fresh holder.
pub fn holder(label: &str) -> Holder {
    Holder::current(label)
}

pub const LONG: Duration = Duration::from_secs(60);

/// Takes each of `names` (all free) for a holder labelled with the name, for `LONG`.
pub async fn acquire_all(b: &dyn lock_core::LockBackend, names: &[&str]) -> Vec<lock_core::Lease> {
    let mut leases = Vec::new();
    for &n in names {
        let name = lock_core::LockName::new(n).unwrap();
        let lease = b.try_acquire(&name, &holder(n), LONG).await.unwrap();
        leases.push(lease.unwrap_or_else(|| panic!("{n} should be free")));
    }
    leases
}

/// Makes the database at a path lose its latest writes, as restoring a backup does: the
/// checkpoint is an online backup (SQLite's backup API) into memory, and rolling back
/// restores it in place with the backup API again, into the same file (same inode), while
/// the backends under test keep it open.
pub struct BackupRollback {
    path: PathBuf,
    copy: Mutex<Option<rusqlite::Connection>>,
}

impl BackupRollback {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            copy: Mutex::new(None),
        }
    }

    /// Copies the database as it is now.
    pub fn take_checkpoint(&self) {
        let live = raw(&self.path);
        let mut copy = rusqlite::Connection::open_in_memory().expect("in-memory copy");
        copy_database(&live, &mut copy);
        *self.copy.lock().unwrap() = Some(copy);
    }

    /// Puts the last checkpoint back in place, losing every write since.
    pub fn restore_checkpoint(&self) {
        let copy = self.copy.lock().unwrap();
        let copy = copy.as_ref().expect("a checkpoint before the roll-back");
        let mut live = raw(&self.path);
        copy_database(copy, &mut live);
    }
}

/// Copies every page of `from` over `to` with the backup API.
fn copy_database(from: &rusqlite::Connection, to: &mut rusqlite::Connection) {
    rusqlite::backup::Backup::new(from, to)
        .and_then(|backup| backup.run_to_completion(i32::MAX, Duration::from_millis(1), None))
        .expect("backup API copy");
}

#[async_trait]
impl WriteLoss for BackupRollback {
    async fn checkpoint(&self) {
        self.take_checkpoint();
    }

    async fn roll_back(&self) {
        self.restore_checkpoint();
    }
}
