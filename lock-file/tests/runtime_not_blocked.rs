//! Waiting for another holder's file lock never blocks the async runtime, a cancelled wait
//! leaves no lock behind, and a stuck holder gives `Unavailable` after the busy timeout.

mod support;

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lock_core::{Holder, LockBackend, LockError};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, acquire, name};

/// Opens `path` and takes its fs4 lock, as another process inside a critical section would.
fn hold_file_lock(path: &std::path::Path) -> File {
    let file = File::options().read(true).write(true).open(path).unwrap();
    fs4::FileExt::lock(&file).unwrap();
    file
}

/// Drops `file` (releasing its lock) after `after`, on a plain thread, so it happens even if
/// the runtime under test were blocked.
fn release_later(file: File, after: Duration) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        drop(file);
    })
}

#[tokio::test(flavor = "current_thread")]
async fn waiting_for_a_held_file_lock_keeps_the_runtime_thread_free() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("busy");
    let first = acquire(&backend, &n, "create the file").await;
    assert!(backend.release(&first).await.unwrap());

    let hold = Duration::from_millis(300);
    let releaser = release_later(hold_file_lock(&backend.lease_file(&n)), hold);
    let ticks = Arc::new(AtomicU32::new(0));
    let ticker = {
        let ticks = Arc::clone(&ticks);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let start = Instant::now();
    let lease = backend
        .try_acquire(&n, &Holder::current("waiter"), LONG_TTL)
        .await
        .unwrap()
        .expect("free once the file lock is released");
    let waited = start.elapsed();
    ticker.abort();
    releaser.join().unwrap();
    assert!(lease.fence > first.fence);
    assert!(
        waited >= hold - Duration::from_millis(50),
        "did not wait: {waited:?}"
    );
    let ticked = ticks.load(Ordering::SeqCst);
    // ~30 ticks of 10 ms fit in 300 ms; a blocked runtime thread would give 0.
    assert!(
        ticked >= 5,
        "the runtime thread was blocked: {ticked} ticks in {waited:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_wait_leaves_no_file_lock_and_no_lease() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("cancelled");
    let first = acquire(&backend, &n, "create the file").await;
    assert!(backend.release(&first).await.unwrap());
    let path = backend.lease_file(&n);

    // Released by a plain thread, so a backend that blocked the runtime would fail the
    // assertion below instead of hanging the test.
    let releaser = release_later(hold_file_lock(&path), Duration::from_millis(500));
    let impatient = Holder::current("impatient");
    let attempt = backend.try_acquire(&n, &impatient, LONG_TTL);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), attempt)
            .await
            .is_err(),
        "must still be waiting for the file lock"
    );
    releaser.join().unwrap();

    // The abandoned waiter's thread gets the lock and closes the file at once; a blocking
    // lock from here therefore returns promptly instead of hanging.
    let probe = File::open(&path).unwrap();
    let locked = tokio::task::spawn_blocking(move || fs4::FileExt::lock(&probe).map(|()| probe));
    let probe = tokio::time::timeout(Duration::from_secs(5), locked)
        .await
        .expect("the cancelled waiter left the file locked")
        .unwrap()
        .unwrap();
    drop(probe);
    assert!(
        backend.inspect(&n).await.unwrap().is_none(),
        "no lease was taken"
    );
    let next = acquire(&backend, &n, "next").await;
    assert!(next.fence > first.fence);
}

#[tokio::test(flavor = "current_thread")]
async fn a_stuck_holder_gives_unavailable_after_the_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let busy_timeout = Duration::from_millis(200);
    let backend = FileBackend::connect_with(
        FileOptions::new(dir.path())
            .with_create_if_missing(false)
            .with_busy_timeout(busy_timeout),
    )
    .await
    .unwrap();
    let n = name("stuck");
    let first = acquire(&backend, &n, "create the file").await;
    assert!(backend.release(&first).await.unwrap());

    let releaser = release_later(
        hold_file_lock(&backend.lease_file(&n)),
        Duration::from_secs(2),
    );
    let start = Instant::now();
    let result = backend.inspect(&n).await;
    let waited = start.elapsed();
    match result {
        Err(error @ LockError::Unavailable { .. }) => {
            assert!(error.is_transient());
            assert!(error.to_string().contains("stayed locked"), "{error}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(waited >= busy_timeout, "gave up early: {waited:?}");
    assert!(
        waited < busy_timeout + Duration::from_secs(1),
        "gave up late: {waited:?}"
    );
    releaser.join().unwrap();
    assert!(
        backend.inspect(&n).await.unwrap().is_none(),
        "works again once released"
    );
}
