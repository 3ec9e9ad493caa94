//! Helpers shared by the Redis test binaries.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use lock_core::{LockError, Result};
use lock_redis::test_support::unique_prefix;
use lock_redis::{RedisBackend, RedisOptions};

/// A backend on `url` with a key prefix no other test uses.
pub async fn backend(url: &str) -> RedisBackend {
    backend_with(
        url,
        RedisOptions::default().with_key_prefix(unique_prefix("test")),
    )
    .await
}

/// A backend on `url` with `opts`.
pub async fn backend_with(url: &str, opts: RedisOptions) -> RedisBackend {
    RedisBackend::connect_with(url, opts)
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
