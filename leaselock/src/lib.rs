#![doc = include_str!("../README.md")]

mod connect;

pub use connect::{connect, supported_schemes};
pub use lock_core::*;

/// The SQLite backend (feature `sqlite`; the sqlx driver with `sqlite-sqlx`).
#[cfg(feature = "sqlite")]
pub use lock_sqlite as sqlite;

/// The lock-directory backend (feature `file`).
#[cfg(feature = "file")]
pub use lock_file as file;

/// The Redis backend (feature `redis`).
#[cfg(feature = "redis")]
pub use lock_redis as redis;
