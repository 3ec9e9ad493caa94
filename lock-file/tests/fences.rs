//! Hybrid fences (`max(counter + 1, wall clock in µs)`): a lease file that lost its latest
//! writes never makes a fence be issued twice, a wall clock that steps back never makes
//! fences go back, and a counter beyond 2^53 is damage.

mod support;

use std::sync::Arc;
use std::time::Duration;

use lock_core::backend_kit::clock::SteppedClock;
use lock_core::backend_kit::fence::MAX_FENCE;
use lock_core::{Holder, LockBackend, LockError};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, acquire, name, snapshot_lease_files, write_back};

#[tokio::test]
async fn a_lease_file_put_back_from_a_backup_never_reissues_a_fence() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("restored");
    let f1 = acquire(&backend, &n, "f1").await;
    assert!(backend.release(&f1).await.unwrap());
    let backup = snapshot_lease_files(backend.dir());
    assert_eq!(backup.len(), 1, "{backup:?}");
    let f2 = acquire(&backend, &n, "f2").await;
    assert!(backend.release(&f2).await.unwrap());
    let f3 = acquire(&backend, &n, "f3").await;
    // f3 is still held when the old bytes come back: that lease is lost with them.
    write_back(backend.dir(), &backup);
    assert!(
        backend.inspect(&n).await.unwrap().is_none(),
        "the restored file is the free one of after f1"
    );
    let f4 = acquire(&backend, &n, "f4").await;
    assert!(
        f1.fence < f2.fence && f2.fence < f3.fence && f3.fence < f4.fence,
        "a fence was reissued after the file was restored: {} {} {} then {}",
        f1.fence,
        f2.fence,
        f3.fence,
        f4.fence
    );
}

/// The wall clock steps back an hour, twice, between grants (and another client's clock is
/// right): fences still rise, by the counter, until the clock catches up.
#[tokio::test]
async fn fences_rise_when_the_wall_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SteppedClock::new());
    let stepped = FileBackend::connect_with(
        FileOptions::new(dir.path())
            .with_create_if_missing(false)
            .with_clock(Arc::clone(&clock) as _),
    )
    .await
    .unwrap();
    let right =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("clock-back");
    let mut fences = Vec::new();
    for round in 0..2 {
        let lease = acquire(&right, &n, &format!("right-{round}")).await;
        fences.push(lease.fence);
        assert!(right.release(&lease).await.unwrap());
        clock.step_wall(Duration::from_secs(3600), false);
        for i in 0..3 {
            let lease = acquire(&stepped, &n, &format!("behind-{round}-{i}")).await;
            fences.push(lease.fence);
            assert!(stepped.release(&lease).await.unwrap());
        }
    }
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences must rise whatever the wall clock does: {fences:?}"
    );
    assert!(
        fences[1..4].windows(2).all(|w| w[1] == w[0] + 1),
        "an hour behind, the counter decides: {fences:?}"
    );
}

/// A fence at or above 2^53 is never issued, so a record holding one is `Corrupt`, and
/// `force_release` recovers it: the next fence is from the wall clock again.
#[tokio::test]
async fn a_fence_beyond_2_pow_53_is_corrupt_and_force_release_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("too-far");
    let first = acquire(&backend, &n, "first").await;
    assert!(backend.release(&first).await.unwrap());
    let path = backend.lease_file(&n);
    let good = std::fs::read_to_string(&path).unwrap();
    let counter = format!("\"fence\":{},", first.fence);
    assert!(good.contains(&counter), "{good}");
    for beyond in [MAX_FENCE + 1, u64::MAX] {
        std::fs::write(
            &path,
            good.replace(&counter, &format!("\"fence\":{beyond},")),
        )
        .unwrap();
        match backend
            .try_acquire(&n, &Holder::current("x"), LONG_TTL)
            .await
        {
            Err(LockError::Corrupt { detail, .. }) => {
                assert!(detail.contains("2^53"), "{beyond}: {detail}")
            }
            other => panic!("{beyond}: expected Corrupt, got {other:?}"),
        }
        assert!(!backend.force_release(&n).await.unwrap());
        let next = acquire(&backend, &n, "after-recovery").await;
        assert!(
            next.fence > first.fence && next.fence <= MAX_FENCE,
            "{beyond}: {} after {}",
            next.fence,
            first.fence
        );
        assert!(backend.release(&next).await.unwrap());
    }
}
