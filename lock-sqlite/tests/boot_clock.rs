//! Expiry is judged on the host's boot clock, stored with the boot id: a wall-clock step
//! (NTP, a VM resume, a process under `faketime`) neither frees a live lease nor stops its
//! holder's heartbeats, and a lease recorded under another boot is free at once. Each
//! backend gets its own `SteppedClock` through the clock hook, so the system clock is never
//! touched; shown expiries stay wall-clock times of the clock that shows them.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{DRIVERS, LONG, holder};
use lock_core::backend_kit::clock::{BootId, HostClock, SteppedClock};
use lock_core::{LockBackend, LockError, LockName};

/// Far more than the TTL, either way.
const STEP: Duration = Duration::from_secs(120);
const TTL: Duration = Duration::from_secs(2);

/// Asserts that `shown` is a wall-clock time on `clock` at most the TTL ahead of it (plus
/// the millisecond the stored expiry is rounded up to, and a little for the two clocks'
/// readings).
fn assert_shown_within_ttl(shown: SystemTime, clock: &dyn HostClock, context: &str) {
    let now = clock.wall();
    assert!(
        shown > now && shown <= now + TTL + Duration::from_millis(5),
        "{context}: shown {shown:?}, the clock reads {now:?}"
    );
}

async fn rival_gets_nothing(rival: &Arc<dyn LockBackend>, name: &LockName, context: &str) {
    let taken = rival
        .try_acquire(name, &holder("rival"), LONG)
        .await
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    assert!(taken.is_none(), "{context}: a second holder: {taken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_steps_neither_free_a_live_lease_nor_stop_its_heartbeats() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steps.db");
        let holder_clock = Arc::new(SteppedClock::new());
        let rival_clock = Arc::new(SteppedClock::new());
        let holder_store = driver
            .open_with_clock(&path, holder_clock.clone())
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        let rival = driver
            .open_with_clock(&path, rival_clock.clone())
            .await
            .unwrap();
        let plain = driver.open(&path).await.unwrap();
        let name = LockName::new("stepped").unwrap();
        let mut lease = holder_store
            .try_acquire(&name, &holder("holder"), TTL)
            .await
            .unwrap()
            .unwrap();

        // The rival's wall clock jumps two minutes ahead (as under `faketime -f +120s`):
        // the lease is not free, and the rival shows its expiry on its own wall clock.
        rival_clock.step_wall(STEP, true);
        rival_gets_nothing(&rival, &name, &format!("{driver:?}: rival ahead")).await;
        let info = rival.inspect(&name).await.unwrap().expect("held");
        assert_shown_within_ttl(info.expires_at, &*rival_clock, &format!("{driver:?}"));

        // The holder's wall clock steps back, then forward, then back again, each time by
        // more than the TTL, over twice the TTL: every heartbeat renews the lease, and
        // nobody else gets it, whichever way the rival's clock stepped.
        let rounds = 4;
        for round in 0..rounds {
            let context = format!("{driver:?}, round {round}");
            tokio::time::sleep(TTL / 2).await;
            holder_clock.step_wall(STEP, round % 2 == 1);
            rival_clock.step_wall(STEP * 2, round % 2 == 1);
            lease = holder_store
                .heartbeat(&lease, TTL)
                .await
                .unwrap_or_else(|e| panic!("{context}: heartbeat: {e}"));
            assert_shown_within_ttl(lease.expires_at, &*holder_clock, &context);
            rival_gets_nothing(&rival, &name, &context).await;
        }
        let last_beat = Instant::now();
        // A client on the system's clocks shows a sensible wall-clock time.
        let info = plain.inspect(&name).await.unwrap().expect("held");
        assert_shown_within_ttl(
            info.expires_at,
            &lock_core::backend_kit::clock::SystemClock,
            "plain",
        );
        assert_eq!(info.fence, lease.fence);

        // The holder stops renewing: the lease is not free before its real TTL...
        tokio::time::sleep(TTL / 2).await;
        rival_gets_nothing(&rival, &name, &format!("{driver:?}: after the last beat")).await;
        // ...and is free after it, whatever the clocks read.
        let expired = last_beat + TTL + Duration::from_millis(500);
        tokio::time::sleep(expired.saturating_duration_since(Instant::now())).await;
        let next = rival
            .try_acquire(&name, &holder("rival"), LONG)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{driver:?}: still held after its TTL"));
        assert!(next.fence > lease.fence, "{driver:?}");
        match holder_store.heartbeat(&lease, TTL).await {
            Err(LockError::LeaseLost { .. }) => {}
            other => panic!("{driver:?}: the expired lease renewed: {other:?}"),
        }
        assert!(rival.release(&next).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_from_another_boot_is_free_at_once_and_one_from_this_boot_is_not() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boots.db");
        let this_boot = driver.open(&path).await.unwrap();
        let same_boot = driver.open(&path).await.unwrap();
        let rebooted_clock = Arc::new(SteppedClock::new());
        rebooted_clock.set_boot_id(BootId::new("another-boot"));
        let rebooted = driver
            .open_with_clock(&path, rebooted_clock)
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        let name = LockName::new("boots").unwrap();

        // A lease from this boot is live for another client of this boot...
        let lease = this_boot
            .try_acquire(&name, &holder("this boot"), LONG)
            .await
            .unwrap()
            .unwrap();
        rival_gets_nothing(&same_boot, &name, &format!("{driver:?}: same boot")).await;
        // ...and free at once for one that runs in another boot (its holder died with its
        // boot), with a higher fence.
        assert!(
            rebooted.inspect(&name).await.unwrap().is_none(),
            "{driver:?}"
        );
        let after_reboot = rebooted
            .try_acquire(&name, &holder("after reboot"), LONG)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{driver:?}: a lease of another boot is held"));
        assert!(after_reboot.fence > lease.fence, "{driver:?}");
        match this_boot.heartbeat(&lease, LONG).await {
            Err(LockError::LeaseLost { .. }) => {}
            other => panic!("{driver:?}: a lease taken over renewed: {other:?}"),
        }
        // The same holds the other way round, and for every permit of a semaphore.
        rival_gets_nothing(&rebooted, &name, &format!("{driver:?}: rebooted")).await;
        let back = same_boot
            .try_acquire(&name, &holder("back"), LONG)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{driver:?}: a lease of another boot is held"));
        assert!(back.fence > after_reboot.fence, "{driver:?}");
        assert!(same_boot.release(&back).await.unwrap());

        let semaphore = LockName::new("boots-semaphore").unwrap();
        for i in 0..2 {
            this_boot
                .try_acquire_permit(&semaphore, &holder(&format!("p{i}")), LONG, 2)
                .await
                .unwrap()
                .unwrap();
        }
        let third = same_boot
            .try_acquire_permit(&semaphore, &holder("third"), LONG, 2)
            .await
            .unwrap();
        assert!(third.is_none(), "{driver:?}: both permits are live here");
        let permit = rebooted
            .try_acquire_permit(&semaphore, &holder("after reboot"), LONG, 3)
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: another boot's limit does not count: {e}"))
            .expect("every permit of another boot is free");
        assert_eq!(
            rebooted.inspect_all(&semaphore).await.unwrap().len(),
            1,
            "{driver:?}"
        );
        assert!(rebooted.release(&permit).await.unwrap());
    }
}
