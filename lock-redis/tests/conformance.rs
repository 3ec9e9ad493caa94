//! The whole conformance suite against one private `redis-server` (or
//! `LOCK_TEST_REDIS_URL`), shared by every test of this binary. Each test gets its own
//! backends (each `#[tokio::test]` has its own runtime) and its own key prefix, and a
//! write-loss hook that rolls back the keys under that prefix (`DUMP`/`RESTORE`), as a
//! restart from an older snapshot would.

use std::sync::Arc;

use lock_conformance::Target;
use lock_redis::{RedisBackend, RedisOptions};
use lock_testkit::redis::{PrefixSnapshot, shared as server, unique_prefix};

async fn target() -> Target {
    let url = server().url();
    let prefix = unique_prefix("conformance");
    let opts: RedisOptions = url.parse().expect("the test server's URL");
    let opts = opts.with_key_prefix(prefix.clone());
    let first = RedisBackend::connect_with(opts.clone())
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    let second = RedisBackend::connect_with(opts)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    Target::new("redis", Arc::new(first))
        .with_second_client(Arc::new(second))
        .with_prefix("conformance/")
        .with_write_loss(Arc::new(PrefixSnapshot::new(vec![url], prefix)))
}

lock_conformance::conformance_tests!(redis, target());
