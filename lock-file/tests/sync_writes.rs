//! The `sync_writes` option: every operation works with an fsync after each write.

mod support;

use lock_core::LockBackend;
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, acquire, name};

#[tokio::test(flavor = "current_thread")]
async fn every_operation_works_with_sync_writes() {
    let dir = tempfile::tempdir().unwrap();
    let synced = FileBackend::connect_with(
        FileOptions::new(dir.path())
            .with_create_if_missing(false)
            .with_sync_writes(true),
    )
    .await
    .unwrap();
    let plain =
        FileBackend::connect_with(FileOptions::new(dir.path()).with_create_if_missing(false))
            .await
            .unwrap();
    assert!(synced.options().sync_writes);
    assert!(!plain.options().sync_writes, "off by default");

    let n = name("synced");
    let lease = acquire(&synced, &n, "synced").await;
    let renewed = synced.heartbeat(&lease, LONG_TTL * 2).await.unwrap();
    assert!(renewed.expires_at > lease.expires_at);
    let seen = plain
        .inspect(&n)
        .await
        .unwrap()
        .expect("the other client sees it");
    assert_eq!(seen.fence, lease.fence);
    // Both are the one stored boot-clock expiry shown on the wall clock, each converted when
    // it was read: equal but for the time between two readings of the two clocks.
    let apart = seen
        .expires_at
        .duration_since(renewed.expires_at)
        .unwrap_or_else(|e| e.duration());
    assert!(apart < std::time::Duration::from_millis(5), "{apart:?}");
    assert!(synced.release(&renewed).await.unwrap());
    assert!(plain.inspect(&n).await.unwrap().is_none());

    let again = acquire(&plain, &n, "plain").await;
    assert!(synced.force_release(&n).await.unwrap());
    let last = acquire(&synced, &n, "last").await;
    assert!(last.fence > again.fence);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(synced.lease_file(&n)).unwrap()).unwrap();
    assert_eq!(on_disk["fence"], last.fence);
    assert_eq!(on_disk["holders"][0]["label"], "last");
}
