//! A damaged lease file is `Corrupt` for its own name only, and `force_release` recovers it
//! with a higher fence than it ever had.

mod support;

use std::path::Path;

use lock_core::{LockBackend, LockError, LockName, Result};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, acquire, name};

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T>, file: &Path, what: &str) {
    match result {
        Err(error @ LockError::Corrupt { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(&file.display().to_string()),
                "{what}: {message}"
            );
            assert!(
                message.contains("lockctl release --force"),
                "{what}: {message}"
            );
        }
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

/// The ways a lease file can be damaged, given its last good content (a free record whose
/// counter is `fence`).
fn corruptions(good: &str, fence: u64, other_names_file: &str) -> Vec<(&'static str, Vec<u8>)> {
    let counter = format!("\"fence\":{fence},");
    assert!(good.contains(&counter), "{good}");
    vec![
        ("garbage bytes", b"\x00\xff\xfe garbage \x01".to_vec()),
        ("truncated JSON", good.as_bytes()[..good.len() / 2].to_vec()),
        (
            "another name's record",
            other_names_file.as_bytes().to_vec(),
        ),
        ("an oversized file", vec![b'x'; 2 << 20]),
        (
            "a fence of 2^53, which is never issued",
            good.replace(&counter, "\"fence\":9007199254740992,")
                .into_bytes(),
        ),
        (
            "a format version no lock-file writes",
            good.replace("\"version\":2", "\"version\":0").into_bytes(),
        ),
    ]
}

#[tokio::test]
async fn corrupt_files_fail_their_own_name_and_force_release_recovers_them() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let (victim, bystander) = (name("victim"), name("bystander"));
    let held_elsewhere = acquire(&backend, &bystander, "bystander").await;
    let other_file = std::fs::read_to_string(backend.lease_file(&bystander)).unwrap();
    let path = backend.lease_file(&victim);

    let first = acquire(&backend, &victim, "first").await;
    assert!(backend.release(&first).await.unwrap());
    // The record without the padding a file keeps after a longer record was replaced.
    let good = std::fs::read_to_string(&path)
        .unwrap()
        .trim_end()
        .to_owned();
    let mut last_fence = first.fence;

    for (what, bytes) in corruptions(&good, first.fence, &other_file) {
        let stale = acquire(&backend, &victim, "before-corruption").await;
        assert!(stale.fence > last_fence, "{what}");
        std::fs::write(&path, &bytes).unwrap();

        let someone = lock_core::Holder::current("someone");
        assert_corrupt(
            backend.try_acquire(&victim, &someone, LONG_TTL).await,
            &path,
            what,
        );
        assert_corrupt(backend.inspect(&victim).await, &path, what);
        assert_corrupt(backend.heartbeat(&stale, LONG_TTL).await, &path, what);
        assert_corrupt(backend.release(&stale).await, &path, what);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{what}: refused calls wrote nothing"
        );

        // Other names do not care.
        let info = backend
            .inspect(&bystander)
            .await
            .unwrap()
            .expect("still held");
        assert_eq!(info.fence, held_elsewhere.fence, "{what}");
        let listed = backend.list("").await.unwrap();
        assert_eq!(
            listed.len(),
            1,
            "{what}: list skips the damaged file: {listed:?}"
        );
        assert_eq!(listed[0].name, bystander);

        assert!(
            !backend.force_release(&victim).await.unwrap(),
            "{what}: no live lease was removed"
        );
        assert!(backend.inspect(&victim).await.unwrap().is_none(), "{what}");
        let rewritten = std::fs::read(&path).unwrap();
        assert!(rewritten.len() < 4096, "{what}: cut back to one record");
        let record: serde_json::Value = serde_json::from_slice(&rewritten).unwrap();
        assert_eq!(record["name"], "victim", "{what}");
        assert_eq!(record["holders"], serde_json::json!([]), "{what}");
        let next = acquire(&backend, &victim, "after-recovery").await;
        assert!(
            next.fence > stale.fence,
            "{what}: fence {} after {}",
            next.fence,
            stale.fence
        );
        assert!(backend.release(&next).await.unwrap());
        last_fence = next.fence;
    }
    assert!(backend.release(&held_elsewhere).await.unwrap());
}

#[tokio::test]
async fn force_release_keeps_a_fence_still_readable_in_a_damaged_file() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("far-ahead");
    let path = backend.lease_file(&n);
    // A record whose fence is far above the wall-clock seed, then cut in half.
    let far_ahead = lock_core::backend_kit::time::fence_seed_now() * 4;
    let record = format!(
        "{{\"version\":1,\"name\":\"far-ahead\",\"fence\":{far_ahead},\"holder\":{{\"token\":\"0123"
    );
    std::fs::write(&path, record).unwrap();
    assert_corrupt(backend.inspect(&n).await, &path, "cut record");
    assert!(!backend.force_release(&n).await.unwrap());
    let next = acquire(&backend, &n, "next").await;
    assert!(next.fence > far_ahead, "{} after {far_ahead}", next.fence);
}

#[tokio::test]
async fn an_empty_or_deleted_file_starts_again_above_every_old_fence() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n: LockName = name("wiped");
    let first = acquire(&backend, &n, "first").await;
    assert!(backend.release(&first).await.unwrap());
    std::fs::write(backend.lease_file(&n), b"").unwrap();
    let second = acquire(&backend, &n, "second").await;
    assert!(
        second.fence > first.fence,
        "empty file: {} after {}",
        second.fence,
        first.fence
    );
    assert!(backend.release(&second).await.unwrap());
    std::fs::remove_file(backend.lease_file(&n)).unwrap();
    let third = acquire(&backend, &n, "third").await;
    assert!(
        third.fence > second.fence,
        "deleted file: {} after {}",
        third.fence,
        second.fence
    );
}

/// A holder label so large that the record could not be read back (over the 1 MiB a lease
/// file may hold) is refused with a `Config` error before anything is written: the file
/// keeps its live lease instead of becoming unreadable.
#[tokio::test]
async fn a_record_too_large_to_read_back_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("huge-label");
    let kept = backend
        .try_acquire_permit(&n, &lock_core::Holder::current("normal"), LONG_TTL, 2)
        .await
        .unwrap()
        .expect("free");
    let path = backend.lease_file(&n);
    let before = std::fs::read(&path).unwrap();
    let huge = lock_core::Holder::current("x".repeat(1 << 20));
    match backend.try_acquire_permit(&n, &huge, LONG_TTL, 2).await {
        Err(LockError::Config { detail, .. }) => {
            assert!(detail.contains("shorter holder labels"), "{detail}")
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing written");
    let info = backend.inspect(&n).await.unwrap().expect("still held");
    assert_eq!(info.fence, kept.fence);
    assert!(backend.release(&kept).await.unwrap());
}
