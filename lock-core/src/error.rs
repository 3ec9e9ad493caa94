//! The one error type every backend and the [`Locker`](crate::Locker) return.

use std::time::Duration;

use crate::name::LockName;

/// A boxed error from a driver or the operating system.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`LockError`].
pub type Result<T, E = LockError> = std::result::Result<T, E>;

/// Everything that can go wrong, each with a message that says what to do.
///
/// Contention is not an error: [`LockBackend::try_acquire`](crate::LockBackend::try_acquire)
/// returns `Ok(None)` when someone else holds the lease.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The lock name is not legal (see [`LockName::new`]).
    #[error("invalid lock name \"{name}\": {reason}; use 1 to 256 bytes of UTF-8 without NUL")]
    InvalidName {
        /// The offending name, escaped and shortened for display.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The TTL is zero, too short to heartbeat, or absurdly long.
    #[error(
        "invalid lease TTL {ttl:?}: {reason}; use a TTL between {min:?} and {max:?}",
        min = crate::MIN_TTL,
        max = crate::MAX_TTL
    )]
    InvalidTtl {
        /// The TTL that was asked for.
        ttl: Duration,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The lease is no longer ours: it expired, was taken over, or was force-released.
    #[error(
        "lease on lock \"{name}\" was lost (expired, taken over or force-released); \
         stop work that needs the lock and acquire it again"
    )]
    LeaseLost {
        /// The lock whose lease was lost.
        name: LockName,
    },

    /// Waiting for the lock took longer than the caller allowed.
    #[error(
        "timed out after {waited:?} waiting for lock \"{name}\", which someone else holds; \
         wait longer, or see who holds it with `lockctl status`"
    )]
    Timeout {
        /// The lock that was waited for.
        name: LockName,
        /// How long the caller waited.
        waited: Duration,
    },

    /// The store could not be reached or is busy; retrying later may succeed.
    #[error(
        "{backend} lock store is unavailable: {source}; check that it is running and reachable, then retry"
    )]
    Unavailable {
        /// Which backend failed (`"sqlite"`, `"redis"`, `"file"`, ...).
        backend: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },

    /// The store holds data this library cannot read.
    #[error(
        "{backend} lock store holds data it cannot read: {detail}; `lockctl release --force` resets that lock"
    )]
    Corrupt {
        /// Which backend found it.
        backend: &'static str,
        /// What was wrong.
        detail: String,
    },

    /// The store is misconfigured: a bad URL, a missing or read-only location, a foreign schema.
    #[error("invalid {backend} configuration: {detail}")]
    Config {
        /// Which backend (or `"leaselock"` for the library itself).
        backend: &'static str,
        /// What is wrong and how to fix it.
        detail: String,
    },

    /// The backend does not support this operation.
    #[error("the {backend} backend does not support {operation}")]
    Unsupported {
        /// Which backend.
        backend: &'static str,
        /// The operation that was asked for.
        operation: &'static str,
    },

    /// Any other failure reported by the store or its driver.
    #[error("{backend} lock store failed: {source}")]
    Backend {
        /// Which backend failed.
        backend: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
}

impl LockError {
    /// True for failures that may go away by themselves (store unreachable or busy), so that
    /// retrying the same call later is reasonable.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// Shorthand for [`LockError::Unavailable`].
    pub fn unavailable(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            backend,
            source: source.into(),
        }
    }

    /// Shorthand for [`LockError::Backend`].
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            backend,
            source: source.into(),
        }
    }

    /// Shorthand for [`LockError::Config`].
    pub fn config(backend: &'static str, detail: impl Into<String>) -> Self {
        Self::Config {
            backend,
            detail: detail.into(),
        }
    }

    /// Shorthand for [`LockError::Corrupt`].
    pub fn corrupt(backend: &'static str, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            backend,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let name = LockName::new("jobs").unwrap();
        let timeout = LockError::Timeout {
            name: name.clone(),
            waited: Duration::from_secs(2),
        };
        assert!(timeout.to_string().contains("lockctl status"), "{timeout}");
        let lost = LockError::LeaseLost { name };
        assert!(lost.to_string().contains("acquire it again"), "{lost}");
        let down = LockError::unavailable("redis", "connection refused");
        assert!(down.is_transient());
        assert!(down.to_string().contains("retry"), "{down}");
        assert!(!LockError::corrupt("file", "bad json").is_transient());
    }
}
