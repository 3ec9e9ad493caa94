//! Semaphores in a lock directory: every permit of a name lives in the name's one lease
//! file, each with its own token, fence and expiry, under one fence counter.

mod support;

use std::time::{Duration, Instant};

use lock_core::backend_kit::time::monotonic_now;
use lock_core::{Holder, LockBackend, LockError};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, lease_files, name, snapshot_lease_files, write_back};

async fn open(dir: &std::path::Path) -> FileBackend {
    FileBackend::connect_with(FileOptions::new(dir).with_create_if_missing(false))
        .await
        .unwrap()
}

fn record(backend: &FileBackend, n: &lock_core::LockName) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(backend.lease_file(n)).unwrap()).unwrap()
}

/// Three permits of a semaphore of 3: one file, three holders by fence under the limit,
/// and the counter at the last fence; a release removes one holder, `force_release` all of
/// them, and the counter stays.
#[tokio::test]
async fn permits_share_their_names_file_each_with_its_own_fence() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path()).await;
    let n = name("builds");
    let mut leases = Vec::new();
    for i in 0..3 {
        let lease = backend
            .try_acquire_permit(&n, &Holder::current(format!("b{i}")), LONG_TTL, 3)
            .await
            .unwrap()
            .expect("a free permit");
        leases.push(lease);
    }
    assert_eq!(lease_files(backend.dir()).len(), 1, "one file per name");
    let on_disk = record(&backend, &n);
    assert_eq!(on_disk["limit"], 3);
    let fences: Vec<u64> = leases.iter().map(|l| l.fence).collect();
    let stored: Vec<u64> = on_disk["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["fence"].as_u64().unwrap())
        .collect();
    assert_eq!(stored, fences, "{on_disk}");
    assert_eq!(on_disk["fence"], fences[2], "the counter is the last fence");

    assert!(backend.release(&leases[1]).await.unwrap());
    let on_disk = record(&backend, &n);
    let labels: Vec<&str> = on_disk["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["b0", "b2"]);
    assert!(backend.heartbeat(&leases[0], LONG_TTL).await.is_ok());
    assert!(backend.force_release(&n).await.unwrap());
    let on_disk = record(&backend, &n);
    assert_eq!(on_disk["holders"], serde_json::json!([]));
    assert_eq!(on_disk["fence"], fences[2]);
    match backend.heartbeat(&leases[2], LONG_TTL).await {
        Err(LockError::LeaseLost { .. }) => {}
        other => panic!("heartbeat after force_release: {other:?}"),
    }
}

/// A caller with another limit gets `Config` naming both, and the file is not written; a
/// limit out of bounds is refused before the file is touched; a token that already holds a
/// permit gets no second one.
#[tokio::test]
async fn refusals_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path()).await;
    let n = name("refusals");
    let holder = Holder::current("one");
    let lease = backend
        .try_acquire_permit(&n, &holder, LONG_TTL, 2)
        .await
        .unwrap()
        .unwrap();
    let before = std::fs::read(backend.lease_file(&n)).unwrap();
    match backend
        .try_acquire_permit(&n, &Holder::current("five"), LONG_TTL, 5)
        .await
    {
        Err(LockError::Config { detail, .. }) => {
            assert!(
                detail.contains("limit of 2") && detail.contains("limit of 5"),
                "{detail}"
            )
        }
        other => panic!("another limit: {other:?}"),
    }
    for limit in [0, lock_core::MAX_PERMITS + 1] {
        assert!(matches!(
            backend
                .try_acquire_permit(&name("untouched"), &holder, LONG_TTL, limit)
                .await,
            Err(LockError::Config { .. })
        ));
    }
    assert!(!backend.lease_file(&name("untouched")).exists());
    assert!(
        backend
            .try_acquire_permit(&n, &holder, LONG_TTL, 2)
            .await
            .unwrap()
            .is_none(),
        "not re-entrant: one permit per token"
    );
    assert_eq!(std::fs::read(backend.lease_file(&n)).unwrap(), before);
    assert!(backend.release(&lease).await.unwrap());
}

/// A waiter on a full semaphore wakes within milliseconds when another process frees a
/// permit (played here by writing, in place, the bytes that process leaves), and sleeps
/// while every permit stays taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_when_another_process_frees_a_permit() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path()).await;
    let n = name("full");
    let mut leases = Vec::new();
    for i in 0..2 {
        leases.push(
            backend
                .try_acquire_permit(&n, &Holder::current(format!("p{i}")), LONG_TTL, 2)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let full = snapshot_lease_files(backend.dir());
    assert!(backend.release(&leases[1]).await.unwrap());
    let one_free = snapshot_lease_files(backend.dir());
    write_back(backend.dir(), &full);

    // Full: the waiter sleeps its whole budget.
    let start = Instant::now();
    backend
        .wait_for_change(&n, monotonic_now(), Duration::from_millis(200))
        .await;
    assert!(start.elapsed() >= Duration::from_millis(200));

    let waiter = {
        let (backend, n) = (backend.clone(), n.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            backend
                .wait_for_change(&n, monotonic_now(), Duration::from_secs(30))
                .await;
            start.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    write_back(backend.dir(), &one_free);
    let waited = waiter.await.unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let lease = backend
        .try_acquire_permit(&n, &Holder::current("woken"), LONG_TTL, 2)
        .await
        .unwrap()
        .expect("a permit is free");
    assert!(lease.fence > leases[1].fence);
}
