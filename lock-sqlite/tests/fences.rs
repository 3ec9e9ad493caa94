//! Hybrid fences: each grant gives `max(counter + 1, wall clock in microseconds)`, so a
//! fence is never reissued when the database loses its latest writes (a backup restored in
//! place), and fences keep rising when the wall clock steps back (the counter leads).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{BackupRollback, DRIVERS, LONG, holder, raw_i64};
use lock_core::backend_kit::clock::SteppedClock;
use lock_core::{Lease, LockBackend, LockError, LockName};

async fn take(b: &Arc<dyn LockBackend>, name: &LockName, label: &str) -> Lease {
    b.try_acquire(name, &holder(label), LONG)
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}"))
        .unwrap_or_else(|| panic!("{label}: {name:?} should be free"))
}

async fn permit(b: &Arc<dyn LockBackend>, name: &LockName, label: &str, limit: u32) -> Lease {
    b.try_acquire_permit(name, &holder(label), LONG, limit)
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}"))
        .unwrap_or_else(|| panic!("{label}: {name:?} should have a free permit"))
}

/// The database is copied with SQLite's online backup API after f1; f2 and f3 (held) are
/// granted, and a new name and a semaphore's permits too; the copy is restored in place
/// while both clients keep the database open. Every fence after that is above every fence
/// granted before, although the restored rows and seed went back to f1's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_rise_after_a_backup_is_restored_in_place() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("restored.db");
        let b = driver.open(&path).await.unwrap();
        let second = driver.open(&path).await.unwrap();
        let backup = BackupRollback::new(&path);
        let (name, born, sem) = (
            LockName::new("restored").unwrap(),
            LockName::new("born-after-the-backup").unwrap(),
            LockName::new("restored-semaphore").unwrap(),
        );
        let f1 = take(&b, &name, "f1").await;
        assert!(b.release(&f1).await.unwrap());
        let p1 = permit(&b, &sem, "p1", 2).await;
        assert!(b.release(&p1).await.unwrap());
        backup.take_checkpoint();

        let f2 = take(&second, &name, "f2").await;
        assert!(second.release(&f2).await.unwrap());
        let f3 = take(&b, &name, "f3").await;
        let g1 = take(&b, &born, "g1").await;
        let p2 = permit(&b, &sem, "p2", 2).await;
        let p3 = permit(&second, &sem, "p3", 2).await;
        let seed_before = raw_i64(
            &path,
            "SELECT value FROM lock_meta WHERE key = 'fence_seed'",
        );

        backup.restore_checkpoint();
        let context = format!("{driver:?}");
        assert!(
            raw_i64(
                &path,
                "SELECT value FROM lock_meta WHERE key = 'fence_seed'"
            ) < seed_before,
            "{context}: the restore took the seed back"
        );
        assert_eq!(
            raw_i64(
                &path,
                "SELECT max(fence) FROM lock_leases WHERE name = 'restored'"
            ),
            i64::try_from(f1.fence).unwrap(),
            "{context}: the restore took the name's counter back to f1"
        );
        // Leases granted after the backup are gone with the lost writes.
        match b.heartbeat(&f3, LONG).await {
            Err(LockError::LeaseLost { .. }) => {}
            other => panic!("{context}: f3 survived the restore: {other:?}"),
        }
        assert!(b.inspect(&born).await.unwrap().is_none(), "{context}");
        let f4 = take(&second, &name, "f4").await;
        assert!(
            f4.fence > f3.fence && f3.fence > f2.fence && f2.fence > f1.fence,
            "{context}: f1 {}, f2 {}, f3 {}, then {}",
            f1.fence,
            f2.fence,
            f3.fence,
            f4.fence
        );
        let g2 = take(&second, &born, "g2").await;
        assert!(
            g2.fence > g1.fence,
            "{context}: {} after {}",
            g2.fence,
            g1.fence
        );
        let p4 = permit(&b, &sem, "p4", 2).await;
        let p5 = permit(&second, &sem, "p5", 2).await;
        let highest = p2.fence.max(p3.fence);
        assert!(
            p4.fence > highest && p5.fence > p4.fence,
            "{context}: {} and {} after {highest}",
            p4.fence,
            p5.fence
        );
        for lease in [&f4, &g2, &p4, &p5] {
            assert!(b.release(lease).await.unwrap(), "{context}");
        }
    }
}

/// With the wall clock stepped back an hour, the clock is below every fence granted: each
/// grant is then the counter + 1, for a name's next lease, a new name (the seed) and each
/// permit, whichever client (on whichever clock) granted the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_rise_when_the_wall_clock_steps_back() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stepped.db");
        let clock = Arc::new(SteppedClock::new());
        let stepped = driver
            .open_with_clock(&path, clock.clone())
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        let plain = driver.open(&path).await.unwrap();
        let context = format!("{driver:?}");
        let name = LockName::new("stepped").unwrap();
        let first = LockName::new("first-name").unwrap();
        let f1 = take(&stepped, &name, "f1").await;
        assert!(stepped.release(&f1).await.unwrap());
        let n1 = take(&stepped, &first, "n1").await;

        clock.step_wall(Duration::from_secs(3600), false);
        let f2 = take(&stepped, &name, "f2").await;
        assert_eq!(f2.fence, f1.fence + 1, "{context}: the counter leads");
        assert!(stepped.release(&f2).await.unwrap());
        // A client whose clock did not step grants by the clock again...
        let f3 = take(&plain, &name, "f3").await;
        assert!(f3.fence > f2.fence, "{context}");
        assert!(plain.release(&f3).await.unwrap());
        // ...and the stepped one goes on above it.
        let f4 = take(&stepped, &name, "f4").await;
        assert_eq!(f4.fence, f3.fence + 1, "{context}");
        assert!(stepped.release(&f4).await.unwrap());
        // A new name is seeded above the last new name's fence.
        let second_name = LockName::new("second-name").unwrap();
        let n2 = take(&stepped, &second_name, "n2").await;
        assert_eq!(n2.fence, n1.fence + 1, "{context}: the seed leads");
        // Permits: each above the last, across slots.
        let sem = LockName::new("stepped-semaphore").unwrap();
        let mut fences = Vec::new();
        for i in 0..3 {
            let p = permit(&stepped, &sem, &format!("p{i}"), 3).await;
            fences.push(p.fence);
            assert!(stepped.release(&p).await.unwrap());
        }
        assert!(
            fences.windows(2).all(|w| w[1] == w[0] + 1),
            "{context}: {fences:?}"
        );
        assert!(stepped.release(&n1).await.unwrap());
        assert!(stepped.release(&n2).await.unwrap());
    }
}

/// A name used as a semaphore and then as a lock: the lock's fence is above every permit's,
/// not only above the fence of the slot it takes (slot 0). The wall clock is stepped back
/// so that only the counter can put it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_after_a_semaphore_is_fenced_above_every_permit() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.db");
        let clock = Arc::new(SteppedClock::new());
        let b = driver.open_with_clock(&path, clock.clone()).await.unwrap();
        let context = format!("{driver:?}");
        let name = LockName::new("mixed").unwrap();
        let permits = [
            permit(&b, &name, "slot0", 3).await,
            permit(&b, &name, "slot1", 3).await,
            permit(&b, &name, "slot2", 3).await,
        ];
        // Renewed together, in one transaction.
        let renewed = b.heartbeat_many(&permits, LONG).await;
        assert!(renewed.iter().all(Result::is_ok), "{context}: {renewed:?}");
        assert_eq!(
            raw_i64(
                &path,
                "SELECT count(*) FROM lock_leases WHERE name = 'mixed'"
            ),
            3,
            "{context}: one row per permit"
        );
        // Freed out of order: slot 0 (the lowest fence) last.
        for lease in permits.iter().rev() {
            assert!(b.release(lease).await.unwrap(), "{context}");
        }
        clock.step_wall(Duration::from_secs(3600), false);
        let lock = take(&b, &name, "lock").await;
        assert_eq!(
            lock.fence,
            permits[2].fence + 1,
            "{context}: above the highest permit, which was not slot 0's"
        );
        assert!(b.release(&lock).await.unwrap());
    }
}
