//! Minimum hold (`LockOptions::with_hold_at_least`): a lease released or dropped early stays
//! held until the hold ends, then is free within the slack; one released after it is free
//! at once.

use std::time::{Duration, Instant};

use lock_core::{LockGuard, LockName, LockOptions};

use crate::Target;
use crate::support::{LONG_TTL, SHORT_TTL, SLACK, acquire, holder};

fn opts(ttl: Duration, hold: Duration) -> LockOptions {
    LockOptions::default()
        .with_ttl(ttl)
        .with_hold_at_least(hold)
        .with_label("conformance")
}

/// A guard acquired with `opts`, and the instants just before and after the acquisition
/// (the hold starts between the two).
async fn lock(t: &Target, name: &LockName, opts: &LockOptions) -> (Instant, LockGuard, Instant) {
    let before = Instant::now();
    let guard = t
        .locker()
        .lock(name, opts)
        .await
        .unwrap_or_else(|e| panic!("acquiring {name:?} failed: {e}"));
    (before, guard, Instant::now())
}

/// Right after an early release: another contender must get `None`.
async fn assert_still_held(t: &Target, name: &LockName, before: Instant, hold: Duration) {
    let intruder = holder("intruder");
    let probe = t.second().try_acquire(name, &intruder, LONG_TTL).await;
    let at = before.elapsed();
    match probe {
        Ok(None) => {}
        Ok(Some(lease)) => {
            let _ = t.second().release(&lease).await;
            panic!(
                "{name:?} was free {at:?} after the acquisition began, under a hold of {hold:?}"
            );
        }
        Err(e) => panic!("probing {name:?} failed: {e}"),
    }
}

/// Watches `name` until it is free: it must not be free before `before + hold`, and must be
/// by `after + hold + slack`. Returns when it was first seen free.
async fn assert_freed_when_the_hold_ends(
    t: &Target,
    name: &LockName,
    (before, after): (Instant, Instant),
    hold: Duration,
) -> Instant {
    let latest = after + hold + SLACK;
    loop {
        let probe = t.second().inspect(name).await;
        let seen = Instant::now();
        match probe {
            Ok(Some(_)) if seen < latest => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Some(info)) => panic!(
                "{name:?} still held {:?} after the hold of {hold:?} ended: {info:?}",
                seen - after - hold
            ),
            Ok(None) => {
                assert!(
                    seen >= before + hold,
                    "{name:?} was free {:?} after the acquisition began, under a hold of {hold:?}",
                    seen - before
                );
                return seen;
            }
            Err(e) => panic!("inspecting {name:?} failed: {e}"),
        }
    }
}

/// A lease released before its minimum hold ends (here, a hold of two TTLs) stays held
/// (another contender gets `None`) until the hold ends, though heartbeats stopped; then it
/// is free within the slack, and the next holder gets a higher fence.
pub async fn an_early_release_holds_until_the_minimum_hold_ends(t: Target) {
    let name = t.name("min-hold-release");
    let hold = SHORT_TTL * 2;
    let (before, guard, after) = lock(&t, &name, &opts(SHORT_TTL, hold)).await;
    let fence = guard.fence();
    assert!(guard.release().await.unwrap(), "the lease was held");
    assert_still_held(&t, &name, before, hold).await;
    assert_freed_when_the_hold_ends(&t, &name, (before, after), hold).await;
    let next = acquire(t.second(), &name, &holder("next"), LONG_TTL).await;
    assert!(next.fence > fence, "fence {} after {fence}", next.fence);
    assert!(t.second().release(&next).await.unwrap());
}

/// A guard dropped before its minimum hold ends (here shorter than the TTL) still holds the
/// lease until the hold ends, then frees it within the slack.
pub async fn a_dropped_guard_holds_until_the_minimum_hold_ends(t: Target) {
    let name = t.name("min-hold-drop");
    let hold = SHORT_TTL;
    let (before, guard, after) = lock(&t, &name, &opts(LONG_TTL, hold)).await;
    drop(guard);
    assert_still_held(&t, &name, before, hold).await;
    assert_freed_when_the_hold_ends(&t, &name, (before, after), hold).await;
}

/// A release after the minimum hold has passed frees the lease at once.
pub async fn a_release_after_the_minimum_hold_frees_at_once(t: Target) {
    let name = t.name("min-hold-late");
    let hold = Duration::from_millis(300);
    let (_, guard, after) = lock(&t, &name, &opts(SHORT_TTL, hold)).await;
    crate::support::sleep_until(after + hold + Duration::from_millis(100)).await;
    let fence = guard.fence();
    assert!(guard.release().await.unwrap(), "the lease was held");
    assert!(
        t.second().inspect(&name).await.unwrap().is_none(),
        "still held after a release past the minimum hold"
    );
    let next = acquire(t.second(), &name, &holder("next"), LONG_TTL).await;
    assert!(next.fence > fence);
    assert!(t.second().release(&next).await.unwrap());
}
