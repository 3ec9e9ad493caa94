//! Waiting for a lease: a waiter notices a release by any process, and an expiry, within
//! milliseconds, by watching the lease file (or, without inotify, looking at it every
//! 1-2 ms).

mod support;

use std::time::{Duration, Instant};

use lock_core::{Holder, LockBackend};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, acquire, name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_notices_an_expired_lease_nobody_released() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
        .await
        .unwrap();
    let lock = name("expiry");
    let ttl = Duration::from_millis(300);
    let lease = b
        .try_acquire(&lock, &Holder::current("a"), ttl)
        .await
        .unwrap();
    assert!(lease.is_some());
    let start = Instant::now();
    b.wait_for_change(
        &lock,
        lock_core::backend_kit::time::monotonic_now(),
        Duration::from_secs(30),
    )
    .await;
    let waited = start.elapsed();
    assert!(
        waited >= ttl - Duration::from_millis(50) && waited < ttl + Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_notices_a_rewrite_by_another_holder_and_sleeps_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
        .await
        .unwrap();
    let lock = name("handover");
    let first = acquire(&b, &lock, "first").await;
    // Unchanged: the whole budget.
    let start = Instant::now();
    b.wait_for_change(
        &lock,
        lock_core::backend_kit::time::monotonic_now(),
        Duration::from_millis(100),
    )
    .await;
    assert!(start.elapsed() >= Duration::from_millis(100));
    // Free from the start: one poll, not the budget.
    assert!(b.release(&first).await.unwrap());
    let start = Instant::now();
    b.wait_for_change(
        &lock,
        lock_core::backend_kit::time::monotonic_now(),
        Duration::from_secs(30),
    )
    .await;
    assert!(start.elapsed() < Duration::from_secs(5));
    // Taken over by another holder while waiting (the old one expired): woken.
    let short = b
        .try_acquire(&lock, &Holder::current("short"), Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    let waiter = {
        let (b, lock) = (b.clone(), lock.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            b.wait_for_change(
                &lock,
                lock_core::backend_kit::time::monotonic_now(),
                Duration::from_secs(30),
            )
            .await;
            start.elapsed()
        })
    };
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken")
        .unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let next = b
        .try_acquire(&lock, &Holder::current("next"), LONG_TTL)
        .await
        .unwrap()
        .expect("the short lease expired");
    assert!(next.fence > short.fence);
    assert!(b.release(&next).await.unwrap());
}
