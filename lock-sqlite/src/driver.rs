//! The small interface each driver implements: open a transaction, run one statement,
//! commit. Everything else (SQL text, decisions, row decoding, schema checks, retrying a
//! busy database) is shared and lives in the other modules.

use std::future::Future;

use lock_core::{BoxError, LockError};

use crate::BACKEND;
use crate::file_identity;
use crate::value::{Row, Value};

/// How a transaction starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxKind {
    /// `BEGIN` (deferred): reads only.
    Read,
    /// `BEGIN IMMEDIATE`: takes the database's write lock up front, so the transaction
    /// cannot fail half-way with `SQLITE_BUSY` when it starts writing.
    Write,
    /// No transaction: each statement commits by itself. For an operation of one
    /// statement, which is atomic (a write) or a consistent read (a `SELECT`, in WAL mode
    /// without blocking the writer) by itself, so `BEGIN` and `COMMIT` would only cost two
    /// more statements; and for `PRAGMA journal_mode`, which cannot run inside a
    /// transaction.
    Autocommit,
}

/// A driver: a way to open transactions on one database.
pub(crate) trait Driver: Send + Sync + 'static {
    /// An open transaction. Dropping it without [`Statements::commit`] rolls it back.
    type Tx<'a>: Statements
    where
        Self: 'a;

    /// Opens a transaction of `kind`. May wait for a connection, never for SQLite's busy
    /// handler longer than the connection's own `busy_timeout`.
    fn begin(&self, kind: TxKind) -> impl Future<Output = Result<Self::Tx<'_>, DbError>> + Send;
}

/// Statements inside one open transaction.
pub(crate) trait Statements: Send {
    /// Runs a statement that returns rows (`SELECT`, `... RETURNING`, `PRAGMA`).
    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value],
    ) -> impl Future<Output = Result<Vec<Row>, DbError>> + Send;

    /// Runs a statement for its effect; returns the number of rows changed.
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value],
    ) -> impl Future<Output = Result<u64, DbError>> + Send;

    /// Commits (a no-op for [`TxKind::Autocommit`]).
    fn commit(self) -> impl Future<Output = Result<(), DbError>> + Send;
}

/// SQLite primary result codes this crate tells apart.
/// See <https://www.sqlite.org/rescode.html>.
pub(crate) mod code {
    pub(crate) const PERM: i32 = 3;
    pub(crate) const BUSY: i32 = 5;
    pub(crate) const LOCKED: i32 = 6;
    pub(crate) const READONLY: i32 = 8;
    pub(crate) const IOERR: i32 = 10;
    pub(crate) const CORRUPT: i32 = 11;
    pub(crate) const FULL: i32 = 13;
    pub(crate) const CANTOPEN: i32 = 14;
    pub(crate) const AUTH: i32 = 23;
    pub(crate) const NOTADB: i32 = 26;
    /// Extended code of `READONLY`: the database file was deleted or replaced while open
    /// (in rollback-journal mode; WAL mode does not notice, see `file_identity`).
    pub(crate) const READONLY_DBMOVED: i32 = READONLY | (4 << 8);
}

/// A failure reported by a driver, classified by the shared code.
#[derive(Debug)]
pub(crate) struct DbError {
    /// The SQLite (possibly extended) result code, when the failure came from SQLite.
    code: Option<i32>,
    /// The driver itself says retrying may help (pool timeout, I/O on the driver's channel).
    transient: bool,
    source: BoxError,
}

impl DbError {
    /// A failure from SQLite with its (possibly extended) result code.
    pub(crate) fn sqlite(code: i32, source: impl Into<BoxError>) -> Self {
        Self {
            code: Some(code),
            transient: false,
            source: source.into(),
        }
    }

    /// A failure without a SQLite result code.
    pub(crate) fn other(source: impl Into<BoxError>) -> Self {
        Self {
            code: None,
            transient: false,
            source: source.into(),
        }
    }

    /// A failure without a SQLite result code that may go away by itself.
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    pub(crate) fn transient(source: impl Into<BoxError>) -> Self {
        Self {
            code: None,
            transient: true,
            source: source.into(),
        }
    }

    /// The primary result code: the extended code's low byte.
    fn primary(&self) -> Option<i32> {
        self.code.map(|code| code & 0xff)
    }

    /// `SQLITE_BUSY` or `SQLITE_LOCKED`: another connection holds the lock we need. Drivers
    /// that lose the code (some sqlx paths) still say "database is locked".
    pub(crate) fn is_busy(&self) -> bool {
        match self.primary() {
            Some(code::BUSY | code::LOCKED) => true,
            Some(_) => false,
            None => {
                let text = self.source.to_string();
                text.contains("database is locked") || text.contains("database table is locked")
            }
        }
    }

    /// `SQLITE_READONLY`: the connection or the file does not allow writing.
    pub(crate) fn is_read_only(&self) -> bool {
        self.primary() == Some(code::READONLY)
    }

    /// The underlying error.
    pub(crate) fn into_source(self) -> BoxError {
        self.source
    }

    /// The [`LockError`] for this failure on database `db`, with a message that says what
    /// to do. Busy databases are not handled here (see `retry`).
    pub(crate) fn into_lock_error(self, db: &str) -> LockError {
        let cause = &self.source;
        if self.code == Some(code::READONLY_DBMOVED) {
            // SQLite's own words ("opened read-only", "not writable") would mislead.
            return file_identity::replaced(db);
        }
        match self.primary() {
            Some(code::NOTADB) => LockError::config(
                BACKEND,
                format!(
                    "{db} is not a SQLite database ({cause}); point the URL or path at a SQLite \
                     database file, or at a path that does not exist yet to create one"
                ),
            ),
            Some(code::READONLY) => LockError::config(
                BACKEND,
                format!(
                    "database {db} is read-only ({cause}): it was opened read-only (mode=ro), or \
                     the file, its directory or its -wal/-shm files are not writable by this \
                     process; taking, renewing and releasing locks needs write access"
                ),
            ),
            Some(code::CANTOPEN) => LockError::config(
                BACKEND,
                format!(
                    "cannot open database {db} ({cause}); check that its directory exists and \
                     is writable, that the path is not a directory, and that this user has \
                     permission to read and write the file itself and its -wal and -shm files \
                     (their owner and mode)"
                ),
            ),
            Some(code::PERM | code::AUTH) => LockError::config(
                BACKEND,
                format!("access to database {db} was denied ({cause}); check its permissions"),
            ),
            Some(code::CORRUPT) => LockError::corrupt(
                BACKEND,
                format!(
                    "the database file {db} is malformed ({cause}); restore it or use a new file"
                ),
            ),
            Some(code::FULL) => LockError::backend(
                BACKEND,
                format!("the disk holding {db} is full ({cause}); free some space"),
            ),
            Some(code::IOERR) => LockError::backend(
                BACKEND,
                format!("I/O error on database {db} ({cause}); check the disk and file system"),
            ),
            _ if self.transient => LockError::unavailable(BACKEND, self.source),
            _ => LockError::backend(BACKEND, self.source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_recognized_by_code_or_message() {
        assert!(DbError::sqlite(5, "x").is_busy());
        assert!(DbError::sqlite(6, "x").is_busy());
        // SQLITE_BUSY_SNAPSHOT (517) and SQLITE_BUSY_RECOVERY (261) are extended codes of BUSY.
        assert!(DbError::sqlite(517, "x").is_busy());
        assert!(DbError::sqlite(261, "x").is_busy());
        assert!(!DbError::sqlite(26, "database is locked").is_busy());
        assert!(DbError::other("(code: 5) database is locked").is_busy());
        assert!(!DbError::other("disk I/O error").is_busy());
        assert!(DbError::sqlite(8, "x").is_read_only());
        assert!(DbError::sqlite(1032, "x").is_read_only()); // SQLITE_READONLY_DBMOVED
        assert!(!DbError::sqlite(5, "x").is_read_only());
    }

    #[test]
    fn codes_map_to_errors_that_say_what_to_do() {
        let e = DbError::sqlite(26, "file is not a database").into_lock_error("/x.db");
        assert!(matches!(e, LockError::Config { .. }), "{e}");
        assert!(e.to_string().contains("not a SQLite database"), "{e}");
        let e = DbError::sqlite(8, "attempt to write a readonly database").into_lock_error("/x.db");
        assert!(matches!(e, LockError::Config { .. }), "{e}");
        assert!(e.to_string().contains("read-only"), "{e}");
        let e = DbError::sqlite(14, "unable to open").into_lock_error("/x.db");
        assert!(matches!(e, LockError::Config { .. }), "{e}");
        for words in ["cannot open database /x.db", "writable", "permission"] {
            assert!(e.to_string().contains(words), "{words:?} not in {e}");
        }
        // SQLITE_READONLY_DBMOVED: not "read-only", but deleted or replaced.
        let e =
            DbError::sqlite(1032, "attempt to write a readonly database").into_lock_error("/x.db");
        assert!(matches!(e, LockError::Config { .. }), "{e}");
        assert!(
            e.to_string().contains("/x.db was deleted or replaced"),
            "{e}"
        );
        assert!(!e.to_string().contains("read-only"), "{e}");
        let e = DbError::sqlite(11, "malformed").into_lock_error("/x.db");
        assert!(matches!(e, LockError::Corrupt { .. }), "{e}");
        assert!(
            DbError::transient("pool timed out")
                .into_lock_error("/x.db")
                .is_transient()
        );
        let e = DbError::other("strange").into_lock_error("/x.db");
        assert!(matches!(e, LockError::Backend { .. }), "{e}");
    }
}
