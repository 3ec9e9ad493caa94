//! Stores that lose their latest writes (a failover to a replica that lagged, a restart from
//! an older snapshot, Sentinel failovers) never reissue a fence; `replicas=N` keeps a
//! confirmed lease through a failover; an unconfirmed grant is given back.

mod common;

use std::time::{Duration, Instant};

use common::{backend_with, raw};
use lock_core::{Holder, Lease, LockBackend, LockError, LockName};
use lock_redis::RedisBackend;
use lock_testkit::redis::{RedisReplicaPair, RedisSentinels, RedisServer, unique_prefix};

const LONG: Duration = Duration::from_secs(60);

fn name(s: &str) -> LockName {
    LockName::new(s).unwrap()
}

async fn take(b: &RedisBackend, n: &LockName, label: &str) -> Lease {
    b.try_acquire(n, &Holder::current(label), LONG)
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}"))
        .unwrap_or_else(|| panic!("{label}: {n} is held"))
}

/// Acquires `n` through `b`, retrying while the store is unavailable (a failover or a
/// restart under way), for at most `within`.
async fn take_when_back(b: &RedisBackend, n: &LockName, label: &str, within: Duration) -> Lease {
    let start = Instant::now();
    loop {
        match b.try_acquire(n, &Holder::current(label), LONG).await {
            Ok(Some(lease)) => return lease,
            Ok(None) => panic!("{label}: {n} is held after the store lost it"),
            Err(e @ LockError::Unavailable { .. }) => {
                assert!(start.elapsed() < within, "{label}: still unavailable: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{label}: {e}"),
        }
    }
}

/// The fence counter of `n` as stored on the server at `url`.
async fn counter(url: &str, b: &RedisBackend, n: &LockName) -> u64 {
    let mut conn = raw(url).await;
    let value: String = redis::cmd("GET")
        .arg(b.keys_of(n).1)
        .query_async(&mut conn)
        .await
        .unwrap();
    value.parse().unwrap()
}

fn assert_rising(fences: &[u64], what: &str) {
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "{what}: a fence was reissued: {fences:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_rise_after_a_failover_to_a_replica_that_lagged() {
    let pair = RedisReplicaPair::start();
    let prefix = unique_prefix("lagging");
    let n = name("lagging");
    let on_primary = backend_with(&pair.primary().url(), &prefix).await;
    let f1 = take(&on_primary, &n, "f1").await;
    assert!(on_primary.release(&f1).await.unwrap());
    pair.wait_in_sync();
    // The replica stops following after f1 and is promoted (it lagged: it never sees f2, f3).
    pair.detach_replica();
    let f2 = take(&on_primary, &n, "f2").await;
    assert!(on_primary.release(&f2).await.unwrap());
    let f3 = take(&on_primary, &n, "f3").await;
    assert_eq!(
        counter(&pair.replica().url(), &on_primary, &n).await,
        f1.fence,
        "the promoted replica only has f1"
    );
    // The clients move to the promoted replica.
    let on_replica = backend_with(&pair.replica().url(), &prefix).await;
    let f4 = take(&on_replica, &n, "f4").await;
    assert_rising(
        &[f1.fence, f2.fence, f3.fence, f4.fence],
        "after a failover",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_rise_after_a_restart_from_an_older_snapshot() {
    let mut server = RedisServer::start();
    let b = backend_with(&server.url(), &unique_prefix("snapshot")).await;
    let n = name("snapshot");
    let f1 = take(&b, &n, "f1").await;
    assert!(b.release(&f1).await.unwrap());
    let mut admin = raw(&server.url()).await;
    redis::cmd("SAVE").exec_async(&mut admin).await.unwrap();
    let f2 = take(&b, &n, "f2").await;
    assert!(b.release(&f2).await.unwrap());
    let f3 = take(&b, &n, "f3").await;
    // kill -9 and restart: the server loads the snapshot taken at f1.
    server.restart();
    let f4 = take_when_back(&b, &n, "f4", Duration::from_secs(10)).await;
    assert_rising(&[f1.fence, f2.fence, f3.fence, f4.fence], "after a restart");
    // The snapshot did roll the counter back: the clock, not the counter, kept f4 above f3.
    assert!(f4.fence > f3.fence);
    assert!(matches!(
        b.heartbeat(&f3, LONG).await,
        Err(LockError::LeaseLost { .. })
    ));
}

/// A backend on the Sentinel group's URL with a fresh prefix (and extra query options).
async fn sentinel_backend(group: &RedisSentinels, prefix: &str, query: &str) -> RedisBackend {
    let url = format!("{}?prefix={prefix}{query}", group.url());
    lock_redis::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Takes and releases `n` three times; returns the fences.
async fn three_grants(b: &RedisBackend, n: &LockName) -> Vec<u64> {
    let mut fences = Vec::new();
    for i in 0..3 {
        let lease = take(b, n, &format!("before-{i}")).await;
        fences.push(lease.fence);
        assert!(b.release(&lease).await.unwrap());
    }
    fences
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_backend_follows_a_sentinel_failover_on_command() {
    let group = RedisSentinels::start();
    let b = sentinel_backend(&group, &unique_prefix("sentinel-cmd"), "").await;
    let n = name("followed");
    let mut fences = three_grants(&b, &n).await;
    let old = group.primary_port();
    group.failover();
    assert_ne!(group.primary_port(), old);
    let after = take_when_back(&b, &n, "after", Duration::from_secs(20)).await;
    fences.push(after.fence);
    assert_rising(&fences, "across SENTINEL FAILOVER");
    // The lease lives on the new primary: its holder renews and releases it there.
    let renewed = b.heartbeat(&after, LONG).await.unwrap();
    assert!(b.release(&renewed).await.unwrap());
    let mut on_new = raw(&group.primary().url()).await;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut on_new).await.unwrap();
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_backend_follows_a_sentinel_failover_after_the_primary_dies() {
    let mut group = RedisSentinels::start();
    let b = sentinel_backend(&group, &unique_prefix("sentinel-kill"), "").await;
    let n = name("followed");
    let mut fences = three_grants(&b, &n).await;
    let killed = group.kill_primary();
    // Until the Sentinels agree, operations fail with Unavailable within their timeout.
    let start = Instant::now();
    match b.try_acquire(&n, &Holder::current("during"), LONG).await {
        Err(LockError::Unavailable { .. }) => {
            assert!(
                start.elapsed() < Duration::from_millis(2600),
                "{:?}",
                start.elapsed()
            );
        }
        Ok(Some(lease)) => panic!("granted {} with the primary dead", lease.fence),
        other => panic!("during the failover: {other:?}"),
    }
    let new = group.wait_for_new_primary(killed);
    assert_ne!(new, killed);
    let after = take_when_back(&b, &n, "after", Duration::from_secs(20)).await;
    fences.push(after.fence);
    assert_rising(&fences, "across a failover after the primary died");
    assert!(b.release(&after).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replicas_1_a_lease_is_still_held_after_a_failover() {
    let mut group = RedisSentinels::start();
    let prefix = unique_prefix("confirmed");
    let holder_side = sentinel_backend(&group, &prefix, "&replicas=1&replica_timeout=500ms").await;
    let n = name("confirmed");
    let ttl = Duration::from_secs(30);
    let lease = holder_side
        .try_acquire(&n, &Holder::current("confirmed"), ttl)
        .await
        .unwrap()
        .expect("a free name, confirmed by the replica");
    let killed = group.kill_primary();
    group.wait_for_new_primary(killed);
    // Another client, after the failover: the lease is there, with its holder and fence,
    // and nobody else gets the name before its TTL.
    let other = sentinel_backend(&group, &prefix, "").await;
    let start = Instant::now();
    let info = loop {
        match other.inspect(&n).await {
            Ok(info) => break info,
            Err(LockError::Unavailable { .. }) if start.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("inspect after the failover: {e}"),
        }
    };
    let info = info.expect("the confirmed lease survived the failover");
    assert_eq!(
        (info.fence, info.label.as_str()),
        (lease.fence, "confirmed")
    );
    let intruder = other
        .try_acquire(&n, &Holder::current("intruder"), ttl)
        .await
        .unwrap();
    assert!(
        intruder.is_none(),
        "a second holder before the TTL: {intruder:?}"
    );
    // The new primary has no replica left (the old primary is dead): a renewal that must be
    // confirmed by one is refused as unconfirmed, and the holder's deadline stays where its
    // last confirmed renewal put it.
    let start = Instant::now();
    loop {
        match holder_side.heartbeat(&lease, ttl).await {
            Err(e @ LockError::Unavailable { .. }) if e.to_string().contains("renewal") => break,
            Err(LockError::Unavailable { .. }) if start.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("a renewal no replica can confirm: {other:?}"),
        }
    }
    // The token still owns the lease there: a client that needs no confirmation renews it.
    let renewed = other.heartbeat(&lease, ttl).await.unwrap();
    assert_eq!(renewed.fence, lease.fence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_no_replica_confirms_is_given_back_and_unavailable() {
    // A primary without replicas: WAIT 1 times out with 0.
    let server = RedisServer::start();
    let prefix = unique_prefix("unconfirmed");
    let url = format!(
        "{}?prefix={prefix}&replicas=1&replica_timeout=200ms",
        server.url()
    );
    let b = lock_redis::connect(&url).await.unwrap();
    assert!(
        !b.capabilities().batched_heartbeat,
        "renewals are confirmed one by one"
    );
    let n = name("unconfirmed");
    let start = Instant::now();
    match b.try_acquire(&n, &Holder::current("a"), LONG).await {
        Err(e @ LockError::Unavailable { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("only 0 of the 1 replicas") && text.contains("replicas="),
                "{text}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(200));
    // Given back: nothing is held, and the fence was spent (the next grant is higher).
    let plain = backend_with(&server.url(), &prefix).await;
    assert!(plain.inspect(&n).await.unwrap().is_none());
    let lease = take(&plain, &n, "plain").await;
    // A renewal nobody confirms fails the same way, and leaves the lease to its holder.
    match b.heartbeat(&lease, LONG).await {
        Err(e @ LockError::Unavailable { .. }) => {
            assert!(e.to_string().contains("renewal"), "{e}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(plain.inspect(&n).await.unwrap().unwrap().fence, lease.fence);
    assert!(plain.release(&lease).await.unwrap());
}
