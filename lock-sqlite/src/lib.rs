#![doc = include_str!("../README.md")]

mod driver;
mod engine;
mod fence;
mod file_identity;
mod location;
mod now;
mod ops;
mod options;
mod record;
mod retry;
mod rusqlite_driver;
mod schema;
mod setup;
mod sql;
#[cfg(feature = "sqlx")]
mod sqlx_direct;
#[cfg(feature = "sqlx")]
mod sqlx_driver;
mod value;
mod wake;

pub use options::{
    DEFAULT_BUSY_TIMEOUT, SQLX_URL_SCHEMES, SqliteOptions, Synchronous, URL_SCHEMES,
};
pub use rusqlite_driver::{DRIVER, SqliteBackend, connect};
#[cfg(feature = "sqlx")]
pub use sqlx_driver::{SQLX_DRIVER, SqlxSqliteBackend};

/// The backend name in [`LockError`](lock_core::LockError)s.
const BACKEND: &str = "sqlite";
