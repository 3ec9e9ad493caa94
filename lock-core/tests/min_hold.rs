//! `LockOptions::with_hold_at_least`: a lease released early stays in the store until the
//! hold ends, then is truly released (a waiter is woken at that very instant, not when the
//! kept lease would expire). On Tokio's paused clock, so instants are exact.

use std::sync::Arc;
use std::time::Duration;

use lock_core::memory::MemoryBackend;
use lock_core::{Holder, LockBackend, LockGuard, LockName, LockOptions, Locker};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

const SECOND: Duration = Duration::from_secs(1);

fn setup() -> (Arc<MemoryBackend>, Locker, LockName) {
    let store = Arc::new(MemoryBackend::new());
    let locker = Locker::new(Arc::clone(&store) as Arc<dyn LockBackend>);
    (store, locker, LockName::new("nightly").unwrap())
}

fn opts(ttl: Duration, hold: Duration) -> LockOptions {
    LockOptions::default()
        .with_ttl(ttl)
        .with_hold_at_least(hold)
}

/// A waiter started now: when it got the lock, and its guard.
fn waiter(locker: &Locker, name: &LockName) -> JoinHandle<(Instant, LockGuard)> {
    let (locker, name) = (locker.clone(), name.clone());
    tokio::spawn(async move {
        let guard = locker
            .lock(&name, LockOptions::default().with_ttl(SECOND * 60))
            .await
            .unwrap();
        (Instant::now(), guard)
    })
}

async fn is_held(store: &MemoryBackend, name: &LockName) -> bool {
    store.inspect(name).await.unwrap().is_some()
}

#[tokio::test(start_paused = true)]
async fn a_release_before_the_hold_ends_keeps_the_lease_until_then() {
    let (store, locker, name) = setup();
    let t0 = Instant::now();
    // TTL 10 s, so the kept lease would expire 1 s (the margin) after the hold: the waiter
    // getting the lock at exactly 3 s shows the lease was released, not left to expire.
    let guard = locker
        .lock(&name, opts(SECOND * 10, SECOND * 3))
        .await
        .unwrap();
    sleep_until(t0 + SECOND).await;
    assert!(guard.release().await.unwrap(), "it was held");
    assert_eq!(
        Instant::now(),
        t0 + SECOND,
        "release does not wait for the hold"
    );
    assert!(is_held(&store, &name).await, "held after an early release");
    let waiter = waiter(&locker, &name);
    sleep_until(t0 + SECOND * 3 - Duration::from_millis(1)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter got the lock before the hold ended"
    );
    let (got_at, next) = waiter.await.unwrap();
    assert_eq!(
        got_at,
        t0 + SECOND * 3,
        "released exactly when the hold ended"
    );
    assert!(next.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_hold_longer_than_the_ttl_keeps_the_lease_past_it() {
    let (store, locker, name) = setup();
    let t0 = Instant::now();
    let guard = locker.lock(&name, opts(SECOND, SECOND * 10)).await.unwrap();
    sleep_until(t0 + SECOND / 2).await;
    assert!(guard.release().await.unwrap());
    let waiter = waiter(&locker, &name);
    // Nine TTLs after the last heartbeat, and no heartbeats since the release.
    sleep_until(t0 + SECOND * 10 - Duration::from_millis(1)).await;
    assert!(is_held(&store, &name).await);
    assert!(!waiter.is_finished());
    let (got_at, next) = waiter.await.unwrap();
    assert_eq!(got_at, t0 + SECOND * 10);
    assert!(next.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_guard_holds_until_the_hold_ends() {
    let (_store, locker, name) = setup();
    let t0 = Instant::now();
    let guard = locker
        .lock(&name, opts(SECOND * 2, SECOND * 5))
        .await
        .unwrap();
    drop(guard);
    let (got_at, next) = waiter(&locker, &name).await.unwrap();
    assert_eq!(got_at, t0 + SECOND * 5);
    assert!(next.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn with_lock_finishing_early_holds_until_the_hold_ends() {
    let (_store, locker, name) = setup();
    let t0 = Instant::now();
    let out = locker
        .with_lock(&name, opts(SECOND * 2, SECOND * 4), async { 7 })
        .await
        .unwrap();
    assert_eq!(out, 7);
    assert_eq!(
        Instant::now(),
        t0,
        "with_lock returns when the work is done"
    );
    let (got_at, next) = waiter(&locker, &name).await.unwrap();
    assert_eq!(got_at, t0 + SECOND * 4);
    assert!(next.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_release_after_the_hold_frees_at_once() {
    let (store, locker, name) = setup();
    let t0 = Instant::now();
    let guard = locker.lock(&name, opts(SECOND, SECOND * 2)).await.unwrap();
    sleep_until(t0 + SECOND * 2).await;
    assert!(guard.release().await.unwrap());
    assert!(!is_held(&store, &name).await, "free at once");
}

#[tokio::test(start_paused = true)]
async fn a_release_after_a_loss_says_false_and_holds_nothing() {
    let (store, locker, name) = setup();
    let guard = locker.lock(&name, opts(SECOND, SECOND * 5)).await.unwrap();
    assert!(store.force_release(&name).await.unwrap());
    assert!(!guard.release().await.unwrap(), "already lost");
    assert!(!is_held(&store, &name).await, "nothing was renewed");
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_during_the_hold_leaves_the_next_holder_alone() {
    let (store, locker, name) = setup();
    let t0 = Instant::now();
    let guard = locker.lock(&name, opts(SECOND, SECOND * 5)).await.unwrap();
    let fence = guard.fence();
    assert!(guard.release().await.unwrap());
    sleep_until(t0 + SECOND).await;
    assert!(store.force_release(&name).await.unwrap());
    let next = store
        .try_acquire(&name, &Holder::current("next"), SECOND * 60)
        .await
        .unwrap()
        .expect("free after the force-release");
    assert!(next.fence > fence);
    sleep_until(t0 + SECOND * 6).await;
    let info = store.inspect(&name).await.unwrap().expect("still held");
    assert_eq!(
        info.fence, next.fence,
        "the end of the hold freed the next holder"
    );
    assert!(store.release(&next).await.unwrap());
}

/// Without a runtime to release it (the process is gone), the store's TTL ends the hold:
/// never before it, and at most the margin (a tenth of the TTL) after it. Real time.
#[test]
fn when_the_process_is_gone_the_ttl_ends_the_hold() {
    let store = Arc::new(MemoryBackend::new());
    let name = LockName::new("orphaned").unwrap();
    let (ttl, hold) = (SECOND, Duration::from_millis(1500));
    let holder = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    holder.block_on(async {
        let locker = Locker::new(Arc::clone(&store) as Arc<dyn LockBackend>);
        let guard = locker.lock(&name, opts(ttl, hold)).await.unwrap();
        assert!(guard.release().await.unwrap());
    });
    // The holder's runtime, and the task that would release at the end of the hold, go.
    drop(holder);
    let probe = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    probe.block_on(async {
        assert!(is_held(&store, &name).await, "held after the process went");
        while is_held(&store, &name).await {
            let waited = start.elapsed();
            // Slack: generous next to the 1 s TTL, for a loaded machine.
            assert!(
                waited < hold + ttl / 10 + SECOND,
                "still held after {waited:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let freed = start.elapsed();
        assert!(
            freed >= hold,
            "freed after {freed:?}, before the hold of {hold:?} ended"
        );
    });
}
