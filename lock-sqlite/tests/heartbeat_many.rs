//! `heartbeat_many`: one write transaction for the whole batch, one answer per lease, in
//! order; only our own live leases are extended.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{
    DRIVERS, LONG, assert_config, boot_id, close, holder, live_expiry, raw, raw_expiry, raw_i64,
};
use lock_core::{Holder, Lease, LockError, LockName, OwnerToken};
use lock_sqlite::SqliteOptions;

fn name(n: &str) -> LockName {
    LockName::new(n).unwrap()
}

/// A lease value on `name` that the store never granted.
fn never_granted(name: &LockName) -> Lease {
    Lease::new(
        name.clone(),
        Holder::new(OwnerToken::random(), "stranger", 1, "h"),
        1,
        SystemTime::now() + LONG,
        Instant::now(),
        LONG,
    )
}

fn assert_lost(result: &lock_core::Result<Lease>, expected: &LockName, context: &str) {
    match result {
        Err(LockError::LeaseLost { name }) => assert_eq!(name, expected, "{context}"),
        other => panic!("{context}: expected LeaseLost, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_renews_only_our_live_leases() {
    let short = Duration::from_millis(200);
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.db");
        let b = driver.open(&path).await.unwrap();
        let rival = driver.open(&path).await.unwrap();
        assert!(b.capabilities().batched_heartbeat, "{driver:?}");
        let me = holder("me");
        let take = |n: &'static str, ttl: Duration| {
            let (b, me) = (b.clone(), me.clone());
            async move { b.try_acquire(&name(n), &me, ttl).await.unwrap().unwrap() }
        };
        let ours_a = take("ours-a", LONG).await;
        let taken_over = take("taken-over", short).await;
        let expired = take("expired", short).await;
        let ours_b = take("ours-b", LONG).await;
        tokio::time::sleep(short + Duration::from_millis(300)).await;
        let theirs = rival
            .try_acquire(&taken_over.name, &holder("rival"), LONG)
            .await
            .unwrap()
            .expect("expired, so free");
        let theirs_before = raw_expiry(&path, "taken-over");
        let expired_before = raw_expiry(&path, "expired");
        let unknown = never_granted(&name("unknown"));
        raw(&path)
            .execute(
                "INSERT INTO lock_leases VALUES ('garbled', 0, X'0102', 'l', 1, 'h', 5, 1, 0, \
                 ?1, ?2, NULL)",
                rusqlite::params![boot_id(), live_expiry()],
            )
            .unwrap();
        let garbled = never_granted(&name("garbled"));

        let batch = [
            ours_a.clone(),
            taken_over.clone(),
            expired.clone(),
            unknown.clone(),
            garbled.clone(),
            ours_b.clone(),
        ];
        let results = b.heartbeat_many(&batch, Duration::from_secs(90)).await;
        assert_eq!(results.len(), batch.len(), "{driver:?}");

        for (i, original) in [(0, &ours_a), (5, &ours_b)] {
            let context = format!("{driver:?}: {}", original.name);
            let renewed = results[i]
                .as_ref()
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(renewed.name, original.name, "{context}");
            assert_eq!(renewed.fence, original.fence, "{context}");
            assert!(renewed.expires_at > original.expires_at, "{context}");
            let stored = b.inspect(&original.name).await.unwrap().unwrap();
            assert!(
                close(
                    stored.expires_at,
                    renewed.expires_at,
                    Duration::from_millis(5)
                ),
                "{context}: stored {:?}, renewed {:?}",
                stored.expires_at,
                renewed.expires_at
            );
        }
        assert_lost(&results[1], &taken_over.name, &format!("{driver:?}"));
        let theirs_after = rival.inspect(&theirs.name).await.unwrap().unwrap();
        assert_eq!(theirs_after.fence, theirs.fence, "{driver:?}");
        assert_eq!(
            raw_expiry(&path, "taken-over"),
            theirs_before,
            "{driver:?}: the rival's lease was not extended"
        );
        assert_lost(&results[2], &expired.name, &format!("{driver:?}"));
        assert!(b.inspect(&expired.name).await.unwrap().is_none());
        assert_eq!(
            raw_expiry(&path, "expired"),
            expired_before,
            "{driver:?}: the expired lease was not extended"
        );
        assert_lost(&results[3], &unknown.name, &format!("{driver:?}"));
        assert_eq!(
            raw_i64(
                &path,
                "SELECT count(*) FROM lock_leases WHERE name = 'unknown'"
            ),
            0,
            "{driver:?}"
        );
        match &results[4] {
            Err(LockError::Corrupt { detail, .. }) => {
                assert!(detail.contains("owner"), "{driver:?}: {detail}");
            }
            other => panic!("{driver:?}: expected Corrupt, got {other:?}"),
        }
        assert!(b.release(&ours_a).await.unwrap());
        assert!(b.release(&ours_b).await.unwrap());
        assert!(rival.release(&theirs).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_batches_bad_ttls_and_database_failures() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edges.db");
        let b = driver.open(&path).await.unwrap();
        assert!(
            b.heartbeat_many(&[], LONG).await.is_empty(),
            "{driver:?}: an empty batch"
        );
        let leases = [
            b.try_acquire(&name("a"), &holder("a"), LONG)
                .await
                .unwrap()
                .unwrap(),
            b.try_acquire(&name("b"), &holder("b"), LONG)
                .await
                .unwrap()
                .unwrap(),
        ];
        let refused = b.heartbeat_many(&leases, Duration::ZERO).await;
        assert_eq!(refused.len(), 2, "{driver:?}");
        assert!(
            refused
                .iter()
                .all(|r| matches!(r, Err(LockError::InvalidTtl { .. }))),
            "{driver:?}: {refused:?}"
        );
        // A failure of the transaction is every lease's answer, the same for each.
        let reader = driver
            .open_with(SqliteOptions::new(&path).with_read_only(true))
            .await
            .unwrap();
        let before: Vec<i64> = leases
            .iter()
            .map(|l| raw_expiry(&path, l.name.as_str()))
            .collect();
        let failed = reader.heartbeat_many(&leases, LONG).await;
        assert_eq!(failed.len(), 2, "{driver:?}");
        let messages: Vec<String> = failed
            .into_iter()
            .map(|r| {
                let e = r.expect_err("a read-only database cannot renew");
                let message = e.to_string();
                assert_config(Err::<(), _>(e), &["read-only"], &format!("{driver:?}"));
                message
            })
            .collect();
        assert_eq!(messages[0], messages[1], "{driver:?}");
        for (lease, before) in leases.iter().zip(before) {
            assert_eq!(
                raw_expiry(&path, lease.name.as_str()),
                before,
                "{driver:?}: nothing was renewed"
            );
            assert!(b.release(lease).await.unwrap());
        }
    }
}
