//! Lease files of the older format (version 1, expiry on the wall clock) are read, honoured
//! and migrated to version 2 in place on their next write; a newer format is refused with a
//! typed error and never written over.

mod support;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lock_core::backend_kit::clock::{HostClock, SteppedClock, SystemClock};
use lock_core::backend_kit::time::{monotonic_now, to_unix_millis};
use lock_core::{Holder, Lease, LockBackend, LockError, LockName, OwnerToken, Result};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, acquire, name};

/// A version 1 record exactly as the old build wrote it (serde_json, fields in this order,
/// then a newline).
fn v1_record(lock: &str, fence: u64, holder: Option<(OwnerToken, SystemTime)>) -> String {
    let holder = match holder {
        None => "null".to_owned(),
        Some((token, expires)) => format!(
            "{{\"token\":\"{}\",\"label\":\"old build\",\"pid\":4242,\"host\":\"web-1\",\
             \"acquired_at_ms\":{},\"expires_at_ms\":{}}}",
            token.to_hex(),
            to_unix_millis(SystemTime::now() - Duration::from_secs(1)),
            to_unix_millis(expires)
        ),
    };
    format!("{{\"version\":1,\"name\":\"{lock}\",\"fence\":{fence},\"holder\":{holder}}}\n")
}

fn on_disk(backend: &FileBackend, n: &LockName) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(backend.lease_file(n)).unwrap()).unwrap()
}

fn apart(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or_else(|e| e.duration())
}

/// A live version 1 lease keeps the time it had left, now on the boot clock: readers see
/// it without changing the file, the first write migrates it in place, and from then on a
/// wall-clock step no longer moves its expiry. Its holder's token still heartbeats and
/// releases it, and fences continue above its own.
#[tokio::test]
async fn a_live_old_format_lease_is_honoured_and_migrated_on_its_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SteppedClock::new());
    let backend = FileBackend::connect_with(
        FileOptions::new(dir.path())
            .with_create_if_missing(false)
            .with_clock(Arc::clone(&clock) as _),
    )
    .await
    .unwrap();
    let n = name("legacy");
    let path = backend.lease_file(&n);
    let (token, fence) = (OwnerToken::random(), 1_700_000_000_000_000);
    let expires = SystemTime::now() + Duration::from_secs(20);
    let old = v1_record("legacy", fence, Some((token, expires)));
    std::fs::write(&path, &old).unwrap();
    let inode = std::fs::metadata(&path).unwrap().ino();

    // Read: honoured, shown with the expiry it had, and the file is left as it was.
    let info = backend
        .inspect(&n)
        .await
        .unwrap()
        .expect("the old lease is live");
    assert_eq!(
        (info.fence, info.limit, info.label.as_str()),
        (fence, 1, "old build")
    );
    assert!(
        apart(info.expires_at, expires) < Duration::from_millis(50),
        "{info:?}"
    );
    let listed = backend.list("leg").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].fence, listed[0].acquired_at),
        (fence, info.acquired_at)
    );
    assert!(apart(listed[0].expires_at, expires) < Duration::from_millis(50));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        old,
        "readers write nothing"
    );

    // The first write (here a refused acquisition) migrates it, in place.
    assert!(
        backend
            .try_acquire(&n, &Holder::current("newcomer"), LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    let record = on_disk(&backend, &n);
    assert_eq!(record["version"], 2, "{record}");
    assert_eq!(record["fence"], fence);
    assert_eq!(record["boot"], SystemClock.boot_id().as_str());
    assert_eq!(record["holders"][0]["token"], token.to_hex());
    assert_eq!(record["holders"][0]["fence"], fence);
    let left = record["holders"][0]["expires_boot_ms"].as_u64().unwrap()
        - u64::try_from(SystemClock.since_boot().as_millis()).unwrap();
    assert!(
        (10_000..=20_000).contains(&left),
        "the 20 s it had left, on the boot clock: {left} ms"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().ino(),
        inode,
        "rewritten in place"
    );

    // Migrated: a wall-clock step past its old expiry does not free it any more.
    clock.step_wall(Duration::from_secs(3600), true);
    assert!(
        backend
            .try_acquire(&n, &Holder::current("an hour ahead"), LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    let shown = backend.inspect(&n).await.unwrap().unwrap();
    assert!(
        apart(shown.expires_at, clock.wall() + Duration::from_secs(20)) < Duration::from_secs(2),
        "shown on the (stepped) wall clock: {shown:?}"
    );

    // Its holder's token is the authority, as before.
    let theirs = Lease::new(
        n.clone(),
        Holder::new(token, "old build", 4242, "web-1"),
        fence,
        expires,
        monotonic_now(),
        LONG_TTL,
    );
    let renewed = backend.heartbeat(&theirs, LONG_TTL).await.unwrap();
    assert_eq!(renewed.fence, fence);
    assert!(backend.release(&renewed).await.unwrap());
    let next = acquire(&backend, &n, "next").await;
    assert!(next.fence > fence);
}

/// A free version 1 record and an expired version 1 lease: both are free, the next fence
/// is above theirs, and the grant writes version 2.
#[tokio::test]
async fn free_and_expired_old_format_records_are_free_and_keep_their_fence() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    // Fences far above the wall clock, so the next one must come from the counter.
    let far = 8_000_000_000_000_000;
    let expired = Some((
        OwnerToken::random(),
        SystemTime::now() - Duration::from_millis(1),
    ));
    for (lock, holder) in [("old-free", None), ("old-expired", expired)] {
        let n = name(lock);
        std::fs::write(backend.lease_file(&n), v1_record(lock, far, holder)).unwrap();
        assert!(backend.inspect(&n).await.unwrap().is_none(), "{lock}");
        let lease = acquire(&backend, &n, "new").await;
        assert_eq!(lease.fence, far + 1, "{lock}: the counter continues");
        let record = on_disk(&backend, &n);
        assert_eq!(record["version"], 2, "{lock}: {record}");
        assert_eq!(record["holders"].as_array().unwrap().len(), 1, "{record}");
    }
}

/// The file a newer lock-file wrote, in format version 3.
fn newer_record(lock: &str) -> String {
    format!(
        "{{\"version\":3,\"name\":\"{lock}\",\"fence\":99,\"leases\":{{\"format\":\"unknown \
         to this build\"}}}}\n"
    )
}

fn assert_newer<T: std::fmt::Debug>(result: Result<T>, what: &str) {
    match result {
        Err(LockError::Config { backend, detail }) => {
            assert_eq!(backend, "file", "{what}");
            assert!(detail.contains("format version 3"), "{what}: {detail}");
            assert!(
                detail.contains("newer version of lock-file"),
                "{what}: {detail}"
            );
            assert!(detail.contains("Upgrade"), "{what}: {detail}");
        }
        other => panic!("{what}: expected a Config error, got {other:?}"),
    }
}

/// Every operation on a file of a newer format fails with a `Config` error that says to
/// upgrade, and leaves the file exactly as it was, `force_release` included; other names
/// work, and `list` skips the file.
#[tokio::test]
async fn a_newer_format_is_refused_with_a_config_error_and_never_written_over() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("from-the-future");
    let path = backend.lease_file(&n);
    let bytes = newer_record("from-the-future");
    std::fs::write(&path, &bytes).unwrap();
    let other = acquire(&backend, &name("today"), "today").await;

    let who = Holder::current("old build");
    let forged = Lease::new(
        n.clone(),
        who.clone(),
        99,
        SystemTime::now(),
        monotonic_now(),
        LONG_TTL,
    );
    assert_newer(backend.try_acquire(&n, &who, LONG_TTL).await, "try_acquire");
    assert_newer(
        backend.try_acquire_permit(&n, &who, LONG_TTL, 3).await,
        "try_acquire_permit",
    );
    assert_newer(backend.heartbeat(&forged, LONG_TTL).await, "heartbeat");
    assert_newer(backend.release(&forged).await, "release");
    assert_newer(backend.inspect(&n).await, "inspect");
    assert_newer(backend.inspect_all(&n).await, "inspect_all");
    assert_newer(backend.force_release(&n).await, "force_release");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        bytes,
        "left untouched"
    );

    let listed = backend.list("").await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].fence, other.fence);
    assert!(backend.release(&other).await.unwrap());
}
