//! [`RedisOptions`]: where the server is, key prefix, timeouts and reconnection bounds;
//! parsed from a URL and adjusted in code.

use std::str::FromStr;
use std::time::Duration;

use lock_core::{LockError, Result};
use url::Url;

use crate::BACKEND;
use crate::address::{self, Endpoint};
use crate::keys::DEFAULT_PREFIX;

/// Where a [`RedisBackend`](crate::RedisBackend) connects and how it talks to Redis.
///
/// The location comes from a URL (see the crate documentation for the forms and query
/// options), or from a list of cluster nodes ([`cluster`](Self::cluster)); everything else
/// has `with_*` setters. The defaults make an unreachable server fail an operation with
/// [`LockError::Unavailable`] within about two seconds
/// instead of hanging, and let the same backend value recover when the server returns.
///
/// ```
/// use std::time::Duration;
/// use lock_redis::RedisOptions;
///
/// let opts: RedisOptions = "redis://cache.internal:6379/0?timeout=3s".parse()?;
/// let opts = opts.with_key_prefix("myapp:locks:");
/// assert_eq!(opts.key_prefix, "myapp:locks:");
/// assert_eq!(opts.operation_timeout, Duration::from_secs(3));
/// # Ok::<(), lock_core::LockError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Where the server (or the cluster's seed nodes) is.
    pub(crate) endpoint: Endpoint,
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
    /// How many replicas must confirm a grant or a renewal (`WAIT`) before it is returned
    /// (default 0: none). See [`with_replicas`](Self::with_replicas).
    pub replicas: usize,
    /// How long to wait for those confirmations (default 500 ms). Below the response
    /// timeout (the `WAIT`'s answer comes after it) and the operation timeout: a `WAIT`
    /// holds the connection it runs on.
    pub replica_timeout: Duration,
}

impl RedisOptions {
    /// The defaults, at `endpoint`.
    pub(crate) fn at(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            key_prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(2),
            reconnect_retries: 2,
            reconnect_max_delay: Duration::from_millis(250),
            fallback_poll: Duration::from_millis(100),
            replicas: 0,
            replica_timeout: Duration::from_millis(500),
        }
    }

    /// A Redis Cluster given by any of its nodes, as `redis://host:port` (or `rediss://`)
    /// URLs: the same as parsing `redis+cluster://host:port,host:port,...`.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] for a bad node URL or an empty list.
    pub fn cluster<I, S>(nodes: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut urls: Vec<Url> = Vec::new();
        for node in nodes {
            match address::parse(node.as_ref())?.endpoint {
                Endpoint::Standalone(url) => urls.push(url),
                Endpoint::Cluster(more) => urls.extend(more),
                Endpoint::Sentinel(_) => {
                    return Err(LockError::config(
                        BACKEND,
                        "a Redis Cluster's nodes are redis:// URLs, not redis+sentinel://",
                    ));
                }
            }
        }
        if urls.is_empty() {
            return Err(LockError::config(
                BACKEND,
                "a Redis Cluster needs at least one node URL",
            ));
        }
        Ok(Self::at(Endpoint::Cluster(urls)))
    }

    /// The URL of each server these options name (one, or a cluster's seed nodes), as the
    /// `redis` crate reads them: credentials included, so do not log them (use
    /// `lock_core::backend_kit::redact_url`).
    pub fn connection_urls(&self) -> Vec<String> {
        self.endpoint
            .nodes()
            .into_iter()
            .map(String::from)
            .collect()
    }

    /// True when the options name a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.endpoint, Endpoint::Cluster(_))
    }

    /// True when the options name a primary found through Sentinels.
    pub fn is_sentinel(&self) -> bool {
        matches!(self.endpoint, Endpoint::Sentinel(_))
    }

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

    /// Returns a grant (and a renewal) only once `n` replicas confirm they have it
    /// (`WAIT n timeout` after the script, on the same connection); otherwise a grant is
    /// released again and the caller gets
    /// [`LockError::Unavailable`] saying how many
    /// replicas answered, and a renewal fails the same way (the holder's deadline stays
    /// where the last confirmed renewal put it). The same as `?replicas=n&replica_timeout=..`.
    ///
    /// What it does and does not guarantee: Redis replication is asynchronous, and `WAIT`
    /// only narrows the window in which a failover can lose a lease. A replica that
    /// confirmed a grant has it; if the Sentinels (or the cluster) then promote *that*
    /// replica, the lease survives the failover and nobody else is let in before its TTL.
    /// They may still promote a replica that did not confirm (with `n` smaller than the
    /// number of replicas), and `WAIT` does not make the write durable on disk. Fences
    /// close the rest of the window: they never repeat, even across a failover to a replica
    /// that lagged, so a resource that checks them rejects the older holder.
    ///
    /// A `WAIT` holds the connection it runs on, so while replicas lag, every operation of
    /// this backend waits behind it: keep `timeout` well below the operation timeout.
    pub fn with_replicas(mut self, n: usize, timeout: Duration) -> Self {
        self.replicas = n;
        self.replica_timeout = timeout;
        self
    }

    /// Checks the options that only make sense together.
    pub(crate) fn validate(&self) -> Result<()> {
        let bound = self.response_timeout.min(self.operation_timeout);
        if self.replicas > 0 && (self.replica_timeout.is_zero() || self.replica_timeout >= bound) {
            return Err(LockError::config(
                BACKEND,
                format!(
                    "replica_timeout {:?} must be above zero and below the response timeout \
                     {:?} and the operation timeout {:?} (a WAIT holds the connection, and \
                     WAIT 0 would block it for ever): lower replica_timeout",
                    self.replica_timeout, self.response_timeout, self.operation_timeout
                ),
            ));
        }
        Ok(())
    }
}

impl FromStr for RedisOptions {
    type Err = LockError;

    /// Parses a `redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`,
    /// `redis+sentinel://` or `rediss+sentinel://` URL and its query options (`prefix`,
    /// `timeout`, `protocol`, `replicas`, `replica_timeout`).
    fn from_str(url: &str) -> Result<Self> {
        address::parse(url)
    }
}
