//! Databases written by lock-sqlite with schema version 1 (one global fence counter, rows
//! deleted on release) or version 2 (per-name fences, expiry on the wall clock) are
//! migrated in place to version 3 (one row per permit, expiry on the boot clock, hybrid
//! fences) on open: their leases are honoured for the rest of their TTL, every fence after
//! the migration is higher than the ones before, and a version 1 or 2 process that still
//! has the database open fails instead of granting a lease.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{DRIVERS, LONG, assert_config, close, holder, raw, raw_i64, raw_string, snapshot};
use futures_util::future::join_all;
use lock_core::backend_kit::time::{fence_seed_now, from_unix_millis, to_unix_millis};
use lock_core::{Holder, Lease, LockError, LockName};
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

/// Schema version 2 exactly as lock-sqlite 2 created it.
const V2_SCHEMA: &str = "\
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
     VALUES ('schema_version', 2), ('fence_seed', 0);";

/// Version 2's statements, exactly as lock-sqlite 2 runs them: to write version 2
/// databases, and to play a version 2 process that still has the database open.
mod v2 {
    pub(super) const NEXT_SEED_FENCE: &str = "UPDATE lock_meta SET value = max(value + 1, ?1) \
         WHERE key = 'fence_seed' AND typeof(value) = 'integer' \
         AND value >= 0 AND value < 9223372036854775807 RETURNING value";
    pub(super) const INSERT_LEASE: &str = "INSERT INTO lock_leases \
         (name, owner, label, pid, host, fence, acquired_at_ms, expires_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    pub(super) const TAKE_EXPIRED_LEASE: &str = "UPDATE lock_leases SET \
         owner = ?2, label = ?3, pid = ?4, host = ?5, fence = fence + 1, \
         acquired_at_ms = ?6, expires_at_ms = ?7 \
         WHERE name = ?1 AND typeof(expires_at_ms) = 'integer' AND expires_at_ms <= ?6 \
         AND typeof(fence) = 'integer' AND fence > 0 AND fence < 9223372036854775807 \
         RETURNING fence";
    pub(super) const SELECT_LEASE: &str = "SELECT name, owner, label, pid, host, fence, \
         acquired_at_ms, expires_at_ms FROM lock_leases WHERE name = ?1";
    pub(super) const EXTEND_OWNED_LEASE: &str = "UPDATE lock_leases SET expires_at_ms = ?3 \
         WHERE name = ?1 AND owner = ?2 AND typeof(expires_at_ms) = 'integer' \
         AND expires_at_ms > ?4 RETURNING 1";
    pub(super) const FREE_OWNED_LEASE: &str = "UPDATE lock_leases SET expires_at_ms = 0 \
         WHERE name = ?1 AND owner = ?2 AND typeof(expires_at_ms) = 'integer' \
         AND expires_at_ms > ?3 RETURNING 1";
}

/// How long the live version 2 lease that is left to expire still has when written.
const V2_LEFT: Duration = Duration::from_secs(2);

fn token_bytes(holder: &Holder) -> Vec<u8> {
    holder.token.as_u128().to_be_bytes().to_vec()
}

fn lease(name: &str, holder: &Holder, fence: i64, expires_at_ms: i64, ttl: Duration) -> Lease {
    Lease::new(
        LockName::new(name).unwrap(),
        holder.clone(),
        u64::try_from(fence).unwrap(),
        from_unix_millis(expires_at_ms),
        Instant::now(),
        ttl,
    )
}

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
            token_bytes(holder),
            holder.label,
            holder.pid,
            holder.host,
            fence,
            now,
            expires,
        ],
    )
    .unwrap();
    lease("v1-job", holder, fence, expires, LONG)
}

/// A version 2 database as version 2 would have left it.
struct V2Database {
    /// Live for [`V2_LEFT`] more when written, then left to expire.
    expiring: Lease,
    /// Live for [`LONG`] more; its holder keeps renewing it after the migration.
    kept: Lease,
    /// A released name and its last fence.
    freed: (LockName, u64),
    /// The fence seed.
    seed: i64,
}

/// Writes a version 2 database at `path` with version 2's own statements: a released
/// name, two live leases, and a row with an expiry that is not a time (corrupt).
fn write_v2_database(path: &Path, journal_mode: &str) -> V2Database {
    let conn = raw(path);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = {journal_mode}; {V2_SCHEMA}"
    ))
    .unwrap();
    let now = to_unix_millis(SystemTime::now());
    let grant = |name: &str, holder: &Holder, expires: i64| -> i64 {
        let micros = i64::try_from(fence_seed_now()).unwrap();
        let fence: i64 = conn
            .query_row(v2::NEXT_SEED_FENCE, [micros], |r| r.get(0))
            .unwrap();
        conn.execute(
            v2::INSERT_LEASE,
            rusqlite::params![
                name,
                token_bytes(holder),
                holder.label,
                holder.pid,
                holder.host,
                fence,
                now,
                expires
            ],
        )
        .unwrap();
        fence
    };
    let freed_fence = grant("v2-freed", &holder("v2-freed"), 0);
    let expiring_holder = holder("v2-expiring");
    let expiring_at = now + i64::try_from(V2_LEFT.as_millis()).unwrap();
    let expiring = grant("v2-expiring", &expiring_holder, expiring_at);
    let kept_holder = holder("v2-kept");
    let kept_at = now + i64::try_from(LONG.as_millis()).unwrap();
    let kept = grant("v2-kept", &kept_holder, kept_at);
    conn.execute(
        "INSERT INTO lock_leases VALUES ('v2-garbled', randomblob(16), 'l', 1, 'h', 5, 0, \
         'tomorrow')",
        [],
    )
    .unwrap();
    let seed = meta(path, "fence_seed");
    V2Database {
        expiring: lease(
            "v2-expiring",
            &expiring_holder,
            expiring,
            expiring_at,
            V2_LEFT,
        ),
        kept: lease("v2-kept", &kept_holder, kept, kept_at, LONG),
        freed: (
            LockName::new("v2-freed").unwrap(),
            u64::try_from(freed_fence).unwrap(),
        ),
        seed,
    }
}

fn meta(path: &Path, key: &str) -> i64 {
    raw_i64(
        path,
        &format!("SELECT value FROM lock_meta WHERE key = '{key}'"),
    )
}

/// The lease table's columns, comma-separated.
fn lease_columns(path: &Path) -> String {
    raw_string(
        path,
        "SELECT group_concat(name, ',') FROM (SELECT name FROM \
         pragma_table_info('lock_leases') ORDER BY cid)",
    )
}

const V4_COLUMNS: &str =
    "name,slot,owner,label,pid,host,fence,lease_limit,acquired_at_ms,boot_id,expires_boot_ms,hold";

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
        assert_eq!(meta(&path, "schema_version"), 4, "{context}");
        assert_eq!(meta(&path, "fence_seed"), V1_FENCES, "{context}");
        assert_eq!(lease_columns(&path), V4_COLUMNS, "{context}");
        assert_eq!(
            raw_i64(&path, "SELECT count(*) FROM lock_meta"),
            2,
            "{context}: the counter was renamed, not copied"
        );
        // A version 1 process that still has the database open can no longer issue a
        // fence (it reports its counter as corrupt instead of going below version 3's),
        // nor read or write a lease.
        let v1_fence: Option<i64> = raw(&path)
            .query_row(V1_NEXT_FENCE, [], |r| r.get(0))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                other => Err(other),
            })
            .unwrap();
        assert_eq!(v1_fence, None, "{context}");
        assert!(
            raw(&path)
                .execute("DELETE FROM lock_leases WHERE expires_at_ms <= 0", [])
                .is_err(),
            "{context}"
        );

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
            (info.label.as_str(), info.fence, info.limit),
            ("v1-holder", v1_lease.fence, 1)
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

        // Opening it again finds version 3: nothing more to do.
        let again = driver.open(&path).await.unwrap();
        assert_eq!(meta(&path, "schema_version"), 4, "{context}");
        assert!(again.inspect(name).await.unwrap().is_none(), "{context}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_database_is_migrated_and_live_leases_keep_their_time_left() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        let v2 = write_v2_database(&path, "WAL");
        let context = format!("{driver:?}");

        let b = driver
            .open(&path)
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(meta(&path, "schema_version"), 4, "{context}");
        assert_eq!(meta(&path, "fence_seed"), v2.seed, "{context}");
        assert_eq!(lease_columns(&path), V4_COLUMNS, "{context}");
        assert_eq!(raw_i64(&path, "SELECT count(*) FROM lock_meta"), 2);
        assert_eq!(
            raw_i64(&path, "SELECT count(*) FROM lock_leases"),
            4,
            "{context}: every row was kept"
        );

        // The lease left to expire is held for the rest of its TTL, shown with the same
        // wall-clock expiry as before, then free.
        let name = &v2.expiring.name;
        let info = b.inspect(name).await.unwrap().expect("still held");
        assert_eq!(
            (info.label.as_str(), info.fence, info.limit),
            ("v2-expiring", v2.expiring.fence, 1),
            "{context}"
        );
        assert!(
            close(
                info.expires_at,
                v2.expiring.expires_at,
                Duration::from_millis(50)
            ),
            "{context}: shown {:?}, written {:?}",
            info.expires_at,
            v2.expiring.expires_at
        );
        assert!(
            b.try_acquire(name, &holder("rival"), LONG)
                .await
                .unwrap()
                .is_none(),
            "{context}: taken over before its TTL"
        );

        // The other live lease's holder renews and releases it as before.
        let renewed = b
            .heartbeat(&v2.kept, LONG)
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(renewed.fence, v2.kept.fence, "{context}");
        assert!(b.release(&renewed).await.unwrap(), "{context}");

        // A released name and a new name get fences above every version 2 fence.
        let (freed, freed_fence) = &v2.freed;
        let again = b
            .try_acquire(freed, &holder("again"), LONG)
            .await
            .unwrap()
            .expect("released in version 2");
        assert!(again.fence > *freed_fence, "{context}");
        let fresh = b
            .try_acquire(&LockName::new("fresh").unwrap(), &holder("fresh"), LONG)
            .await
            .unwrap()
            .unwrap();
        assert!(fresh.fence > u64::try_from(v2.seed).unwrap(), "{context}");
        // A corrupt row stays corrupt (and force_release clears it).
        let garbled = LockName::new("v2-garbled").unwrap();
        match b.inspect(&garbled).await {
            Err(LockError::Corrupt { detail, .. }) => {
                assert!(detail.contains("expiry"), "{context}: {detail}");
            }
            other => panic!("{context}: expected Corrupt, got {other:?}"),
        }
        b.force_release(&garbled).await.unwrap();
        assert!(b.inspect(&garbled).await.unwrap().is_none(), "{context}");

        let left = v2
            .expiring
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(left + Duration::from_millis(500)).await;
        let next = b
            .try_acquire(name, &holder("after"), LONG)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: still held after its TTL"));
        assert!(next.fence > v2.expiring.fence, "{context}");
        for lease in [again, fresh, next] {
            assert!(b.release(&lease).await.unwrap(), "{context}");
        }
    }
}

/// A version 2 process that still has the database open while a version 3 one migrates it
/// (a rolling upgrade) fails every statement it runs on the lease table, whatever its wall
/// clock says: it can neither take a lease (over a version 3 holder, or for a new name),
/// nor renew or free one. Its statements are prepared before the migration, as a running
/// process's cached statements are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_process_still_running_fails_instead_of_granting() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolling.db");
        let v2_db = write_v2_database(&path, "WAL");
        let context = format!("{driver:?}");
        let old = raw(&path);
        let mut take = old.prepare(v2::TAKE_EXPIRED_LEASE).unwrap();
        let mut select = old.prepare(v2::SELECT_LEASE).unwrap();
        let mut next_seed = old.prepare(v2::NEXT_SEED_FENCE).unwrap();
        let mut insert = old.prepare(v2::INSERT_LEASE).unwrap();
        let mut extend = old.prepare(v2::EXTEND_OWNED_LEASE).unwrap();
        let mut free = old.prepare(v2::FREE_OWNED_LEASE).unwrap();
        // Before the migration, the version 2 process works.
        assert!(
            select
                .exists([v2_db.kept.name.as_str()])
                .unwrap_or_else(|e| panic!("{context}: {e}")),
            "{context}"
        );

        let b = driver.open(&path).await.unwrap();
        assert_eq!(meta(&path, "schema_version"), 4, "{context}");
        let name = LockName::new("contended").unwrap();
        let held = b
            .try_acquire(&name, &holder("v3"), LONG)
            .await
            .unwrap()
            .unwrap();

        // The version 2 process, its wall clock two minutes ahead (as under faketime), tries
        // to take the version 3 lease, a lease it held, and a new name.
        let intruder = holder("v2-process");
        let ahead = to_unix_millis(SystemTime::now() + Duration::from_secs(120));
        let later = ahead + 60_000;
        for target in [name.as_str(), v2_db.kept.name.as_str()] {
            let taken = take.query_row(
                rusqlite::params![target, token_bytes(&intruder), "v2", 1, "h", ahead, later],
                |r| r.get::<_, i64>(0),
            );
            assert!(
                taken.is_err(),
                "{context}: a version 2 takeover of {target}: {taken:?}"
            );
            assert!(select.exists([target]).is_err(), "{context}: {target}");
        }
        // A new name: the seed statement still runs (it only raises the seed), the
        // insert that would grant the lease fails, and version 2 rolls both back.
        old.execute_batch("BEGIN IMMEDIATE").unwrap();
        let micros = i64::try_from(fence_seed_now()).unwrap();
        let fence: i64 = next_seed.query_row([micros], |r| r.get(0)).unwrap();
        let inserted = insert.execute(rusqlite::params![
            "v2-new",
            token_bytes(&intruder),
            "v2",
            1,
            "h",
            fence,
            ahead,
            later
        ]);
        assert!(inserted.is_err(), "{context}: {inserted:?}");
        old.execute_batch("ROLLBACK").unwrap();
        let kept = &v2_db.kept;
        let owner = token_bytes(&kept.holder);
        let renewed = extend.exists(rusqlite::params![kept.name.as_str(), owner, later, ahead]);
        assert!(renewed.is_err(), "{context}: {renewed:?}");
        let freed = free.exists(rusqlite::params![kept.name.as_str(), owner, ahead]);
        assert!(freed.is_err(), "{context}: {freed:?}");

        // Nothing changed: the version 3 holder and the version 2 lease (now version 3's)
        // are as they were, and the new name was not taken.
        let info = b.inspect(&name).await.unwrap().expect("still held");
        assert_eq!((info.fence, info.label.as_str()), (held.fence, "v3"));
        let info = b.inspect(&kept.name).await.unwrap().expect("still held");
        assert_eq!(info.fence, kept.fence, "{context}");
        let new = LockName::new("v2-new").unwrap();
        assert!(b.inspect(&new).await.unwrap().is_none(), "{context}");
        assert!(b.release(&held).await.unwrap(), "{context}");
        assert!(b.release(kept).await.unwrap(), "{context}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_of_an_older_database_migrate_it_once() {
    for &driver in DRIVERS {
        for version in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            let (held, seed) = if version == 1 {
                (write_v1_database(&path, &holder("v1"), "WAL"), V1_FENCES)
            } else {
                let v2 = write_v2_database(&path, "WAL");
                (v2.kept, v2.seed)
            };
            let context = format!("{driver:?}, version {version}");
            let opens = (0..6).map(|_| {
                let path = path.clone();
                tokio::spawn(async move { driver.open(&path).await })
            });
            let backends: Vec<_> = join_all(opens)
                .await
                .into_iter()
                .map(|r| r.unwrap().unwrap_or_else(|e| panic!("{context}: {e}")))
                .collect();
            assert_eq!(meta(&path, "schema_version"), 4, "{context}");
            assert_eq!(meta(&path, "fence_seed"), seed, "{context}");
            assert_eq!(
                raw_i64(&path, "SELECT count(*) FROM lock_meta"),
                2,
                "{context}"
            );
            for b in &backends {
                assert_eq!(
                    b.inspect(&held.name).await.unwrap().unwrap().fence,
                    held.fence,
                    "{context}"
                );
            }
            assert!(backends[0].release(&held).await.unwrap(), "{context}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_client_reads_an_older_database_without_migrating_it() {
    for &driver in DRIVERS {
        for version in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            // Rollback journal, so that reading it creates no side files to compare.
            let (held, live) = if version == 1 {
                (write_v1_database(&path, &holder("v1"), "DELETE"), 1)
            } else {
                let v2 = write_v2_database(&path, "DELETE");
                (v2.kept, 2)
            };
            let context = format!("{driver:?}, version {version}");
            let before = snapshot(dir.path());
            let reader = driver
                .open_with(SqliteOptions::new(&path).with_read_only(true))
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            let info = reader.inspect(&held.name).await.unwrap().unwrap();
            assert_eq!((info.fence, info.limit), (held.fence, 1), "{context}");
            assert!(
                close(info.expires_at, held.expires_at, Duration::from_millis(50)),
                "{context}: {:?} vs {:?}",
                info.expires_at,
                held.expires_at
            );
            let listed = reader.list("").await.unwrap();
            assert_eq!(listed.len(), live, "{context}: {listed:?}");
            assert_eq!(reader.inspect_all(&held.name).await.unwrap().len(), 1);
            assert_config(
                reader.release(&held).await,
                &["read-only", &format!("version {version}"), "migrates"],
                &context,
            );
            assert_config(
                reader
                    .try_acquire(&LockName::new("x").unwrap(), &holder("x"), LONG)
                    .await,
                &["read-only"],
                &context,
            );
            drop(reader);
            assert!(
                snapshot(dir.path()) == before,
                "{context}: a read-only open changed the database"
            );
            assert_eq!(meta(&path, "schema_version"), version, "{context}");
        }
    }
}

/// Schema version 3 as that version created it: one row per permit, boot-clock expiry, no
/// holds.
const V3_SCHEMA: &str = "\
    CREATE TABLE lock_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);\
    INSERT INTO lock_meta VALUES ('schema_version', 3), ('fence_seed', 0);\
    CREATE TABLE lock_leases (name TEXT NOT NULL, slot INTEGER NOT NULL, owner BLOB NOT NULL, \
    label TEXT NOT NULL, pid INTEGER NOT NULL, host TEXT NOT NULL, fence INTEGER NOT NULL, \
    lease_limit INTEGER NOT NULL, acquired_at_ms INTEGER NOT NULL, boot_id TEXT NOT NULL, \
    expires_boot_ms INTEGER NOT NULL, PRIMARY KEY (name, slot)) WITHOUT ROWID;";

/// A version 3 database gains the `hold` column in place: its live lease stays held (by a
/// holder without a hold, so only its TTL frees it), keeps its fence, and is renewed and
/// released by its token; a new lease records this process's hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_3_database_gains_holds_and_keeps_its_leases() {
    for &driver in DRIVERS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        let v3_holder = holder("v3");
        let expires = common::live_expiry();
        {
            let conn = raw(&path);
            conn.execute_batch(&format!("PRAGMA journal_mode = WAL; {V3_SCHEMA}"))
                .unwrap();
            conn.execute(
                "INSERT INTO lock_leases VALUES ('v3-job', 0, ?1, 'v3', 1, 'h', 77, 1, 0, ?2, ?3)",
                rusqlite::params![token_bytes(&v3_holder), common::boot_id(), expires],
            )
            .unwrap();
        }
        let context = format!("{driver:?}");
        let b = driver
            .open(&path)
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(meta(&path, "schema_version"), 4, "{context}");
        assert_eq!(lease_columns(&path), V4_COLUMNS, "{context}");
        let job = LockName::new("v3-job").unwrap();
        let info = b.inspect(&job).await.unwrap().expect("still held");
        assert_eq!((info.label.as_str(), info.fence), ("v3", 77), "{context}");
        assert!(
            b.try_acquire(&job, &holder("new"), LONG)
                .await
                .unwrap()
                .is_none(),
            "{context}: a version 3 lease without a hold is left to its TTL"
        );
        assert_eq!(
            raw_string(
                &path,
                "SELECT coalesce(hold, 'none') FROM lock_leases WHERE name = 'v3-job'"
            ),
            "none",
            "{context}"
        );
        let old = lease("v3-job", &v3_holder, 77, 0, LONG);
        let renewed = b.heartbeat(&old, LONG).await.unwrap();
        assert!(b.release(&renewed).await.unwrap(), "{context}");
        let next = b
            .try_acquire(&job, &holder("new"), LONG)
            .await
            .unwrap()
            .expect("free after the release");
        assert!(next.fence > 77, "{context}");
        let hold = raw_string(&path, "SELECT hold FROM lock_leases WHERE name = 'v3-job'");
        assert!(
            hold.contains(".hold:"),
            "{context}: the new lease's hold {hold:?}"
        );
        assert!(b.release(&next).await.unwrap(), "{context}");
    }
}
