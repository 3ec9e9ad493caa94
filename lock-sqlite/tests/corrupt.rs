//! Rows this library did not write are reported as `Corrupt`, never as a lease; `list`
//! skips them; `force_release` clears them, and the name's next fence is still higher than
//! any it had. Other names are not affected.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use common::{DRIVERS, LONG, acquire_all, boot_id, holder, live_expiry, raw, raw_i64};
use lock_core::backend_kit::fence::MAX_FENCE;
use lock_core::backend_kit::time::fence_seed_now;
use lock_core::{Holder, Lease, LockBackend, LockError, LockName, OwnerToken};

/// A fence far above what the wall clock gives (about 1.8e15 microseconds today) and below
/// the largest fence (2^53 - 1, about 9e15), so that only the recovered fence, not the
/// clock, can put the next fence above it.
const HUGE_FENCE: i64 = 8_000_000_000_000_000;

/// A garbled row: what the error names, the SQL that inserts it (with `{n}` for the name),
/// and its fence if that is readable.
struct Garble {
    what: &'static str,
    sql: String,
    fence: Option<i64>,
}

/// A lease row (slot 0, limit 1, this boot) with the given SQL values, `{n}` for its name.
fn row(owner: &str, label: &str, pid: &str, fence: &str, boot: &str, expires: &str) -> String {
    format!(
        "INSERT INTO lock_leases VALUES ('{{n}}', 0, {owner}, {label}, {pid}, 'h', {fence}, 1, \
         0, {boot}, {expires}, NULL)"
    )
}

/// This boot's id as a SQL literal.
fn this_boot() -> String {
    format!("'{}'", boot_id())
}

/// Rows garbled the ways a hand edit or a foreign writer could garble them. Every one
/// has a live-looking expiry, so that only the decoder stands between it and a false lease.
fn garbled_rows() -> Vec<Garble> {
    let live = live_expiry().to_string();
    let boot = this_boot();
    let token = "randomblob(16)";
    let huge = HUGE_FENCE.to_string();
    let garble = |what, sql, fence| Garble { what, sql, fence };
    let mut garbles = vec![
        garble(
            "owner",
            row("X'0102'", "'l'", "1", &huge, &boot, &live),
            Some(HUGE_FENCE),
        ),
        garble(
            "owner",
            row("'not-a-token'", "'l'", "1", "5", &boot, &live),
            Some(5),
        ),
        garble("fence", row(token, "'l'", "1", "-7", &boot, &live), None),
        garble(
            "fence",
            row(token, "'l'", "1", "'many'", &boot, &live),
            None,
        ),
        garble(
            "fence",
            row(
                token,
                "'l'",
                "1",
                &(MAX_FENCE + 1).to_string(),
                &boot,
                &live,
            ),
            None,
        ),
        garble(
            "pid",
            row(
                token,
                "'l'",
                "-1",
                &(HUGE_FENCE + 10).to_string(),
                &boot,
                &live,
            ),
            Some(HUGE_FENCE + 10),
        ),
        garble(
            "expiry",
            row(token, "'l'", "1", "5", &boot, "'tomorrow'"),
            Some(5),
        ),
        garble(
            "label",
            row(token, "X'FF00'", "1", "6", &boot, &live),
            Some(6),
        ),
        garble(
            "boot id",
            row(token, "'l'", "1", "7", "X'07'", &live),
            Some(7),
        ),
    ];
    // Semaphore columns: a slot or a limit this library never writes.
    let sound = row(token, "'l'", "1", "8", &boot, &live);
    garbles.push(garble(
        "slot",
        sound.replace("VALUES ('{n}', 0,", "VALUES ('{n}', -1,"),
        Some(8),
    ));
    garbles.push(garble(
        "limit",
        sound.replace("8, 1, 0,", "8, 0, 0,"),
        Some(8),
    ));
    garbles
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

/// A lease value for `name` with a token nobody holds.
fn forged(name: &LockName, fence: u64) -> Lease {
    Lease::new(
        name.clone(),
        Holder::new(OwnerToken::random(), "forger", 1, "h"),
        fence,
        SystemTime::now() + LONG,
        Instant::now(),
        LONG,
    )
}

/// Asserts that `lease` is still exactly as it was (holder, fence) and that its holder can
/// still renew it; returns the renewed lease.
async fn assert_untouched(b: &Arc<dyn LockBackend>, lease: &Lease, context: &str) -> Lease {
    let info = b
        .inspect(&lease.name)
        .await
        .unwrap_or_else(|e| panic!("{context}: inspect of an untouched name failed: {e}"))
        .unwrap_or_else(|| panic!("{context}: the untouched lease is gone"));
    assert_eq!(info.label, lease.holder.label, "{context}");
    assert_eq!(info.fence, lease.fence, "{context}");
    let renewed = b
        .heartbeat(lease, LONG)
        .await
        .unwrap_or_else(|e| panic!("{context}: heartbeat of the untouched lease failed: {e}"));
    assert_eq!(renewed.fence, lease.fence, "{context}");
    renewed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_rows_are_corrupt_and_force_release_recovers() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbled.db");
        let b = driver.open(&path).await.unwrap();
        let bystander_name = LockName::new("bystander").unwrap();
        let mut bystander = b
            .try_acquire(&bystander_name, &holder("bystander"), LONG)
            .await
            .unwrap()
            .unwrap();
        for (i, garble) in garbled_rows().into_iter().enumerate() {
            let Garble { what, sql, fence } = garble;
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
            assert_corrupt(b.heartbeat(&forged(&name, 5), LONG).await, what, &context);
            assert!(
                !b.release(&forged(&name, 5)).await.unwrap(),
                "{context}: release by a stranger"
            );
            bystander = assert_untouched(&b, &bystander, &context).await;

            let seed_before = fence_seed_now();
            b.force_release(&name)
                .await
                .unwrap_or_else(|e| panic!("{context}: force_release failed: {e}"));
            assert!(b.inspect(&name).await.unwrap().is_none(), "{context}");
            let lease = b
                .try_acquire(&name, &holder("after"), LONG)
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"))
                .expect("free after force_release");
            assert!(lease.fence >= seed_before, "{context}: {}", lease.fence);
            if let Some(old) = fence {
                assert!(
                    lease.fence > u64::try_from(old).unwrap(),
                    "{context}: fence {} after the corrupt row's {old}",
                    lease.fence
                );
            }
            bystander = assert_untouched(&b, &bystander, &context).await;
            assert!(b.release(&lease).await.unwrap());
        }
        assert_eq!(
            b.list("").await.unwrap().len(),
            1,
            "{driver:?}: only the bystander"
        );
        assert!(
            b.release(&bystander).await.unwrap(),
            "{driver:?}: the bystander's holder releases it"
        );
        assert!(b.list("").await.unwrap().is_empty(), "{driver:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_taken_over_only_when_their_fence_can_advance() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("expired.db");
        let b = driver.open(&path).await.unwrap();
        let context = format!("{driver:?}");

        // An expired row with a sound fence and expiry but a garbled label: taking it over
        // rewrites every other column, and the fence advances past the stored one (which
        // is ahead of the clock).
        let healed = LockName::new("healed").unwrap();
        let huge = HUGE_FENCE.to_string();
        insert(
            &path,
            &row("randomblob(16)", "X'FF00'", "1", &huge, &this_boot(), "0"),
            healed.as_str(),
        );
        assert_corrupt(b.inspect(&healed).await, "label", &context);
        let lease = b
            .try_acquire(&healed, &holder("healer"), LONG)
            .await
            .unwrap()
            .expect("an expired row is free");
        assert_eq!(
            lease.fence,
            u64::try_from(HUGE_FENCE).unwrap() + 1,
            "{context}"
        );
        assert_eq!(
            b.inspect(&healed).await.unwrap().unwrap().label,
            "healer",
            "{context}"
        );

        // Expired, but a fence this library never writes (0) or one that cannot advance.
        let max = MAX_FENCE.to_string();
        for (name, fence, what) in [("zero", "0", "fence"), ("at-max", max.as_str(), "largest")] {
            let name = LockName::new(name).unwrap();
            insert(
                &path,
                &row("randomblob(16)", "'l'", "1", fence, &this_boot(), "0"),
                name.as_str(),
            );
            let context = format!("{driver:?}: fence {fence}");
            assert_corrupt(
                b.try_acquire(&name, &holder("x"), LONG).await,
                what,
                &context,
            );
            let seed_before = fence_seed_now();
            assert!(
                !b.force_release(&name).await.unwrap(),
                "{context}: nothing live was removed"
            );
            let next = b
                .try_acquire(&name, &holder("after"), LONG)
                .await
                .unwrap()
                .expect("free after force_release");
            assert!(next.fence >= seed_before, "{context}: {}", next.fence);
        }
        assert!(b.release(&lease).await.unwrap());
    }
}

/// A free row whose fence is below the fence clock is taken by one statement, with the
/// clock for its fence; one whose fence is ahead of the clock (a wall clock stepped back,
/// a grant within the same microsecond) is decided on its rows, with the next fence.
#[tokio::test]
async fn a_free_row_gets_the_clock_or_the_next_fence_whichever_is_higher() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fences.db");
        let b = driver.open(&path).await.unwrap();
        let context = format!("{driver:?}");
        let ahead = LockName::new("ahead").unwrap();
        let huge = HUGE_FENCE.to_string();
        let behind = LockName::new("behind").unwrap();
        for (name, fence) in [(&ahead, huge.as_str()), (&behind, "5")] {
            insert(
                &path,
                &row("randomblob(16)", "'l'", "1", fence, &this_boot(), "0"),
                name.as_str(),
            );
        }
        let lease = b.try_acquire(&ahead, &holder("next"), LONG).await.unwrap();
        let fence = lease.expect("an expired row is free").fence;
        assert_eq!(fence, u64::try_from(HUGE_FENCE).unwrap() + 1, "{context}");
        let before = fence_seed_now();
        let lease = b.try_acquire(&behind, &holder("next"), LONG).await.unwrap();
        let fence = lease.expect("an expired row is free").fence;
        let after = fence_seed_now();
        assert!(
            (before..=after).contains(&fence),
            "{context}: fence {fence} is not the clock ({before}..={after})"
        );
        let stored = raw_i64(&path, "SELECT fence FROM lock_leases WHERE name = 'behind'");
        assert_eq!(u64::try_from(stored).unwrap(), fence, "{context}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_skips_unreadable_rows_but_not_database_failures() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.db");
        let b = driver.open(&path).await.unwrap();
        let leases = acquire_all(&*b, &["job/a", "job/c"]).await;
        let garbled = &garbled_rows()[0];
        insert(&path, &garbled.sql, "job/b");
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
async fn a_garbled_fence_counter_is_corrupt_for_new_names_only() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counter.db");
        let b = driver.open(&path).await.unwrap();
        let known = LockName::new("counted").unwrap();
        let mut last = b
            .try_acquire(&known, &holder("a"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert!(b.release(&last).await.unwrap());
        let garbles = [
            "UPDATE lock_meta SET value = 'many' WHERE key = 'fence_seed'",
            "UPDATE lock_meta SET value = -3 WHERE key = 'fence_seed'",
            "UPDATE lock_meta SET value = 9007199254740991 WHERE key = 'fence_seed'",
            "DELETE FROM lock_meta WHERE key = 'fence_seed'",
        ];
        for (i, garble) in garbles.into_iter().enumerate() {
            let context = format!("{driver:?}: {garble}");
            raw(&path).execute_batch(garble).unwrap();
            let new = LockName::new(format!("new-{i}")).unwrap();
            assert_corrupt(
                b.try_acquire(&new, &holder("b"), LONG).await,
                "fence counter",
                &context,
            );
            assert!(b.inspect(&new).await.unwrap().is_none(), "{context}");
            // A known name keeps its own fence: the counter is not involved.
            let again = b
                .try_acquire(&known, &holder("c"), LONG)
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"))
                .unwrap();
            assert!(again.fence > last.fence, "{context}");
            assert!(b.release(&again).await.unwrap());
            last = again;
            // Clearing a corrupt row needs the counter too: refused, and the row stays.
            let bad = LockName::new(format!("bad-{i}")).unwrap();
            insert(&path, &garbled_rows()[0].sql, bad.as_str());
            assert_corrupt(b.force_release(&bad).await, "fence counter", &context);
            assert_corrupt(b.inspect(&bad).await, "owner", &context);
            raw(&path)
                .execute_batch(
                    "INSERT OR REPLACE INTO lock_meta (key, value) VALUES ('fence_seed', 1)",
                )
                .unwrap();
            b.force_release(&bad).await.unwrap();
        }
        let seed_before = fence_seed_now();
        let next = b
            .try_acquire(&LockName::new("new").unwrap(), &holder("d"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert!(next.fence >= seed_before, "{driver:?}");
        assert_eq!(
            u64::try_from(raw_i64(
                &path,
                "SELECT value FROM lock_meta WHERE key = 'fence_seed'"
            ))
            .unwrap(),
            next.fence,
            "{driver:?}"
        );
        assert!(b.release(&next).await.unwrap());
    }
}
