//! Faults against private `redis-server` processes: killed, restarted without persistence,
//! paused past the TTL, unreachable; and two key prefixes on one server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{FAIL_FAST, Seen, Spy, assert_unavailable_within, backend, backend_with};
use lock_core::{Holder, LockBackend, LockError, LockName, LockOptions, Locker, LossReason};
use lock_redis::RedisBackend;
use lock_testkit::redis::RedisServer;

fn name(s: &str) -> LockName {
    LockName::new(s).unwrap()
}

const LONG: Duration = Duration::from_secs(60);

/// How late after its deadline a guard may report its loss: it wakes on a timer at the
/// deadline, so this is scheduling delay only, on a loaded machine. (The property that
/// matters, loss noticed before the store's expiry, is asserted separately.)
const LOSS_SLACK: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_gives_unavailable_and_the_guard_is_lost_before_its_deadline() {
    let mut server = RedisServer::start();
    let b = backend(&server.url()).await;
    let ttl = Duration::from_secs(3);
    let (spy, mut seen) = Spy::new(b.clone());
    let locker = Locker::new(Arc::new(spy));
    let guard = locker
        .lock("killed", LockOptions::default().with_ttl(ttl))
        .await
        .unwrap();
    let lease = guard.lease();
    server.kill();
    // Only what the guard's heartbeats get from now on counts.
    while seen.try_recv().is_ok() {}

    assert_unavailable_within("heartbeat", FAIL_FAST, b.heartbeat(&lease, ttl)).await;
    assert_unavailable_within("heartbeat again", FAIL_FAST, b.heartbeat(&lease, ttl)).await;
    assert_unavailable_within("inspect", FAIL_FAST, b.inspect(&lease.name)).await;

    let reason = tokio::time::timeout(ttl + Duration::from_secs(2), guard.lost())
        .await
        .expect("the guard must report the loss");
    let noticed = Instant::now();
    let noticed_wall = SystemTime::now();
    assert_eq!(reason, LossReason::DeadlinePassed);
    let deadline = guard.deadline();
    let late = noticed.saturating_duration_since(deadline);
    println!("loss reported {late:?} after the deadline");
    assert!(noticed >= deadline, "reported lost before its deadline");
    assert!(
        late <= LOSS_SLACK,
        "reported lost {late:?} after its deadline"
    );
    // Before the moment the server would have expired the lease (the deadline keeps a
    // margin of a tenth of the TTL), so nobody else could have held it yet.
    assert!(
        noticed_wall < lease.expires_at,
        "reported lost {:?} after the lease expired",
        noticed_wall
            .duration_since(lease.expires_at)
            .unwrap_or_default()
    );
    assert!(!guard.is_held());

    // The guard's own heartbeats since the kill (one per interval, retried until the
    // deadline) all failed as Unavailable: none was taken for a lost lease or succeeded.
    let mut failures = Vec::new();
    while let Ok(event) = seen.try_recv() {
        match event {
            Seen::HeartbeatFailed { unavailable, error } => {
                assert!(unavailable, "a guard heartbeat failed with {error}");
                failures.push(error);
            }
            other => panic!("with the server dead, a guard heartbeat gave {other:?}"),
        }
    }
    assert!(!failures.is_empty(), "the guard never tried to heartbeat");
    println!("{} guard heartbeats failed as Unavailable", failures.len());
    assert_unavailable_within("release", FAIL_FAST, guard.release()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_server_is_recovered_by_the_same_backend_and_fences_keep_rising() {
    let mut server = RedisServer::start();
    let b = backend(&server.url()).await;
    let n = name("restart");
    let first = b
        .try_acquire(&n, &Holder::current("a"), LONG)
        .await
        .unwrap()
        .unwrap();
    assert!(b.release(&first).await.unwrap());
    let held = b
        .try_acquire(&n, &Holder::current("b"), LONG)
        .await
        .unwrap()
        .unwrap();
    assert!(held.fence > first.fence);

    let before_restart_us = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap();
    server.restart(); // no persistence: every key, the fence counter included, is gone

    // The same value reconnects by itself; until it has, failures are Unavailable.
    let start = Instant::now();
    let after = loop {
        match b.try_acquire(&n, &Holder::current("c"), LONG).await {
            Ok(Some(lease)) => break lease,
            Ok(None) => panic!("the restarted server cannot hold the old lease"),
            Err(LockError::Unavailable { .. }) if start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no recovery after the restart: {e}"),
        }
    };
    assert!(
        after.fence > held.fence,
        "fence {} after the restart is not above {}",
        after.fence,
        held.fence
    );
    assert!(
        after.fence > before_restart_us,
        "the counter was not seeded from the server's clock: {}",
        after.fence
    );
    assert!(matches!(
        b.heartbeat(&held, LONG).await,
        Err(LockError::LeaseLost { .. })
    ));
    assert!(!b.release(&held).await.unwrap());
    let renewed = b.heartbeat(&after, LONG).await.unwrap();
    assert!(b.release(&renewed).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_past_the_ttl_never_reports_a_false_success() {
    let server = RedisServer::start();
    let b = backend(&server.url()).await;
    let other = backend_with(&server.url(), b.key_prefix()).await;
    let ttl = Duration::from_secs(1);
    let n = name("paused");
    let lease = b
        .try_acquire(&n, &Holder::current("held"), ttl)
        .await
        .unwrap()
        .unwrap();
    let guard = Locker::new(Arc::new(b.clone()))
        .lock("paused-guard", LockOptions::default().with_ttl(ttl))
        .await
        .unwrap();

    server.pause();
    let paused_at = Instant::now();
    // Nothing may succeed while the server is frozen.
    assert_unavailable_within("heartbeat", FAIL_FAST, b.heartbeat(&lease, ttl)).await;
    assert_unavailable_within(
        "acquire",
        FAIL_FAST,
        other.try_acquire(&n, &Holder::current("other"), LONG),
    )
    .await;
    assert_unavailable_within("inspect", FAIL_FAST, other.inspect(&n)).await;
    assert_unavailable_within("release", FAIL_FAST, b.release(&lease)).await;
    assert!(paused_at.elapsed() > ttl, "the pause must outlast the TTL");
    let reason = tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("the guard must report the loss while the server is paused");
    assert_eq!(reason, LossReason::DeadlinePassed);
    server.resume();

    // Right after the pause the lease is gone on the server too: a heartbeat must not
    // revive it, and a release must not claim it.
    let resumed = Instant::now();
    let beat = loop {
        match b.heartbeat(&lease, LONG).await {
            Err(LockError::Unavailable { .. }) if resumed.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other,
        }
    };
    assert!(matches!(beat, Err(LockError::LeaseLost { .. })), "{beat:?}");
    assert!(!b.release(&lease).await.unwrap());
    assert!(!guard.is_held());
    // Whoever holds it now (maybe the acquire that was queued during the pause, with a
    // token nobody has), it is not the old holder, and the next fence is higher.
    if let Some(info) = other.inspect(&n).await.unwrap() {
        assert_eq!(info.label, "other");
        assert!(other.force_release(&n).await.unwrap());
    }
    let next = other
        .try_acquire(&n, &Holder::current("next"), LONG)
        .await
        .unwrap()
        .unwrap();
    assert!(next.fence > lease.fence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_do_not_interfere() {
    let server = RedisServer::start();
    let a = backend_with(&server.url(), "app-a:").await;
    let b = backend_with(&server.url(), "app-b:").await;
    let n = name("shared-name");
    let la = a
        .try_acquire(&n, &Holder::current("a"), LONG)
        .await
        .unwrap()
        .unwrap();
    let lb = b
        .try_acquire(&n, &Holder::current("b"), LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.inspect(&n).await.unwrap().unwrap().label, "a");
    assert_eq!(b.inspect(&n).await.unwrap().unwrap().label, "b");
    assert_eq!(a.list("").await.unwrap().len(), 1);

    // A waiter under prefix b is not woken by a release under prefix a. (Its first wait
    // starts its subscription; a wait that began before the subscription was up returns
    // when it comes up, so the measured wait starts once it is.)
    b.wait_for_change(
        &n,
        lock_core::backend_kit::time::monotonic_now(),
        Duration::from_millis(1),
    )
    .await;
    let subscribed = Instant::now();
    while !b.is_subscribed() {
        assert!(
            subscribed.elapsed() < Duration::from_secs(5),
            "no subscription"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiter = {
        let b = b.clone();
        let n = n.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            b.wait_for_change(
                &n,
                lock_core::backend_kit::time::monotonic_now(),
                Duration::from_millis(800),
            )
            .await;
            start.elapsed()
        })
    };
    assert!(a.release(&la).await.unwrap());
    assert!(a.force_release(&n).await.is_ok_and(|freed| !freed));
    let waited = waiter.await.unwrap();
    assert!(
        waited >= Duration::from_millis(700),
        "woken by the other prefix after {waited:?}"
    );

    assert!(a.inspect(&n).await.unwrap().is_none());
    assert_eq!(b.inspect(&n).await.unwrap().unwrap().fence, lb.fence);
    assert!(b.release(&lb).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_gives_unavailable_within_two_seconds() {
    // Nothing listens: connect fails fast.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert_unavailable_within(
        "connect to a closed port",
        FAIL_FAST,
        RedisBackend::connect(&format!("redis://127.0.0.1:{port}")),
    )
    .await;

    // A frozen server accepts TCP connections but never answers.
    let server = RedisServer::start();
    let b = backend(&server.url()).await;
    let n = name("frozen");
    server.pause();
    assert_unavailable_within(
        "connect to a paused server",
        FAIL_FAST,
        RedisBackend::connect(&server.url()),
    )
    .await;
    assert_unavailable_within(
        "acquire on a paused server",
        FAIL_FAST,
        b.try_acquire(&n, &Holder::current("x"), LONG),
    )
    .await;
    assert_unavailable_within("list on a paused server", FAIL_FAST, b.list("")).await;
    server.resume();
    let start = Instant::now();
    loop {
        match b.inspect(&n).await {
            Ok(_) => break,
            Err(LockError::Unavailable { .. }) if start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("no recovery after the pause: {e}"),
        }
    }
}
