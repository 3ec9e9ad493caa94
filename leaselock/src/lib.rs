#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod connect;

pub use connect::{connect, supported_schemes};

// The user API, listed one by one: what a backend author needs lives in
// `lock_core::backend_kit` and is not re-exported here.
pub use lock_core::{
    ATTEMPT_FLOOR, BoxError, Capabilities, Election, Holder, IntoLockName, LeaderEvent, Leadership,
    Lease, LeaseInfo, LeaseWatch, LockBackend, LockError, LockGuard, LockName, LockOptions, Locker,
    LossReason, MAX_NAME_LEN, MAX_PERMITS, MAX_TTL, MIN_HEARTBEAT_INTERVAL, MIN_TTL, Observer,
    OwnerToken, Result,
};
pub use lock_core::{memory, telemetry};

/// Re-exported so a type of yours (a test double, a wrapper that counts calls) can implement
/// [`LockBackend`] with the same macro version.
pub use lock_core::async_trait;

/// The SQLite backend (feature `sqlite`; the sqlx driver with `sqlite-sqlx`).
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use lock_sqlite as sqlite;

/// The lock-directory backend (feature `file`).
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub use lock_file as file;

/// The Redis backend (feature `redis`).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use lock_redis as redis;

/// The PostgreSQL backend (feature `postgres`).
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use lock_postgres as postgres;

/// The workspace README's examples, run as doctests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct WorkspaceReadme;
