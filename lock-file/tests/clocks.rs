//! Expiry is judged on the host's boot clock (`CLOCK_BOOTTIME`), stored with its boot id:
//! a wall-clock step, however large, neither frees a live lease early nor stops its
//! heartbeats, and a lease recorded in another boot is free at once. Each case plays the
//! clocks with a `SteppedClock`, never touching the system clock.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lock_core::backend_kit::clock::{BootId, HostClock, SteppedClock, SystemClock};
use lock_core::{Holder, LockBackend, LockError};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, name};

/// A backend on `dir` whose host clocks are `clock`.
async fn open(dir: &Path, clock: &Arc<SteppedClock>) -> FileBackend {
    FileBackend::connect_with(
        FileOptions::new(dir)
            .with_create_if_missing(false)
            .with_clock(Arc::clone(clock) as _),
    )
    .await
    .expect("open the lock directory")
}

/// How far `a` is from `b`, either way.
fn apart(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or_else(|e| e.duration())
}

/// The clocks jump by ten TTLs, forward and back, on the holder's side and on a
/// contender's, while a lease is held: the contender never gets it before the real TTL ran
/// out, the holder's heartbeats keep working, and the times shown are on the wall clock of
/// whoever looks. Once the holder stops heartbeating, the lease is free after the TTL, with
/// a higher fence although the contender's wall clock is behind.
#[tokio::test]
async fn wall_clock_steps_past_the_ttl_neither_free_a_lease_nor_stop_its_heartbeats() {
    const TTL: Duration = Duration::from_secs(4);
    const STEP: Duration = Duration::from_secs(40);
    let dir = tempfile::tempdir().unwrap();
    let (holder_clock, contender_clock) =
        (Arc::new(SteppedClock::new()), Arc::new(SteppedClock::new()));
    let holder = open(dir.path(), &holder_clock).await;
    let contender = open(dir.path(), &contender_clock).await;
    let n = name("stepped");

    let granted = Instant::now();
    let mut lease = holder
        .try_acquire(&n, &Holder::current("holder"), TTL)
        .await
        .unwrap()
        .expect("free");
    assert!(apart(lease.expires_at, SystemTime::now() + TTL) < Duration::from_secs(1));

    // As `faketime -f +40s` would: far past the expiry on the wall clock.
    contender_clock.step_wall(STEP, true);
    let refused = contender
        .try_acquire(&n, &Holder::current("ahead"), LONG_TTL)
        .await
        .unwrap();
    assert!(
        refused.is_none(),
        "a wall clock 40 s ahead took over a live lease"
    );
    let shown = contender.inspect(&n).await.unwrap().expect("still held");
    assert_eq!(shown.fence, lease.fence);
    let expected = contender_clock.wall() + TTL;
    assert!(
        apart(shown.expires_at, expected) < Duration::from_secs(1),
        "shown on the stepped wall clock: {:?} vs {expected:?}",
        shown.expires_at
    );

    // And 40 s behind the real time.
    contender_clock.step_wall(STEP * 2, false);
    assert!(
        contender
            .try_acquire(&n, &Holder::current("behind"), LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );

    // The holder's own clock steps both ways: its heartbeats keep the lease.
    let mut renewed_at = granted;
    for forward in [false, true, true] {
        holder_clock.step_wall(STEP, forward);
        renewed_at = Instant::now();
        lease = holder
            .heartbeat(&lease, TTL)
            .await
            .expect("heartbeat after a step");
        let expected = holder_clock.wall() + TTL;
        assert!(
            apart(lease.expires_at, expected) < Duration::from_secs(1),
            "{:?} vs {expected:?}",
            lease.expires_at
        );
        assert!(
            contender
                .try_acquire(&n, &Holder::current("meanwhile"), LONG_TTL)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(
        renewed_at.elapsed() < TTL,
        "the checks above must run within one TTL of the last renewal to mean anything"
    );

    // No more heartbeats: free once the TTL has run out on the boot clock.
    tokio::time::sleep_until((renewed_at + TTL + Duration::from_millis(500)).into()).await;
    let next = contender
        .try_acquire(&n, &Holder::current("next"), LONG_TTL)
        .await
        .unwrap()
        .expect("free after the TTL");
    assert!(
        next.fence > lease.fence,
        "{} after {}",
        next.fence,
        lease.fence
    );
    match holder.heartbeat(&lease, TTL).await {
        Err(LockError::LeaseLost { .. }) => {}
        other => panic!("heartbeat after expiry and takeover: {other:?}"),
    }
}

/// A lease recorded in another boot of this host is free at once (its holder died with
/// that boot), and the next fence is still higher; a lease recorded in this boot is not.
#[tokio::test]
async fn a_lease_from_another_boot_is_free_at_once_and_one_from_this_boot_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let before_reboot = Arc::new(SteppedClock::new());
    before_reboot.set_boot_id(BootId::new("a-boot-before-this-one"));
    let old = open(dir.path(), &before_reboot).await;
    let this_boot = Arc::new(SteppedClock::new());
    this_boot.set_boot_id(SystemClock.boot_id());
    let now = open(dir.path(), &this_boot).await;
    let n = name("rebooted");

    let dead = old
        .try_acquire(&n, &Holder::current("died with its boot"), LONG_TTL)
        .await
        .unwrap()
        .expect("free");
    assert!(
        old.inspect(&n).await.unwrap().is_some(),
        "live in its own boot"
    );
    assert!(
        now.inspect(&n).await.unwrap().is_none(),
        "free in this boot"
    );
    let live = now
        .try_acquire(&n, &Holder::current("this boot"), LONG_TTL)
        .await
        .unwrap()
        .expect("another boot's lease is free at once");
    assert!(
        live.fence > dead.fence,
        "{} after {}",
        live.fence,
        dead.fence
    );

    // The same holder's lease, seen from this boot by another client: not free.
    let system = FileBackend::connect_with(FileOptions::new(dir.path()))
        .await
        .unwrap();
    assert!(
        system
            .try_acquire(&n, &Holder::current("intruder"), LONG_TTL)
            .await
            .unwrap()
            .is_none(),
        "a lease of this boot is live until its TTL"
    );
    assert_eq!(system.inspect(&n).await.unwrap().unwrap().fence, live.fence);

    // The dead boot's holder cannot touch it.
    match old.heartbeat(&dead, LONG_TTL).await {
        Err(LockError::LeaseLost { .. }) => {}
        other => panic!("heartbeat from a dead boot: {other:?}"),
    }
    assert!(!old.release(&dead).await.unwrap());
    assert!(now.release(&live).await.unwrap());
}
