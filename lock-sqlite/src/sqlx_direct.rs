//! One connection of an sqlx pool, taken out of the pool and driven through the SQLite C
//! API on the calling thread, so the sqlx driver runs exactly the rusqlite driver's code.
//!
//! sqlx runs every SQLite connection on a worker thread of its own and sends it each
//! statement: on a cold hand-off between processes those trips were most of the sqlx
//! driver's time (its release and its waiter's attempt each took about twice the rusqlite
//! driver's), and an acquire + release pair cost 2.9x a raw one. sqlx's own escape hatch,
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

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use rusqlite::Connection;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{LockedSqliteHandle, SqliteConnection};
use sqlx::{Sqlite, SqlitePool};

use crate::driver::DbError;
use crate::rusqlite_driver::{configure, db_error as rusqlite_error};

/// A connection detached from an sqlx pool whose handle this process drives directly.
pub(crate) struct DirectConnection {
    /// rusqlite's view of the handle; finalizes its cached statements when dropped, so it
    /// goes first.
    conn: ManuallyDrop<Connection>,
    /// sqlx's lock on the handle: while it is held, the connection's worker thread waits
    /// for it and makes no call on the handle. Released second.
    handle: ManuallyDrop<LockedSqliteHandle<'static>>,
    /// The connection, closed last (its worker thread closes the database once the lock is
    /// released).
    owner: ManuallyDrop<Owner>,
}

/// A boxed connection, leaked while `LockedSqliteHandle<'static>` borrows it.
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
    /// The borrow (and whatever borrows from it) must end before [`reclaim`](Self::reclaim),
    /// and no other borrow may be made meanwhile.
    unsafe fn borrow<'a>(&self) -> &'a mut SqliteConnection {
        // SAFETY: the pointer came from `Box::leak` and is live until `reclaim`; the caller
        // keeps the borrow unique and ends it before then.
        unsafe { &mut *self.0.as_ptr() }
    }

    /// Drops the connection.
    ///
    /// # Safety
    ///
    /// Every borrow made by [`borrow`](Self::borrow) has ended.
    unsafe fn reclaim(self) {
        // SAFETY: the pointer came from `Box::leak`, and `self` is consumed: reclaimed once.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl DirectConnection {
    /// Takes a connection from `pool`, detaches it, and locks its handle for good.
    pub(crate) async fn take(pool: &SqlitePool) -> Result<Self, DbError> {
        let pooled: PoolConnection<Sqlite> = pool.acquire().await.map_err(sqlx_error)?;
        let owner = Owner::new(pooled.detach());
        // SAFETY: the only borrow of the connection; it ends with `handle`, which is dropped
        // before `owner` is reclaimed, here on failure or in `Drop`.
        let handle = unsafe { owner.borrow() }.lock_handle().await;
        let mut handle = match handle {
            Ok(handle) => handle,
            Err(e) => {
                // SAFETY: the failed call's borrow has ended.
                unsafe { owner.reclaim() };
                return Err(sqlx_error(e));
            }
        };
        let raw = handle.as_raw_handle();
        // SAFETY: the handle stays open and untouched by sqlx for as long as `handle` is
        // held, and `conn` is dropped before it (see `Drop`); rusqlite does not close a
        // handle it does not own. The connection was opened by sqlx in SQLite's
        // multi-thread mode, where a handle may move between threads but not be used by two
        // at once: `&mut self` ensures that.
        let conn = match unsafe { Connection::from_handle(raw.as_ptr()) } {
            Ok(conn) => conn,
            Err(e) => {
                drop(handle);
                // SAFETY: `handle`, the only borrow of the connection, is gone.
                unsafe { owner.reclaim() };
                return Err(rusqlite_error(e));
            }
        };
        let direct = Self {
            conn: ManuallyDrop::new(conn),
            handle: ManuallyDrop::new(handle),
            owner: ManuallyDrop::new(owner),
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

impl Drop for DirectConnection {
    fn drop(&mut self) {
        // SAFETY: each field is dropped once, in this order: rusqlite's view of the handle
        // (finalizing its statements while the handle is open), then sqlx's lock on it (the
        // last borrow of the connection), then the connection itself.
        unsafe {
            ManuallyDrop::drop(&mut self.conn);
            ManuallyDrop::drop(&mut self.handle);
            ManuallyDrop::take(&mut self.owner).reclaim();
        }
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
