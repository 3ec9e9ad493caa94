//! Helpers shared by the Redis test binaries.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use lock_core::{
    Capabilities, Holder, Lease, LeaseInfo, LockBackend, LockError, LockName, Result, async_trait,
};
use lock_redis::{RedisBackend, RedisOptions};
use lock_testkit::redis::unique_prefix;
use tokio::sync::mpsc;

/// A backend on `url` with a key prefix no other test uses.
pub async fn backend(url: &str) -> RedisBackend {
    backend_with(url, &unique_prefix("test")).await
}

/// A backend on `url` with key prefix `prefix`.
pub async fn backend_with(url: &str, prefix: &str) -> RedisBackend {
    let opts: RedisOptions = url.parse().unwrap_or_else(|e| panic!("parsing {url}: {e}"));
    RedisBackend::connect_with(opts.with_key_prefix(prefix))
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// A plain connection for commands the backend does not send.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("raw connection to {url}: {e}"))
}

/// Runs `op`, asserting it fails with `Unavailable` within `within`.
pub async fn assert_unavailable_within<T: std::fmt::Debug>(
    what: &str,
    within: Duration,
    op: impl std::future::Future<Output = Result<T>>,
) {
    let start = Instant::now();
    let result = op.await;
    let took = start.elapsed();
    assert!(
        matches!(result, Err(LockError::Unavailable { .. })),
        "{what}: expected Unavailable, got {result:?}"
    );
    assert!(
        took <= within,
        "{what}: took {took:?}, more than {within:?}"
    );
}

/// The limit for "fails fast": the default operation timeout (2 s) plus scheduling slack.
pub const FAIL_FAST: Duration = Duration::from_millis(2600);

/// What a [`Spy`] saw a caller (a `Locker`, a guard's heartbeats) do.
#[derive(Debug)]
pub enum Seen {
    /// A caller tried to acquire.
    Attempt,
    /// A waiter started waiting for a change.
    Waiting,
    /// A heartbeat (alone, or one lease of a batch) renewed its lease.
    Renewed,
    /// A heartbeat failed: with `Unavailable` or not, and the error as text.
    HeartbeatFailed { unavailable: bool, error: String },
}

/// A [`RedisBackend`] that reports waits and heartbeat results, so a test can act exactly
/// when someone waits, or check what the guards' own heartbeats got.
#[derive(Debug)]
pub struct Spy {
    inner: RedisBackend,
    seen: mpsc::UnboundedSender<Seen>,
}

impl Spy {
    /// A spy on `inner`, and what it sees.
    pub fn new(inner: RedisBackend) -> (Self, mpsc::UnboundedReceiver<Seen>) {
        let (seen, rx) = mpsc::unbounded_channel();
        (Self { inner, seen }, rx)
    }

    /// Reports a heartbeat's `result`.
    fn report(&self, result: &Result<Lease>) {
        let seen = match result {
            Ok(_) => Seen::Renewed,
            Err(error) => Seen::HeartbeatFailed {
                unavailable: matches!(error, LockError::Unavailable { .. }),
                error: format!("{error:?}"),
            },
        };
        let _ = self.seen.send(seen);
    }
}

#[async_trait]
impl LockBackend for Spy {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let _ = self.seen.send(Seen::Attempt);
        self.inner.try_acquire(name, holder, ttl).await
    }
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let result = self.inner.heartbeat(lease, ttl).await;
        self.report(&result);
        result
    }
    async fn heartbeat_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Lease>> {
        let results = self.inner.heartbeat_many(leases, ttl).await;
        for result in &results {
            self.report(result);
        }
        results
    }
    async fn release(&self, lease: &Lease) -> Result<bool> {
        self.inner.release(lease).await
    }
    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        self.inner.inspect(name).await
    }
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.inner.force_release(name).await
    }
    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        let _ = self.seen.send(Seen::Waiting);
        self.inner.wait_for_change(name, since, max).await;
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

/// The function libraries the server at `conn` has loaded, by name (`FUNCTION LIST`).
pub async fn function_libraries(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let listed: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    listed
        .into_iter()
        .map(|library| {
            // RESP2: a flat array of field names and values.
            let fields: Vec<redis::Value> = redis::from_redis_value(library).unwrap();
            let at = fields
                .iter()
                .position(|f| {
                    redis::from_redis_value_ref::<String>(f).is_ok_and(|f| f == "library_name")
                })
                .expect("a library_name field");
            redis::from_redis_value_ref(&fields[at + 1]).unwrap()
        })
        .collect()
}

/// How many calls of `command` the server at `conn` ran since its statistics were last
/// reset (`INFO commandstats`; refused calls are not counted).
pub async fn command_calls(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let line = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Resets the server's command statistics (`CONFIG RESETSTAT`).
pub async fn reset_stats(conn: &mut redis::aio::MultiplexedConnection) {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec_async(conn)
        .await
        .unwrap();
}
