//! [`SqlxSqliteBackend`]: the sqlx driver, which shares an application's `SqlitePool`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lock_core::Result;
use lock_core::backend_kit::Driver;
use lock_core::backend_kit::clock::{self, HostClock};
use rusqlite::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard, OnceCell};

use crate::BACKEND;
use crate::driver::{DbError, Driver as SqlDriver, TxKind};
use crate::engine::{Engine, Journal, forward_lock_backend};
use crate::file_identity::Expect;
use crate::location::check_path;
use crate::options::{DEFAULT_BUSY_TIMEOUT, SQLX_URL_SCHEMES, SqliteOptions, Synchronous};
use crate::rusqlite_driver::{RusqliteTx, begin};
use crate::sqlx_direct::DirectConnection;

/// Lease locks in the database of an existing [`sqlx::SqlitePool`], so an application keeps
/// its locks next to its data (tables `lock_leases` and `lock_meta`).
///
/// Cloning is cheap; clones share the backend's connection.
///
/// # Execution model
///
/// The backend takes one connection from the pool at its first operation and keeps it:
/// the connection is detached from the pool (closing the pool does not wait for it, and the
/// pool may open another in its place) and its database handle is taken from sqlx's worker
/// thread ([`SqliteConnection::lock_handle`](sqlx::sqlite::SqliteConnection::lock_handle)),
/// so each operation runs on the calling task, as with the rusqlite driver
/// ([`SqliteBackend`](crate::SqliteBackend)), instead of as a trip to a thread and back per
/// statement. Clones share the connection; operations take turns on it. Each is one short
/// transaction (`BEGIN IMMEDIATE` for changes, so it cannot fail half-way for a busy
/// database). The connection's `busy_timeout` is set to 0, so SQLite never sleeps on a
/// runtime thread: when another connection holds the write lock, the task retries with
/// jittered backoff on the Tokio timer (after brief waits for a release or heartbeat), for at
/// most the busy budget ([`SqliteOptions::busy_timeout`], default 30 s). Only then does the
/// caller see [`LockError::Unavailable`](lock_core::LockError::Unavailable).
///
/// A write transaction of the application on another connection delays every lock
/// operation until it ends, or until the busy budget does
/// ([`Unavailable`](lock_core::LockError::Unavailable)): take locks outside your own
/// transactions.
///
/// The pool's settings are the application's: this backend never changes them (only its
/// own connection's `busy_timeout`), and does not touch `PRAGMA user_version`. WAL mode
/// (`SqliteConnectOptions::journal_mode(Wal)`) is recommended, and a warning is logged when
/// the database is not in WAL mode.
/// [`connect`](Self::connect) builds its own pool and does switch it to WAL.
#[derive(Clone)]
pub struct SqlxSqliteBackend {
    engine: Arc<Engine<SqlxDriver>>,
}

impl fmt::Debug for SqlxSqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxSqliteBackend")
            .field("db", &self.engine.db())
            .finish_non_exhaustive()
    }
}

impl SqlxSqliteBackend {
    /// Uses `pool`'s database for locks, creating the lock tables if they do not exist (or
    /// migrating them from an older schema version), with the default busy timeout (30 s).
    ///
    /// # Errors
    ///
    /// [`LockError::Config`](lock_core::LockError::Config) if the database is not a SQLite
    /// database, or holds `lock_leases` / `lock_meta` tables that are not ours or are from a
    /// newer schema version (the database is then left untouched), or is read-only and has
    /// no lock tables yet; [`LockError::Unavailable`](lock_core::LockError::Unavailable) if it
    /// stays busy for the whole busy timeout.
    pub async fn new(pool: SqlitePool) -> Result<Self> {
        Self::new_with_busy_timeout(pool, DEFAULT_BUSY_TIMEOUT).await
    }

    /// As [`new`](Self::new), retrying a busy database for at most `busy_timeout` per
    /// operation (see [`SqliteOptions::busy_timeout`]). Journal mode, `synchronous` and
    /// read-only access are the pool's own settings.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub async fn new_with_busy_timeout(pool: SqlitePool, busy_timeout: Duration) -> Result<Self> {
        Self::new_with_clock(pool, busy_timeout, clock::system()).await
    }

    /// As [`new_with_busy_timeout`](Self::new_with_busy_timeout), judging time by `clock`
    /// instead of the system's clocks: a test hook (see [`SqliteOptions::with_clock`]).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub async fn new_with_clock(
        pool: SqlitePool,
        busy_timeout: Duration,
        clock: Arc<dyn HostClock>,
    ) -> Result<Self> {
        // The application's pool may be an in-memory database, with no file to watch.
        let expect = Expect::FileOrMemory;
        Self::start(pool, busy_timeout, false, Journal::Report, expect, clock).await
    }

    /// Builds a pool for the database a `sqlite+sqlx:` (or `sqlite:`) URL names; see
    /// [`SqliteOptions`] for the format and options, and
    /// [`connect_with`](Self::connect_with).
    ///
    /// # Errors
    ///
    /// [`LockError::Config`](lock_core::LockError::Config) for a bad URL; otherwise as
    /// [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url.parse()?).await
    }

    /// Builds a pool for the database `options` names, with `busy_timeout` 0 so that only
    /// this crate's retry loop waits, and switches the database to WAL once its schema has
    /// been checked.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new), and [`LockError::Config`](lock_core::LockError::Config) for a
    /// missing directory or (with `mode=ro` / `mode=rw`) a missing file.
    pub async fn connect_with(options: SqliteOptions) -> Result<Self> {
        check_path(&options)?;
        let synchronous = match options.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        };
        let connect = SqliteConnectOptions::new()
            .filename(&options.path)
            .create_if_missing(options.create_if_missing)
            .read_only(options.read_only)
            .busy_timeout(Duration::ZERO)
            .synchronous(synchronous);
        // Lazy: the backend's connection is opened inside the retry loop, so a database busy
        // while it sets itself up is waited for like any other busy answer. No ping before
        // use: a SQLite connection has no network to drop (what the application takes from
        // `pool()` is its own business).
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .connect_lazy_with(connect);
        Self::start(
            pool,
            options.busy_timeout,
            options.read_only,
            Journal::SetWal,
            Expect::File,
            Arc::clone(options.clock()),
        )
        .await
    }

    async fn start(
        pool: SqlitePool,
        busy_timeout: Duration,
        read_only: bool,
        journal: Journal,
        expect: Expect,
        clock: Arc<dyn HostClock>,
    ) -> Result<Self> {
        let db = pool.connect_options().get_filename().display().to_string();
        let engine = Engine::new(SqlxDriver::new(pool), db, busy_timeout, expect, clock);
        engine.prepare(read_only, journal).await?;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    /// The pool this backend took its connection from (the application's, or the one
    /// [`connect`](Self::connect) built).
    pub fn pool(&self) -> &SqlitePool {
        &self.engine.driver().pool
    }
}

forward_lock_backend!(SqlxSqliteBackend);

/// The sqlx driver's entry in the `leaselock` facade's registry: `sqlite+sqlx://` URLs.
pub const SQLX_DRIVER: Driver = Driver {
    name: BACKEND,
    schemes: SQLX_URL_SCHEMES,
    connect: |url| {
        Box::pin(async move { Ok(Arc::new(SqlxSqliteBackend::connect(&url).await?) as _) })
    },
};

/// The driver: one connection detached from the pool, driven directly (see `sqlx_direct`),
/// taken by the first operation.
pub(crate) struct SqlxDriver {
    pool: SqlitePool,
    direct: OnceCell<Mutex<DirectConnection>>,
}

impl SqlxDriver {
    fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            direct: OnceCell::new(),
        }
    }
}

impl SqlDriver for SqlxDriver {
    type Tx<'a> = RusqliteTx<MappedMutexGuard<'a, Connection>>;

    async fn begin(&self, kind: TxKind) -> Result<Self::Tx<'_>, DbError> {
        // Taking the connection may meet a busy database (a new connection reads the schema):
        // the error goes to the retry loop like any other, and the next operation tries again.
        let direct = self
            .direct
            .get_or_try_init(|| async { DirectConnection::take(&self.pool).await.map(Mutex::new) })
            .await?;
        begin(MutexGuard::map(direct.lock().await, |d| &mut **d), kind)
    }
}
