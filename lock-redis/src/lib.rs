#![doc = include_str!("../README.md")]

mod address;
mod backend;
mod connection;
mod errors;
mod functions;
mod keys;
mod notify;
mod options;
mod scan;
mod scripts;

pub use address::URL_SCHEMES;
pub use backend::DRIVER;
pub use backend::RedisBackend;
pub use options::RedisOptions;

/// The backend name in errors.
const BACKEND: &str = "redis";

/// Connects to the Redis server or cluster at `url`; see the crate docs for the URL format.
///
/// # Errors
///
/// [`LockError::Config`](lock_core::LockError::Config) for a bad URL, refused credentials or
/// a TLS mismatch; [`LockError::Unavailable`](lock_core::LockError::Unavailable) when the
/// server cannot be reached within the operation timeout (2 s by default).
pub async fn connect(url: &str) -> lock_core::Result<RedisBackend> {
    RedisBackend::connect(url).await
}
