//! [`SqlxSqliteBackend`]: the sqlx driver, which shares an application's `SqlitePool`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lock_core::Result;
use lock_core::backend_kit::Driver;
use lock_core::backend_kit::clock::{self, HostClock};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction, TypeInfo as _, ValueRef as _};

use crate::BACKEND;
use crate::driver::{DbError, Driver as SqlDriver, Statements, TxKind};
use crate::engine::{Engine, Journal, forward_lock_backend};
use crate::file_identity::Expect;
use crate::location::check_path;
use crate::options::{DEFAULT_BUSY_TIMEOUT, SQLX_URL_SCHEMES, SqliteOptions, Synchronous};
use crate::value::{Row, Value};

/// Lease locks in the database of an existing [`sqlx::SqlitePool`], so an application keeps
/// its locks next to its data (tables `lock_leases` and `lock_meta`).
///
/// Cloning is cheap; clones share the pool.
///
/// # Execution model
///
/// Each operation is one short transaction on a connection borrowed from the pool
/// (`BEGIN IMMEDIATE` for changes, so it cannot fail half-way for a busy database). When the
/// database is busy past the connection's own `busy_timeout` (sqlx's default is 5 s, slept
/// on sqlx's worker thread, not on a runtime thread), the task sleeps on the Tokio timer
/// with jittered backoff and tries again, for at most the busy budget
/// ([`SqliteOptions::busy_timeout`], default 30 s); starting the transaction is also cut
/// short at the end of the budget. Only then does the caller see
/// [`LockError::Unavailable`](lock_core::LockError::Unavailable).
///
/// Every operation needs a free connection of the pool and the database's write lock: a
/// task that holds the pool's last connection, or a write transaction on another connection,
/// while it takes a lock waits for itself until the busy budget ends
/// ([`Unavailable`](lock_core::LockError::Unavailable)), so take locks outside your own
/// transactions.
///
/// The pool's settings are the application's: this backend never changes them, and does not
/// touch `PRAGMA user_version`. WAL mode (`SqliteConnectOptions::journal_mode(Wal)`) is
/// recommended, and a warning is logged when the database is not in WAL mode.
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
        // Lazy: connections are opened inside the retry loop, so a database busy while a
        // connection sets itself up is waited for like any other busy answer.
        // No ping before each use: sqlx already pings a connection when it goes back to the
        // pool, and a SQLite connection has no network to drop in between, so a second ping
        // would only add a trip to the connection's worker thread to every operation (one of
        // two on the path of a hand-off).
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
        let engine = Engine::new(SqlxDriver { pool }, db, busy_timeout, expect, clock);
        engine.prepare(read_only, journal).await?;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    /// The pool this backend uses.
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

/// The driver: transactions on connections of a pool.
pub(crate) struct SqlxDriver {
    pool: SqlitePool,
}

/// A transaction, or a bare connection for [`TxKind::Autocommit`].
pub(crate) enum SqlxTx {
    Tx(Transaction<'static, Sqlite>),
    Conn(PoolConnection<Sqlite>),
}

impl SqlxTx {
    fn connection(&mut self) -> &mut SqliteConnection {
        match self {
            Self::Tx(tx) => tx,
            Self::Conn(conn) => conn,
        }
    }
}

impl SqlDriver for SqlxDriver {
    type Tx<'a> = SqlxTx;

    async fn begin(&self, kind: TxKind) -> Result<SqlxTx, DbError> {
        let tx = match kind {
            TxKind::Read => SqlxTx::Tx(self.pool.begin().await.map_err(db_error)?),
            TxKind::Write => SqlxTx::Tx(
                self.pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err(db_error)?,
            ),
            TxKind::Autocommit => SqlxTx::Conn(self.pool.acquire().await.map_err(db_error)?),
        };
        Ok(tx)
    }
}

fn bind(
    sql: &'static str,
    params: &[Value],
) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
    let mut query = sqlx::query(sql);
    for value in params {
        query = match value {
            Value::Null => query.bind(None::<i64>),
            Value::Integer(i) => query.bind(*i),
            Value::Real(r) => query.bind(*r),
            Value::Text(s) => query.bind(s.clone()),
            Value::Blob(b) => query.bind(b.clone()),
        };
    }
    query
}

impl Statements for SqlxTx {
    async fn query(&mut self, sql: &'static str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let rows = bind(sql, params)
            .fetch_all(self.connection())
            .await
            .map_err(db_error)?;
        rows.iter().map(read_row).collect()
    }

    async fn execute(&mut self, sql: &'static str, params: &[Value]) -> Result<u64, DbError> {
        let done = bind(sql, params)
            .execute(self.connection())
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn commit(self) -> Result<(), DbError> {
        match self {
            Self::Tx(tx) => tx.commit().await.map_err(db_error),
            Self::Conn(_) => Ok(()),
        }
    }
}

/// Reads every column with its actual storage class (not the declared type).
fn read_row(row: &SqliteRow) -> Result<Row, DbError> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i).map_err(db_error)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let kind = raw.type_info().name().to_owned();
            drop(raw);
            let value = match kind.as_str() {
                "INTEGER" => Value::Integer(row.try_get_unchecked(i).map_err(db_error)?),
                "REAL" => Value::Real(row.try_get_unchecked(i).map_err(db_error)?),
                "TEXT" => match row.try_get_unchecked::<String, _>(i) {
                    Ok(s) => Value::Text(s),
                    Err(_) => Value::Blob(row.try_get_unchecked(i).map_err(db_error)?),
                },
                _ => Value::Blob(row.try_get_unchecked(i).map_err(db_error)?),
            };
            Ok(value)
        })
        .collect()
}

fn db_error(e: sqlx::Error) -> DbError {
    let code = match &e {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    match code {
        Some(code) => DbError::sqlite(code, e),
        None if matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
            DbError::transient(e)
        }
        None => DbError::other(e),
    }
}
