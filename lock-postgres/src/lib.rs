#![doc = include_str!("../README.md")]

mod backend;
mod exec;
mod notify;
mod options;
mod schema;
mod sql;

pub use backend::{DRIVER, PostgresBackend};
pub use options::{DEFAULT_SCHEMA, DEFAULT_TABLE, MAX_IDENT_LEN, PostgresOptions, URL_SCHEMES};

/// The backend name in [`LockError`](lock_core::LockError)s.
const BACKEND: &str = "postgres";

/// Connects to the PostgreSQL server at `url`; see the crate docs for the URL format.
///
/// # Errors
///
/// As [`PostgresBackend::connect`].
pub async fn connect(url: &str) -> lock_core::Result<PostgresBackend> {
    PostgresBackend::connect(url).await
}
