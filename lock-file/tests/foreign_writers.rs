//! Lease files written by someone else (another process, another backend instance) are
//! respected exactly as if this backend had written them.

mod support;

use std::time::{Duration, SystemTime};

use lock_core::backend_kit::clock::{HostClock, SystemClock};
use lock_core::backend_kit::time::to_unix_millis;
use lock_core::{Holder, LockBackend, OwnerToken};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, acquire, name};

/// A lease record as another process of this boot writes it: expiry on the boot clock.
fn foreign_record(lock: &str, fence: u64, token: OwnerToken, expires_in: Duration) -> String {
    let expires = SystemClock.since_boot() + expires_in;
    serde_json::json!({
        "version": 2,
        "name": lock,
        "fence": fence,
        "limit": 1,
        "boot": SystemClock.boot_id().as_str(),
        "holders": [{
            "token": token.to_hex(),
            "label": "other process",
            "pid": 999_999,
            "host": "elsewhere",
            "fence": fence,
            "acquired_at_ms": to_unix_millis(SystemTime::now()),
            "expires_boot_ms": u64::try_from(expires.as_millis()).unwrap(),
        }]
    })
    .to_string()
}

#[tokio::test]
async fn a_live_lease_written_by_another_process_is_respected_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("theirs");
    let token = OwnerToken::random();
    let fence = 41_000;
    let ttl = Duration::from_millis(600);
    std::fs::write(
        backend.lease_file(&n),
        foreign_record("theirs", fence, token, ttl),
    )
    .unwrap();

    let info = backend
        .inspect(&n)
        .await
        .unwrap()
        .expect("their lease is live");
    assert_eq!(
        (info.label.as_str(), info.pid, info.host.as_str()),
        ("other process", 999_999, "elsewhere")
    );
    assert_eq!(info.fence, fence);
    assert_eq!(backend.list("the").await.unwrap().len(), 1);
    assert!(
        backend
            .try_acquire(&n, &Holder::current("me"), LONG_TTL)
            .await
            .unwrap()
            .is_none(),
        "their live lease keeps me out"
    );
    assert!(!backend.force_release(&name("unrelated")).await.unwrap());

    // Their token works through this backend too: the token is the only authority.
    let theirs = lock_core::Lease::new(
        n.clone(),
        Holder::new(token, "other process", 999_999, "elsewhere"),
        fence,
        SystemTime::now() + ttl,
        lock_core::backend_kit::time::monotonic_now(),
        ttl,
    );
    let renewed = backend.heartbeat(&theirs, ttl).await.unwrap();
    assert_eq!(renewed.fence, fence);

    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    assert!(
        backend.inspect(&n).await.unwrap().is_none(),
        "expired on the boot clock"
    );
    let mine = acquire(&backend, &n, "me").await;
    assert!(mine.fence > fence, "{} after their {fence}", mine.fence);
}

#[tokio::test]
async fn a_second_backend_instance_sees_and_respects_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let first =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let second =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    let n = name("shared");
    let lease = acquire(&first, &n, "first").await;
    assert!(
        second
            .try_acquire(&n, &Holder::current("second"), LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(second.inspect(&n).await.unwrap().unwrap().label, "first");
    assert_eq!(second.list("").await.unwrap()[0].fence, lease.fence);
    assert!(
        second.release(&lease).await.unwrap(),
        "the token releases from anywhere"
    );
    let next = acquire(&second, &n, "second").await;
    assert!(next.fence > lease.fence);
    assert_eq!(first.inspect(&n).await.unwrap().unwrap().label, "second");
}
