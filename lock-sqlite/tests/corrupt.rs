//! Rows this library did not write are reported as `Corrupt`, never as a lease; `list`
//! skips them; `force_release` clears them.

mod common;

use std::path::Path;

use common::{DRIVERS, LONG, holder, raw};
use lock_core::{Holder, Lease, LockError, LockName, OwnerToken};

const FAR_FUTURE_MS: i64 = 4_102_444_800_000; // 2100-01-01

/// Rows garbled the ways a hand edit or a foreign writer could garble them. Every one
/// has a live-looking expiry, so that only the decoder stands between it and a false lease.
fn garbled_rows() -> Vec<(&'static str, String)> {
    let live = FAR_FUTURE_MS.to_string();
    let row = |owner: &str, label: &str, pid: &str, fence: &str, expires: &str| {
        format!(
            "INSERT INTO lock_leases VALUES ('{{n}}', {owner}, {label}, {pid}, 'h', {fence}, 0, \
             {expires})"
        )
    };
    let token = "randomblob(16)";
    vec![
        ("owner", row("X'0102'", "'l'", "1", "5", &live)),
        ("owner", row("'not-a-token'", "'l'", "1", "5", &live)),
        ("fence", row(token, "'l'", "1", "-7", &live)),
        ("pid", row(token, "'l'", "-1", "5", &live)),
        ("expiry", row(token, "'l'", "1", "5", "'tomorrow'")),
        ("label", row(token, "X'FF00'", "1", "5", &live)),
    ]
}

fn insert(path: &Path, sql: &str, name: &str) {
    raw(path)
        .execute_batch(&sql.replace("{n}", name))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn assert_corrupt<T: std::fmt::Debug>(result: lock_core::Result<T>, what: &str, context: &str) {
    match result {
        Err(LockError::Corrupt { detail, .. }) => {
            assert!(detail.contains(what), "{context}: {what:?} not in {detail}");
        }
        other => panic!("{context}: expected Corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_rows_are_corrupt_and_force_release_recovers() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbled.db");
        let b = driver.open(&path).await.unwrap();
        for (i, (what, sql)) in garbled_rows().into_iter().enumerate() {
            let context = format!("{driver:?}, garbled {what} ({sql})");
            let name = LockName::new(format!("garbled-{i}")).unwrap();
            insert(&path, &sql, name.as_str());
            assert_corrupt(b.inspect(&name).await, what, &context);
            assert_corrupt(
                b.try_acquire(&name, &holder("x"), LONG).await,
                what,
                &context,
            );
            assert!(
                b.list("garbled-").await.unwrap().is_empty(),
                "{context}: list shows an unreadable row"
            );
            let forged = Lease::new(
                name.clone(),
                Holder::new(OwnerToken::random(), "forger", 1, "h"),
                5,
                std::time::SystemTime::now() + LONG,
                std::time::Instant::now(),
                LONG,
            );
            assert_corrupt(b.heartbeat(&forged, LONG).await, what, &context);
            assert!(
                !b.release(&forged).await.unwrap(),
                "{context}: release by a stranger"
            );
            b.force_release(&name)
                .await
                .unwrap_or_else(|e| panic!("{context}: force_release failed: {e}"));
            assert!(b.inspect(&name).await.unwrap().is_none(), "{context}");
            let lease = b
                .try_acquire(&name, &holder("after"), LONG)
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"))
                .expect("free after force_release");
            assert!(lease.fence >= 1);
            assert!(b.release(&lease).await.unwrap());
        }
        assert!(b.list("").await.unwrap().is_empty(), "{driver:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_skips_unreadable_rows_but_not_database_failures() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.db");
        let b = driver.open(&path).await.unwrap();
        let mut leases = Vec::new();
        for n in ["job/a", "job/c"] {
            let name = LockName::new(n).unwrap();
            leases.push(
                b.try_acquire(&name, &holder(n), LONG)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        insert(&path, &garbled_rows()[0].1, "job/b");
        let listed: Vec<(String, u64)> = b
            .list("")
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: one bad row failed the listing: {e}"))
            .into_iter()
            .map(|i| (i.name.as_str().to_owned(), i.fence))
            .collect();
        let expected: Vec<(String, u64)> = leases
            .iter()
            .map(|l| (l.name.as_str().to_owned(), l.fence))
            .collect();
        assert_eq!(listed, expected, "{driver:?}");
        for lease in &leases {
            assert!(b.release(lease).await.unwrap());
        }
        // A failing database still fails the listing rather than looking empty.
        raw(&path).execute_batch("DROP TABLE lock_leases").unwrap();
        match b.list("").await {
            Err(LockError::Backend { .. }) => {}
            other => panic!("{driver:?}: expected a Backend error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_fence_counter_is_corrupt_not_a_reused_fence() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counter.db");
        let b = driver.open(&path).await.unwrap();
        let name = LockName::new("counted").unwrap();
        let first = b
            .try_acquire(&name, &holder("a"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert!(b.release(&first).await.unwrap());
        for garble in [
            "UPDATE lock_meta SET value = 'many' WHERE key = 'fence'",
            "UPDATE lock_meta SET value = -3 WHERE key = 'fence'",
            "UPDATE lock_meta SET value = 9223372036854775807 WHERE key = 'fence'",
            "DELETE FROM lock_meta WHERE key = 'fence'",
        ] {
            raw(&path).execute_batch(garble).unwrap();
            assert_corrupt(
                b.try_acquire(&name, &holder("b"), LONG).await,
                "fence counter",
                &format!("{driver:?}: {garble}"),
            );
            assert!(
                b.inspect(&name).await.unwrap().is_none(),
                "{driver:?}: {garble}"
            );
            raw(&path)
                .execute_batch("INSERT OR REPLACE INTO lock_meta (key, value) VALUES ('fence', 1)")
                .unwrap();
        }
        let next = b
            .try_acquire(&name, &holder("c"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.fence, 2, "{driver:?}");
        assert!(b.release(&next).await.unwrap());
    }
}
