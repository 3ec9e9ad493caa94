//! Release notifications: how fast a waiter wakes, and the polling fallback while the
//! subscription is down.

mod common;

use std::time::{Duration, Instant};

use common::{backend, backend_with, raw};
use lock_core::{Holder, LockBackend, LockName};
use lock_redis::RedisBackend;
use lock_redis::test_support::RedisServer;

const LONG: Duration = Duration::from_secs(60);

async fn until_subscribed(b: &RedisBackend, expected: bool) {
    let start = Instant::now();
    while b.is_subscribed() != expected {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "subscription never became {expected}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Holds `name` through `holder_backend`, starts a waiter on `waiter_backend` with a long
/// budget, releases, and returns how long after the release call started the waiter woke.
async fn wake_latency(
    holder_backend: &RedisBackend,
    waiter_backend: &RedisBackend,
    name: &LockName,
) -> Duration {
    let lease = holder_backend
        .try_acquire(name, &Holder::current("holder"), LONG)
        .await
        .unwrap()
        .unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let waiter = {
        let b = waiter_backend.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let _ = ready_tx.send(());
            b.wait_for_change(&name, Duration::from_secs(20)).await;
            Instant::now()
        })
    };
    ready_rx.await.unwrap();
    // Let the waiter reach its await before releasing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let released_at = Instant::now();
    assert!(holder_backend.release(&lease).await.unwrap());
    let woke_at = waiter.await.unwrap();
    woke_at.saturating_duration_since(released_at)
}

/// A waiting backend whose release subscription is up, and a second backend that holds.
async fn subscribed_pair(
    server: &RedisServer,
    name: &str,
) -> (RedisBackend, RedisBackend, LockName) {
    let waiter = backend(&server.url()).await;
    let holder = backend_with(&server.url(), waiter.options().clone()).await;
    let name = LockName::new(name).unwrap();
    // The first wait starts the subscription.
    waiter
        .wait_for_change(&name, Duration::from_millis(1))
        .await;
    until_subscribed(&waiter, true).await;
    (waiter, holder, name)
}

/// Makes the server drop every pub/sub connection; returns how many it dropped.
async fn kill_subscriptions(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_wakes_a_waiter_within_milliseconds() {
    let server = RedisServer::start();
    let (waiter, holder, name) = subscribed_pair(&server, "wake").await;
    let mut latencies = Vec::new();
    for _ in 0..5 {
        latencies.push(wake_latency(&holder, &waiter, &name).await);
    }
    println!("wake-up latencies after release: {latencies:?}");
    assert!(
        latencies.iter().all(|l| *l < Duration::from_millis(50)),
        "a waiter woke too late: {latencies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_poll_while_the_subscription_is_down_and_it_comes_back() {
    let server = RedisServer::start();
    let (waiter, holder, name) = subscribed_pair(&server, "fallback").await;

    // Drop the subscription and keep it from coming back: no new connections are accepted
    // while the existing command connections go on working.
    let mut admin = raw(&server.url()).await;
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut admin)
        .await
        .unwrap();
    let connected = clients.lines().count();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(connected - 1)
        .exec_async(&mut admin)
        .await
        .unwrap();
    let killed = kill_subscriptions(&mut admin).await;
    assert_eq!(killed, 1, "exactly the waiter's subscription");
    until_subscribed(&waiter, false).await;

    // Without notifications, a wait returns after the jittered poll interval (100 ms by
    // default), so a waiter still notices a release promptly.
    let poll = waiter.options().fallback_poll;
    for _ in 0..3 {
        let start = Instant::now();
        waiter.wait_for_change(&name, Duration::from_secs(20)).await;
        let waited = start.elapsed();
        assert!(
            waited >= poll / 2 && waited < poll + Duration::from_millis(500),
            "a fallback wait took {waited:?}"
        );
        assert!(!waiter.is_subscribed());
    }

    // Once connections are accepted again, the subscription comes back by itself and
    // releases wake waiters at once again.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(10_000)
        .exec_async(&mut admin)
        .await
        .unwrap();
    until_subscribed(&waiter, true).await;
    let latency = wake_latency(&holder, &waiter, &name).await;
    assert!(
        latency < Duration::from_millis(50),
        "woke {latency:?} after the release"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_killed_by_the_server_is_replaced() {
    let server = RedisServer::start();
    let (waiter, holder, name) = subscribed_pair(&server, "resubscribe").await;
    let mut admin = raw(&server.url()).await;
    let killed = kill_subscriptions(&mut admin).await;
    assert_eq!(killed, 1);
    // Whether the waiter finds the subscription down (and polls) or already back, it
    // notices the release well within a second.
    let latency = wake_latency(&holder, &waiter, &name).await;
    assert!(
        latency < Duration::from_millis(500),
        "woke {latency:?} after the release"
    );
    until_subscribed(&waiter, true).await;
    let latency = wake_latency(&holder, &waiter, &name).await;
    assert!(
        latency < Duration::from_millis(50),
        "woke {latency:?} after the release"
    );
}
