//! [`RedisOptions`]: key prefix, timeouts and reconnection bounds.

use std::time::Duration;

use crate::keys::DEFAULT_PREFIX;

/// How a [`RedisBackend`](crate::RedisBackend) talks to Redis.
///
/// The defaults make an unreachable server fail an operation with
/// [`LockError::Unavailable`](lock_core::LockError::Unavailable) within about two seconds
/// instead of hanging, and let the same backend value recover when the server returns.
///
/// ```
/// use std::time::Duration;
/// use lock_redis::RedisOptions;
///
/// let opts = RedisOptions::default()
///     .with_key_prefix("myapp:locks:")
///     .with_operation_timeout(Duration::from_secs(3));
/// assert_eq!(opts.key_prefix, "myapp:locks:");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Prepended to every key and to the release channel (default `"lock:"`). Two backends
    /// with different prefixes never see each other's locks. Must not contain `{` or `}`.
    pub key_prefix: String,
    /// Limit for opening one TCP (and TLS) connection, handshake included (default 500 ms).
    pub connect_timeout: Duration,
    /// Limit for the answer to one command on an open connection (default 1 s).
    pub response_timeout: Duration,
    /// Limit for a whole operation, reconnection attempts included (default 2 s). Past it
    /// the operation fails with `Unavailable`.
    pub operation_timeout: Duration,
    /// How many times a lost connection is re-dialled before pending operations fail
    /// (default 2). Later operations start a new round of attempts.
    pub reconnect_retries: usize,
    /// Longest pause between two reconnection attempts (default 250 ms).
    pub reconnect_max_delay: Duration,
    /// How often `wait_for_change` polls while the release subscription is down (default
    /// 100 ms, jittered).
    pub fallback_poll: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(2),
            reconnect_retries: 2,
            reconnect_max_delay: Duration::from_millis(250),
            fallback_poll: Duration::from_millis(100),
        }
    }
}

impl RedisOptions {
    /// With [`key_prefix`](Self::key_prefix) set.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// With [`connect_timeout`](Self::connect_timeout) set.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// With [`response_timeout`](Self::response_timeout) set.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// With [`operation_timeout`](Self::operation_timeout) set.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// With [`reconnect_retries`](Self::reconnect_retries) and
    /// [`reconnect_max_delay`](Self::reconnect_max_delay) set.
    pub fn with_reconnect(mut self, retries: usize, max_delay: Duration) -> Self {
        self.reconnect_retries = retries;
        self.reconnect_max_delay = max_delay;
        self
    }

    /// With [`fallback_poll`](Self::fallback_poll) set.
    pub fn with_fallback_poll(mut self, interval: Duration) -> Self {
        self.fallback_poll = interval;
        self
    }
}
