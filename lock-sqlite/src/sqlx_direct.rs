//! One connection of an sqlx pool, taken out of the pool and driven through the SQLite C
//! API on the calling thread, so the sqlx driver runs exactly the rusqlite driver's code.
//!
//! sqlx runs every SQLite connection on a worker thread of its own and sends it each
//! statement: on a cold hand-off between processes those trips were most of the sqlx
//! driver's time (its release and its waiter's attempt each took about twice the rusqlite
//! driver's), and an acquire + release pair cost 2.9-3.6x a raw one. sqlx's own escape hatch,
//! [`SqliteConnection::lock_handle`], takes the database handle away from the worker thread
//! (which then waits for it); this module keeps it taken for the connection's life, and
//! gives the handle to a non-owning [`rusqlite::Connection`].
//!
//! The connection is detached from the pool ([`PoolConnection::detach`]), so closing the
//! pool never waits for it, and the application's pool keeps all of its connections.

// The only unsafe code of the crate: holding sqlx's lock on the handle for as long as the
// connection lives (a borrow of the connection kept next to it), and handing the raw
// handle to rusqlite. Each block says why it is sound.
#![allow(unsafe_code)]

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use rusqlite::Connection;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{LockedSqliteHandle, SqliteConnection};
use sqlx::{Sqlite, SqlitePool};

use crate::driver::DbError;
use crate::rusqlite_driver::{configure, db_error as rusqlite_error};

/// A connection detached from an sqlx pool whose handle this process drives directly.
///
/// Its fields drop in the order they are declared, which is the order they must go in.
pub(crate) struct DirectConnection {
    /// rusqlite's view of the handle; finalizes its cached statements when dropped, while
    /// the handle is still open.
    conn: Connection,
    /// sqlx's lock on the handle: while it is held, the connection's worker thread waits
    /// for it and makes no call on the handle. The last borrow of the connection.
    _handle: LockedSqliteHandle<'static>,
    /// The connection, only held, to be closed last (its worker thread closes the database
    /// once the lock is released).
    _owner: Owner,
}

/// A boxed connection, leaked while a `LockedSqliteHandle<'static>` borrows it, and
/// dropped with its owner: also when the future that takes it is cancelled.
struct Owner(NonNull<SqliteConnection>);

// SAFETY: `Owner` is the only owner of a boxed `SqliteConnection`, which is `Send`; the
// pointer is dereferenced only through `&mut` borrows that follow Rust's rules.
unsafe impl Send for Owner {}

impl Owner {
    fn new(conn: SqliteConnection) -> Self {
        Self(NonNull::from(Box::leak(Box::new(conn))))
    }

    /// A borrow of the connection for as long as the caller says.
    ///
    /// # Safety
    ///
    /// The borrow (and whatever borrows from it) must end before `self` is dropped, and no
    /// other borrow may be made meanwhile.
    unsafe fn borrow<'a>(&self) -> &'a mut SqliteConnection {
        // SAFETY: the pointer came from `Box::leak` and is live until `drop`; the caller
        // keeps the borrow unique and ends it before then.
        unsafe { &mut *self.0.as_ptr() }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `Box::leak`, every borrow of it has ended (see
        // `borrow`), and this runs once.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl DirectConnection {
    /// Takes a connection from `pool`, detaches it, and locks its handle for good.
    ///
    /// Cancel-safe: locals drop in the reverse order of their declaration (the pending
    /// `lock_handle` first, then `owner`), so no borrow outlives the connection, and nothing
    /// is left open.
    pub(crate) async fn take(pool: &SqlitePool) -> Result<Self, DbError> {
        let pooled: PoolConnection<Sqlite> = pool.acquire().await.map_err(sqlx_error)?;
        let owner = Owner::new(pooled.detach());
        // SAFETY: the only borrow of the connection; it ends with `handle` (or with the
        // `lock_handle` future, if this one is cancelled), which is declared after `owner`
        // and so dropped before it, here or as a field of `DirectConnection`.
        let mut handle = unsafe { owner.borrow() }
            .lock_handle()
            .await
            .map_err(sqlx_error)?;
        let raw = handle.as_raw_handle();
        // SAFETY: the handle stays open and untouched by sqlx for as long as `handle` is
        // held, and `conn` is dropped before it (field order); rusqlite does not close a
        // handle it does not own. The connection was opened by sqlx in SQLite's
        // multi-thread mode, where a handle may move between threads but not be used by two
        // at once: `&mut self` ensures that.
        let conn = unsafe { Connection::from_handle(raw.as_ptr()) }.map_err(rusqlite_error)?;
        let direct = Self {
            conn,
            _handle: handle,
            _owner: owner,
        };
        // The connection is now this crate's alone: no other code of the application
        // waits on its busy handler.
        configure(&direct.conn)?;
        Ok(direct)
    }
}

impl Deref for DirectConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for DirectConnection {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// A failure of sqlx (taking a connection from the pool, locking its handle).
pub(crate) fn sqlx_error(e: sqlx::Error) -> DbError {
    let code = match &e {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    match code {
        Some(code) => DbError::sqlite(code, e),
        None if matches!(
            e,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed
        ) =>
        {
            DbError::transient(e)
        }
        None => DbError::other(e),
    }
}
