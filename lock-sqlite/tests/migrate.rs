//! A database written by lock-sqlite with schema version 1 (one global fence counter, rows
//! deleted on release) is migrated in place to version 2 (per-name fences) on open: its
//! leases are honoured and every fence after the migration is higher than the ones before.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{DRIVERS, LONG, holder, raw, raw_i64, snapshot};
use futures_util::future::join_all;
use lock_core::backend_kit::time::to_unix_millis;
use lock_core::{Holder, Lease, LockName};
use lock_sqlite::SqliteOptions;

/// Schema version 1 exactly as lock-sqlite 1 created it.
const V1_SCHEMA: &str = "\
    CREATE TABLE IF NOT EXISTS lock_meta (\
     key TEXT PRIMARY KEY NOT NULL, \
     value INTEGER NOT NULL);\
    CREATE TABLE IF NOT EXISTS lock_leases (\
     name TEXT PRIMARY KEY NOT NULL, \
     owner BLOB NOT NULL, \
     label TEXT NOT NULL, \
     pid INTEGER NOT NULL, \
     host TEXT NOT NULL, \
     fence INTEGER NOT NULL, \
     acquired_at_ms INTEGER NOT NULL, \
     expires_at_ms INTEGER NOT NULL);\
    INSERT OR IGNORE INTO lock_meta (key, value) \
     VALUES ('schema_version', 1), ('fence', 0);";

/// Version 1's fence statement, as a version 1 process still running would run it.
const V1_NEXT_FENCE: &str = "UPDATE lock_meta SET value = value + 1 \
     WHERE key = 'fence' AND typeof(value) = 'integer' \
     AND value >= 0 AND value < 9223372036854775807 RETURNING value";

/// The fences version 1 had issued before the migration (the last one is held).
const V1_FENCES: i64 = 41;

/// Writes a version 1 database at `path` the way version 1 would have left it: the
/// counter advanced by earlier (released, so deleted) leases, and one live lease held by
/// `holder` with the last fence. Returns that lease.
fn write_v1_database(path: &Path, holder: &Holder, journal_mode: &str) -> Lease {
    let conn = raw(path);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = {journal_mode}; {V1_SCHEMA}"
    ))
    .unwrap();
    let mut fence = 0;
    for _ in 0..V1_FENCES {
        fence = conn
            .query_row(V1_NEXT_FENCE, [], |r| r.get::<_, i64>(0))
            .unwrap();
    }
    let now = to_unix_millis(SystemTime::now());
    let expires = now + i64::try_from(LONG.as_millis()).unwrap();
    conn.execute(
        "INSERT INTO lock_leases VALUES ('v1-job', ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        rusqlite::params![
            holder.token.as_u128().to_be_bytes().to_vec(),
            holder.label,
            holder.pid,
            holder.host,
            fence,
            now,
            expires,
        ],
    )
    .unwrap();
    Lease::new(
        LockName::new("v1-job").unwrap(),
        holder.clone(),
        u64::try_from(fence).unwrap(),
        lock_core::backend_kit::time::from_unix_millis(expires),
        Instant::now(),
        LONG,
    )
}

fn meta(path: &Path, key: &str) -> i64 {
    raw_i64(
        path,
        &format!("SELECT value FROM lock_meta WHERE key = '{key}'"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated_and_its_leases_honoured() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let v1_holder = holder("v1-holder");
        let v1_lease = write_v1_database(&path, &v1_holder, "WAL");
        let context = format!("{driver:?}");

        let b = driver
            .open(&path)
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(meta(&path, "schema_version"), 2, "{context}");
        assert_eq!(meta(&path, "fence_seed"), V1_FENCES, "{context}");
        assert_eq!(
            raw_i64(&path, "SELECT count(*) FROM lock_meta"),
            2,
            "{context}: the counter was renamed, not copied"
        );
        // A version 1 process that still has the database open can no longer issue a
        // fence (it reports its counter as corrupt instead of going below version 2's).
        let v1_fence: Option<i64> = raw(&path)
            .query_row(V1_NEXT_FENCE, [], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .unwrap();
        assert_eq!(v1_fence, None, "{context}");

        // The version 1 lease is honoured and its holder keeps renewing it.
        let name = &v1_lease.name;
        assert!(
            b.try_acquire(name, &holder("rival"), LONG)
                .await
                .unwrap()
                .is_none(),
            "{context}: the version 1 lease is live"
        );
        let info = b.inspect(name).await.unwrap().expect("held");
        assert_eq!(
            (info.label.as_str(), info.fence),
            ("v1-holder", v1_lease.fence)
        );
        let short = Duration::from_millis(200);
        let renewed = b.heartbeat(&v1_lease, short).await.unwrap();
        assert_eq!(renewed.fence, v1_lease.fence, "{context}");

        // Once it expires, the next fence is above every version 1 fence.
        tokio::time::sleep(short + Duration::from_millis(300)).await;
        let next = b
            .try_acquire(name, &holder("after"), LONG)
            .await
            .unwrap()
            .expect("expired");
        assert!(
            next.fence > v1_lease.fence,
            "{context}: {} after {}",
            next.fence,
            v1_lease.fence
        );
        assert!(!b.release(&renewed).await.unwrap(), "{context}: lost");
        // A name version 1 never used is seeded above the counter it left, too.
        let fresh = b
            .try_acquire(&LockName::new("new").unwrap(), &holder("new"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert!(fresh.fence > u64::try_from(V1_FENCES).unwrap(), "{context}");
        assert!(b.release(&next).await.unwrap());
        assert!(b.release(&fresh).await.unwrap());
        drop(b);

        // Opening it again finds version 2: nothing more to do.
        let again = driver.open(&path).await.unwrap();
        assert_eq!(meta(&path, "schema_version"), 2, "{context}");
        assert!(again.inspect(name).await.unwrap().is_none(), "{context}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_a_version_1_database_migrate_it_once() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let v1_lease = write_v1_database(&path, &holder("v1"), "WAL");
        let opens = (0..6).map(|_| {
            let path = path.clone();
            tokio::spawn(async move { driver.open(&path).await })
        });
        let backends: Vec<_> = join_all(opens)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap_or_else(|e| panic!("{driver:?}: {e}")))
            .collect();
        assert_eq!(meta(&path, "schema_version"), 2, "{driver:?}");
        assert_eq!(meta(&path, "fence_seed"), V1_FENCES, "{driver:?}");
        assert_eq!(
            raw_i64(&path, "SELECT count(*) FROM lock_meta"),
            2,
            "{driver:?}"
        );
        for b in &backends {
            assert_eq!(
                b.inspect(&v1_lease.name).await.unwrap().unwrap().fence,
                v1_lease.fence,
                "{driver:?}"
            );
        }
        assert!(backends[0].release(&v1_lease).await.unwrap(), "{driver:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_client_reads_a_version_1_database_without_migrating_it() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        // Rollback journal, so that reading it creates no side files to compare.
        let v1_lease = write_v1_database(&path, &holder("v1"), "DELETE");
        let before = snapshot(dir.path());
        let reader = driver
            .open_with(SqliteOptions::new(&path).with_read_only(true))
            .await
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        assert_eq!(
            reader.inspect(&v1_lease.name).await.unwrap().unwrap().fence,
            v1_lease.fence,
            "{driver:?}"
        );
        assert_eq!(reader.list("").await.unwrap().len(), 1, "{driver:?}");
        drop(reader);
        assert!(
            snapshot(dir.path()) == before,
            "{driver:?}: a read-only open changed the database"
        );
        assert_eq!(meta(&path, "schema_version"), 1, "{driver:?}");
    }
}
