//! The `Locker` and `LockGuard` over a real store: waiting, cancellation, heartbeats, loss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lock_core::backend_kit::time::monotonic_now;
use lock_core::{LockError, LockOptions, LossReason};

use crate::Target;
use crate::support::{LONG_TTL, SHORT_TTL, SLACK, acquire, assert_held, holder, until_free};

fn opts(ttl: Duration) -> LockOptions {
    LockOptions::default()
        .with_ttl(ttl)
        .with_label("conformance")
}

/// `lock()` with a wait gives up with `Timeout` after the wait, not much later.
pub async fn lock_times_out_within_wait_plus_slack(t: Target) {
    let name = t.name("timeout");
    let held = acquire(t.second(), &name, &holder("blocker"), LONG_TTL).await;
    let wait = Duration::from_millis(500);
    let start = Instant::now();
    let result = t.locker().lock(&name, opts(LONG_TTL).with_wait(wait)).await;
    let elapsed = start.elapsed();
    match result {
        Err(LockError::Timeout { waited, name: n }) => {
            assert_eq!(n, name);
            assert!(waited >= wait, "reported {waited:?}");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        elapsed >= wait && elapsed <= wait + SLACK,
        "gave up after {elapsed:?}"
    );
    assert!(t.second().release(&held).await.unwrap());
}

/// A waiter gets the lock soon after the holder releases it.
pub async fn lock_waits_for_a_release(t: Target) {
    let name = t.name("waiter");
    let held = acquire(t.second(), &name, &holder("first"), LONG_TTL).await;
    let locker = t.locker();
    let n = name.clone();
    let waiter = tokio::spawn(async move {
        let guard = locker
            .lock(&n, opts(LONG_TTL).with_wait(Duration::from_secs(30)))
            .await?;
        Ok::<_, LockError>((guard.fence(), Instant::now(), guard.release().await?))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the waiter must not get a held lock");
    let released_at = Instant::now();
    assert!(t.second().release(&held).await.unwrap());
    let (fence, got_at, released) = waiter.await.unwrap().unwrap();
    assert!(fence > held.fence);
    assert!(released);
    let handoff = got_at - released_at;
    assert!(handoff < SLACK, "handoff took {handoff:?}");
}

/// A `lock()` dropped while it waits, or while its acquire is in flight, leaves nothing held.
pub async fn cancelled_lock_leaves_nothing_held(t: Target) {
    let b = t.backend();
    let name = t.name("cancel");
    // Dropped while waiting for a held lock, which is then released.
    let held = acquire(t.second(), &name, &holder("holder"), LONG_TTL).await;
    let locker = t.locker();
    let n = name.clone();
    let waiting =
        tokio::spawn(async move { locker.lock(&n, opts(LONG_TTL)).await.map(|g| g.fence()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    assert!(t.second().release(&held).await.unwrap());
    until_free(b, &name, SLACK).await;
    // Dropped with the acquire in flight on a free lock: right after its first poll, then
    // later and later (up to 2 ms), to land before, while and after the store answers.
    for i in 0..20 {
        // A very fast store may finish in time; then the guard drops here.
        let give_up = Duration::from_micros(100 * i);
        let outcome = tokio::time::timeout(give_up, t.locker().lock(&name, opts(LONG_TTL))).await;
        drop(outcome);
        until_free(b, &name, SLACK).await;
    }
    // Acquisitions still in flight when their caller gave up release what they got: the
    // lock is free well within the slack, not held until the TTL (60 s), and usable.
    until_free(b, &name, SLACK).await;
    let after = t
        .locker()
        .lock(&name, opts(LONG_TTL).with_wait(SLACK))
        .await
        .expect("the lock is usable after the cancellations");
    assert!(after.release().await.unwrap());
}

/// The guard's background heartbeat keeps the lease alive well past its TTL.
pub async fn guard_keeps_its_lease_alive_past_three_ttls(t: Target) {
    let name = t.name("keepalive");
    let ttl = SHORT_TTL;
    let guard = t.locker().lock(&name, opts(ttl)).await.unwrap();
    tokio::time::sleep(ttl * 3 + ttl / 2).await;
    assert!(guard.is_held(), "lost: {:?}", guard.loss_reason());
    assert_held(t.second(), &name, "the guard heartbeats").await;
    assert_eq!(
        t.second().inspect(&name).await.unwrap().unwrap().fence,
        guard.fence()
    );
    assert!(guard.release().await.unwrap());
    assert!(t.backend().inspect(&name).await.unwrap().is_none());
}

/// `lost()` resolves soon after someone else force-releases the lock.
pub async fn lost_fires_after_a_force_release(t: Target) {
    let name = t.name("lost");
    let ttl = SHORT_TTL;
    let guard = t.locker().lock(&name, opts(ttl)).await.unwrap();
    assert!(t.second().force_release(&name).await.unwrap());
    let start = Instant::now();
    let reason = tokio::time::timeout(ttl + SLACK, guard.lost())
        .await
        .expect("lost() must fire within a TTL of the force-release");
    assert_eq!(reason, LossReason::Revoked);
    assert!(
        start.elapsed() <= ttl / 3 + SLACK,
        "noticed after {:?}",
        start.elapsed()
    );
    assert!(!guard.is_held());
    assert!(!guard.release().await.unwrap());
}

/// `with_lock` cancels its future as soon as the lease is lost, and says so.
pub async fn with_lock_cancels_its_future_on_loss(t: Target) {
    let name = t.name("with-lock");
    let ttl = SHORT_TTL;
    let started = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let locker = t.locker();
    let (n, s, f) = (name.clone(), Arc::clone(&started), Arc::clone(&finished));
    let run = tokio::spawn(async move {
        locker
            .with_lock(&n, opts(ttl), async move {
                s.store(true, Ordering::SeqCst);
                tokio::time::sleep(LONG_TTL).await;
                f.store(true, Ordering::SeqCst);
            })
            .await
    });
    let begin = Instant::now();
    while !started.load(Ordering::SeqCst) {
        assert!(begin.elapsed() < SLACK * 5, "the work never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(t.second().force_release(&name).await.unwrap());
    let out = tokio::time::timeout(ttl + SLACK, run)
        .await
        .expect("with_lock must end on loss")
        .unwrap();
    assert!(matches!(out, Err(LockError::LeaseLost { .. })), "{out:?}");
    assert!(
        !finished.load(Ordering::SeqCst),
        "the work ran to completion after the loss"
    );
}

/// `with_lock` runs the future under the lease and releases it afterwards.
pub async fn with_lock_runs_and_releases(t: Target) {
    let name = t.name("with-lock-ok");
    let b = Arc::clone(t.second());
    let n = name.clone();
    let out = t
        .locker()
        .with_lock_fn(&name, opts(LONG_TTL), |lease| async move {
            let info = b
                .inspect(&n)
                .await
                .unwrap()
                .expect("held while the work runs");
            assert_eq!(info.fence, lease.fence());
            lease.fence()
        })
        .await
        .unwrap();
    assert!(out > 0);
    assert!(
        t.backend().inspect(&name).await.unwrap().is_none(),
        "released afterwards"
    );
}

/// Dropping a guard releases the lease without waiting for the TTL.
pub async fn dropped_guard_releases_its_lease(t: Target) {
    let name = t.name("drop");
    let guard = t.locker().lock(&name, opts(LONG_TTL)).await.unwrap();
    let fence = guard.fence();
    drop(guard);
    until_free(t.backend(), &name, SLACK).await;
    let next = acquire(t.second(), &name, &holder("next"), LONG_TTL).await;
    assert!(next.fence > fence);
    assert!(t.second().release(&next).await.unwrap());
}

/// A backend that notifies releases wakes a waiter at once; any backend's `wait_for_change`
/// returns within its budget.
pub async fn wait_for_change_wakes_on_release(t: Target) {
    let name = t.name("notify");
    let held = acquire(t.second(), &name, &holder("holder"), LONG_TTL).await;
    let b = Arc::clone(t.backend());
    let notifies = b.capabilities().notifies_release;
    let budget = if notifies {
        Duration::from_secs(20)
    } else {
        Duration::from_millis(300)
    };
    let n = name.clone();
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        b.wait_for_change(&n, monotonic_now(), budget).await;
        Instant::now().duration_since(start)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(t.second().release(&held).await.unwrap());
    let waited = tokio::time::timeout(budget + SLACK, waiter)
        .await
        .expect("wait_for_change overran its budget")
        .unwrap();
    if notifies {
        assert!(
            waited < Duration::from_millis(200) + SLACK,
            "not woken by the release: {waited:?}"
        );
    }
}
