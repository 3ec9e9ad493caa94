//! [`SqliteBackend`]: the rusqlite driver (the default). Its transactions also run the sqlx
//! driver's statements, on the connection that driver takes from its pool.

use std::fmt;
use std::ops::DerefMut;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lock_core::Result;
use lock_core::backend_kit::Driver;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};
use tokio::sync::{Mutex, MutexGuard};

use crate::BACKEND;
use crate::driver::{DbError, Driver as SqlDriver, Statements, TxKind};
use crate::engine::{Engine, Journal, forward_lock_backend};
use crate::file_identity::Expect;
use crate::location::check_path;
use crate::options::{SqliteOptions, URL_SCHEMES};
use crate::setup::SetSynchronous;
use crate::value::{Row, Value};

/// Lease locks in a SQLite file, through one rusqlite connection.
///
/// Cloning is cheap; clones share the connection. Open the same file again (in this or
/// another process) for an independent client.
///
/// # Execution model
///
/// The backend holds one connection behind a `tokio::sync::Mutex`. Each operation is one
/// short transaction run inline on the calling task: prepared statements (cached with
/// `prepare_cached`) against a local file, a few microseconds to a millisecond, plus an
/// fsync per commit with [`Synchronous::Full`](crate::Synchronous::Full). The connection's
/// `busy_timeout` is 0, so SQLite never sleeps on a runtime thread: when another connection
/// holds the write lock, SQLite answers `SQLITE_BUSY` at once, the transaction is rolled
/// back and the mutex released. A release or heartbeat retries first after brief waits on
/// the calling thread (20 µs doubling, at most 0.5 ms in all per operation: another
/// connection's transaction lasts tens of microseconds, while the Tokio timer counts whole
/// milliseconds, and the lease stays held meanwhile); otherwise the task sleeps on the
/// Tokio timer with jittered exponential backoff (1 ms doubling to 50 ms) before each
/// attempt. After
/// [`SqliteOptions::busy_timeout`] of that, the operation fails with
/// [`LockError::Unavailable`](lock_core::LockError::Unavailable); `SQLITE_BUSY` itself
/// never reaches the caller.
///
/// The database runs in WAL mode, so `inspect` and `list` are not blocked by writers.
pub struct SqliteBackend {
    engine: Arc<Engine<RusqliteDriver>>,
    options: SqliteOptions,
    path: PathBuf,
}

impl Clone for SqliteBackend {
    fn clone(&self) -> Self {
        Self {
            engine: Arc::clone(&self.engine),
            options: self.options.clone(),
            path: self.path.clone(),
        }
    }
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Opens the database a `sqlite:` URL names (see [`SqliteOptions`] for the format and
    /// options).
    ///
    /// # Errors
    ///
    /// [`LockError::Config`](lock_core::LockError::Config) for a bad URL; otherwise as
    /// [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url.parse()?).await
    }

    /// Opens (creating if missing, unless the options say otherwise) the database `options`
    /// names.
    ///
    /// Opening looks at the database first, reading only, and refuses (before writing
    /// anything, and before switching the journal mode) a file that is not a SQLite
    /// database, or whose `lock_leases` / `lock_meta` tables are not ours or are from a
    /// newer schema version. Then it creates missing tables, or migrates an older schema
    /// version, in one `BEGIN IMMEDIATE` transaction (safe with concurrent openers),
    /// switches the database to WAL, and sets `PRAGMA synchronous`.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`](lock_core::LockError::Config) if the directory does not exist,
    /// the file is not a SQLite database, or it holds lock tables that are foreign or from a
    /// newer version (the file is then left untouched), or, with
    /// [`SqliteOptions::read_only`], if the file or its lock tables do not exist;
    /// [`LockError::Unavailable`](lock_core::LockError::Unavailable) if the database stays
    /// busy for the whole busy timeout.
    pub async fn connect_with(options: SqliteOptions) -> Result<Self> {
        check_path(&options)?;
        let path = options.path.clone();
        let db = path.display().to_string();
        let conn = open_connection(&path, &options).map_err(|e| e.into_lock_error(&db))?;
        let driver = RusqliteDriver {
            conn: Mutex::new(conn),
        };
        let clock = Arc::clone(options.clock());
        let engine = Engine::new(driver, db, options.busy_timeout, Expect::File, clock);
        engine.prepare(options.read_only, Journal::SetWal).await?;
        engine.run(&SetSynchronous(options.synchronous)).await?;
        Ok(Self {
            engine: Arc::new(engine),
            options,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.options
    }
}

forward_lock_backend!(SqliteBackend);

/// Opens the database a `sqlite:` URL names, with the rusqlite driver.
///
/// # Errors
///
/// As [`SqliteBackend::connect`].
pub async fn connect(url: &str) -> Result<SqliteBackend> {
    SqliteBackend::connect(url).await
}

/// The rusqlite driver's entry in the `leaselock` facade's registry: `sqlite://` URLs.
pub const DRIVER: Driver = Driver {
    name: BACKEND,
    schemes: URL_SCHEMES,
    connect: |url| Box::pin(async move { Ok(Arc::new(SqliteBackend::connect(&url).await?) as _) }),
};

fn open_connection(path: &Path, options: &SqliteOptions) -> Result<Connection, DbError> {
    let access = if options.read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else if options.create_if_missing {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    // No SQLITE_OPEN_URI: the path is a plain file name, whatever characters it contains.
    let conn = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(db_error)?;
    configure(&conn)?;
    Ok(conn)
}

/// Sets up a connection this crate runs its statements on: `busy_timeout` 0, so SQLite
/// never sleeps on a runtime thread (the engine retries a busy database), and room in the
/// statement cache for every statement an operation runs.
pub(crate) fn configure(conn: &Connection) -> Result<(), DbError> {
    conn.busy_timeout(Duration::ZERO).map_err(db_error)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// The driver: one connection, used by one transaction at a time.
pub(crate) struct RusqliteDriver {
    conn: Mutex<Connection>,
}

/// An open transaction on a connection held (`C`: a mutex guard) until commit or drop.
pub(crate) struct RusqliteTx<C: DerefMut<Target = Connection>> {
    conn: C,
}

impl SqlDriver for RusqliteDriver {
    type Tx<'a> = RusqliteTx<MutexGuard<'a, Connection>>;

    async fn begin(&self, kind: TxKind) -> Result<Self::Tx<'_>, DbError> {
        begin(self.conn.lock().await, kind)
    }
}

/// Opens a transaction of `kind` on `conn`, which the transaction holds until it ends.
pub(crate) fn begin<C: DerefMut<Target = Connection>>(
    conn: C,
    kind: TxKind,
) -> Result<RusqliteTx<C>, DbError> {
    let tx = RusqliteTx { conn };
    let begin = match kind {
        TxKind::Read => "BEGIN",
        TxKind::Write => "BEGIN IMMEDIATE",
        TxKind::Autocommit => return Ok(tx),
    };
    run_cached(&tx.conn, begin)?;
    Ok(tx)
}

impl<C: DerefMut<Target = Connection>> Drop for RusqliteTx<C> {
    /// Rolls back whatever was not committed (an error, a busy commit, a dropped future).
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl<C: DerefMut<Target = Connection> + Send> Statements for RusqliteTx<C> {
    async fn query(&mut self, sql: &'static str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_error)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(db_error)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_error)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(read_value(row.get_ref(i).map_err(db_error)?));
            }
            out.push(values);
        }
        Ok(out)
    }

    async fn execute(&mut self, sql: &'static str, params: &[Value]) -> Result<u64, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(db_error)?;
        let changed = stmt
            .execute(rusqlite::params_from_iter(params))
            .map_err(db_error)?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    async fn commit(self) -> Result<(), DbError> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        // On failure (a busy commit) the transaction stays open and `drop` rolls it back.
        run_cached(&self.conn, "COMMIT")
    }
}

/// Runs a statement without parameters or rows (`BEGIN`, `COMMIT`) from the connection's
/// statement cache, so it is parsed once, not on every transaction.
fn run_cached(conn: &Connection, sql: &'static str) -> Result<(), DbError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
        .map_err(db_error)
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Self::Null => ValueRef::Null,
            Self::Integer(i) => ValueRef::Integer(*i),
            Self::Real(r) => ValueRef::Real(*r),
            Self::Text(s) => ValueRef::Text(s.as_bytes()),
            Self::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn read_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Blob(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

pub(crate) fn db_error(e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, _) => DbError::sqlite(failure.extended_code, e),
        _ => DbError::other(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Synchronous;

    #[tokio::test]
    async fn options_reach_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pragmas.db");
        for (synchronous, expected) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
            let b = SqliteBackend::connect_with(
                SqliteOptions::new(&path).with_synchronous(synchronous),
            )
            .await
            .unwrap();
            let conn = b.engine.driver().conn.lock().await;
            let pragma = |name: &str| -> String {
                conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                    r.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| format!("{v:?}"))
                .unwrap()
            };
            assert_eq!(pragma("synchronous"), format!("Integer({expected})"));
            assert_eq!(pragma("busy_timeout"), "Integer(0)");
            assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
        }
    }
}
