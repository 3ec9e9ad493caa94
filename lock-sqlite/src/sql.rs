//! Every SQL statement this crate runs, shared by both drivers.
//!
//! Parameters are numbered (`?1`), which rusqlite and sqlx both bind by position.

/// The schema version this library writes and understands.
///
/// Version 4 adds `hold`: the stamp of the holder's process hold
/// (`lock_core::backend_kit::hold`), so that a contender can tell at once that the holder's
/// process died. Version 3 statements name their columns, so a version 3 process that still
/// has the database open keeps working: it writes `NULL` holds (its leases are freed by the
/// TTL only) or leaves another owner's stamp in a row it takes over, which the stamp's owner
/// tag exposes as not the row's.
///
/// Version 3 keeps one row per permit (`name`, `slot`), judges expiry on the host's boot
/// clock (`boot_id`, `expires_boot_ms`) and issues hybrid fences. Its `lock_leases` has no
/// `expires_at_ms` column any more: every statement of a version 1 or 2 process that still
/// has the database open names that column, so it fails (`no such column`) instead of
/// judging a version 3 lease by the wall clock or granting over it. Version 1 and 2
/// libraries refuse to open a version 3 database (it is newer than they understand).
pub(crate) const SCHEMA_VERSION: i64 = 4;

/// The largest fence, as a SQL literal: `lock_core::backend_kit::fence::MAX_FENCE`
/// (2^53 - 1). A test checks that they agree.
macro_rules! max_fence {
    () => {
        "9007199254740991"
    };
}

/// The columns of a version 3 lease row, in [`V3_LEASE_COLUMNS`] order, for `SELECT`s (which
/// read version 3 and 4 tables alike: `hold` is read only where a holder's liveness is
/// asked).
macro_rules! lease_columns {
    () => {
        "name, slot, owner, label, pid, host, fence, lease_limit, acquired_at_ms, boot_id, \
         expires_boot_ms"
    };
}

/// `CREATE TABLE $table` with the version 3 lease columns. `name` uses the default BINARY
/// collation, so names that differ in case or Unicode normalization are different rows.
/// Clustered by (`name`, `slot`) (`WITHOUT ROWID`): a name's permits sit next to each
/// other, and changing a row in place writes one page.
macro_rules! create_lease_table {
    ($table:literal) => {
        concat!(
            "CREATE TABLE IF NOT EXISTS ",
            $table,
            " (\
             name TEXT NOT NULL, \
             slot INTEGER NOT NULL, \
             owner BLOB NOT NULL, \
             label TEXT NOT NULL, \
             pid INTEGER NOT NULL, \
             host TEXT NOT NULL, \
             fence INTEGER NOT NULL, \
             lease_limit INTEGER NOT NULL, \
             acquired_at_ms INTEGER NOT NULL, \
             boot_id TEXT NOT NULL, \
             expires_boot_ms INTEGER NOT NULL, \
             hold TEXT, \
             PRIMARY KEY (name, slot)) WITHOUT ROWID"
        )
    };
}

/// The columns of `lock_meta`, in order (every schema version).
pub(crate) const META_COLUMNS: &[&str] = &["key", "value"];

/// The columns of `lock_leases`, in order, as schema version 4 creates them.
pub(crate) const LEASE_COLUMNS: &[&str] = &[
    "name",
    "slot",
    "owner",
    "label",
    "pid",
    "host",
    "fence",
    "lease_limit",
    "acquired_at_ms",
    "boot_id",
    "expires_boot_ms",
    "hold",
];

/// The columns of `lock_leases`, in order, as schema version 3 created them.
pub(crate) const V3_LEASE_COLUMNS: &[&str] = &[
    "name",
    "slot",
    "owner",
    "label",
    "pid",
    "host",
    "fence",
    "lease_limit",
    "acquired_at_ms",
    "boot_id",
    "expires_boot_ms",
];

/// The columns of `lock_leases`, in order, as schema versions 1 and 2 created them (one row
/// per name, expiry on the wall clock).
pub(crate) const LEGACY_LEASE_COLUMNS: &[&str] = &[
    "name",
    "owner",
    "label",
    "pid",
    "host",
    "fence",
    "acquired_at_ms",
    "expires_at_ms",
];

/// The tables this crate owns, with their `type` in `sqlite_master`.
pub(crate) const FIND_TABLES: &str = "SELECT name, type FROM sqlite_master \
     WHERE name IN ('lock_leases', 'lock_meta') ORDER BY name";

/// The column names of table `?1`, in order.
pub(crate) const TABLE_COLUMNS: &str = "SELECT name FROM pragma_table_info(?1) ORDER BY cid";

/// The stored schema version.
pub(crate) const SCHEMA_VERSION_ROW: &str =
    "SELECT value FROM lock_meta WHERE key = 'schema_version'";

/// The key/value table: the schema version and the fence seed.
pub(crate) const CREATE_META: &str = "CREATE TABLE IF NOT EXISTS lock_meta (\
     key TEXT PRIMARY KEY NOT NULL, \
     value INTEGER NOT NULL)";

/// One row per permit of a lock name: a lock uses slot 0, a semaphore of `n` slots 0 to
/// `n - 1`. A row stays when its lease is released or expires (it is then free), so that
/// the name's rows keep its last fence.
pub(crate) const CREATE_LEASES: &str = create_lease_table!("lock_leases");

/// The current version's rows and the fence seed, starting at 0.
pub(crate) const SEED_META: &str = "INSERT OR IGNORE INTO lock_meta (key, value) \
     VALUES ('schema_version', 4), ('fence_seed', 0)";

/// Migration from version 1: the global counter becomes the fence seed. Renaming the row
/// (rather than keeping `fence`) makes a version 1 process that still has the database
/// open fail its next fence with `Corrupt` instead of issuing a fence below the per-name
/// ones. Whatever the row holds is kept: a damaged counter stays visible as damaged.
pub(crate) const MIGRATE_V1_FENCE_COUNTER: &str =
    "UPDATE OR REPLACE lock_meta SET key = 'fence_seed' WHERE key = 'fence'";

/// Migration from versions 1 and 2, step 1: the version 3 table, under a temporary name.
pub(crate) const CREATE_MIGRATED_LEASES: &str = create_lease_table!("lock_leases_v3");

/// Migration step 2: every old row becomes slot 0 of a lock (limit 1) recorded under this
/// boot (`?1`). A live lease's wall-clock expiry becomes the boot-clock moment as far
/// ahead as it was (`?3`, the boot clock now, plus its expiry minus `?2`, the wall clock
/// now, at most `?4` so the sum cannot overflow): it stays held for the rest of its TTL.
/// An expired or released one becomes 0 (free). An expiry that is not an integer is copied
/// as it is, so the row stays visibly corrupt.
pub(crate) const COPY_LEGACY_LEASES: &str = concat!(
    "INSERT INTO lock_leases_v3 (",
    lease_columns!(),
    ") SELECT name, 0, owner, label, pid, host, fence, 1, acquired_at_ms, ?1, \
     CASE WHEN typeof(expires_at_ms) <> 'integer' THEN expires_at_ms \
     WHEN expires_at_ms > ?2 THEN ?3 + min(expires_at_ms - ?2, ?4) \
     ELSE 0 END \
     FROM lock_leases"
);

/// Migration step 3: the old table goes.
pub(crate) const DROP_LEGACY_LEASES: &str = "DROP TABLE lock_leases";

/// Migration step 4: the new table takes its name.
pub(crate) const RENAME_MIGRATED_LEASES: &str = "ALTER TABLE lock_leases_v3 RENAME TO lock_leases";

/// Migration from version 3: the holder's hold stamp (`NULL` in existing rows: their holders
/// are freed by the TTL only).
pub(crate) const ADD_HOLD_COLUMN: &str = "ALTER TABLE lock_leases ADD COLUMN hold TEXT";

/// Sets the schema version to `?1`.
pub(crate) const SET_SCHEMA_VERSION: &str =
    "UPDATE lock_meta SET value = ?1 WHERE key = 'schema_version'";

/// `PRAGMA journal_mode` (read) and switching it to WAL.
pub(crate) const JOURNAL_MODE: &str = "PRAGMA journal_mode";
pub(crate) const JOURNAL_MODE_WAL: &str = "PRAGMA journal_mode = WAL";

/// `PRAGMA synchronous` values (a connection setting).
pub(crate) const SYNCHRONOUS_NORMAL: &str = "PRAGMA synchronous = NORMAL";
pub(crate) const SYNCHRONOUS_FULL: &str = "PRAGMA synchronous = FULL";

/// Every row of name `?1` (one per permit slot ever used), columns in `LEASE_COLUMNS`
/// order, by slot.
pub(crate) const SELECT_LEASES: &str = concat!(
    "SELECT ",
    lease_columns!(),
    " FROM lock_leases WHERE name = ?1 ORDER BY slot"
);

/// [`SELECT_LEASES`] with each row's hold stamp after its lease columns: what an acquire
/// that found the lock held reads, without the write lock, to learn whether a holder's
/// process is gone.
pub(crate) const SELECT_LEASES_WITH_HOLDS: &str = concat!(
    "SELECT ",
    lease_columns!(),
    ", hold FROM lock_leases WHERE name = ?1 ORDER BY slot"
);

/// Rows whose name starts with `?1` (compared character by character and exactly, unlike
/// `LIKE`, which ignores ASCII case and treats `%` and `_` as wildcards) that may be live:
/// recorded under this boot (`?3`) with an expiry after `?2` (the boot clock now), by name
/// and fence. Values of the wrong type (a boot id that is not text, an expiry that is not a
/// number: those compare greater than any number) are selected too, for the decoder to
/// report.
pub(crate) const SELECT_LEASES_WITH_PREFIX: &str = concat!(
    "SELECT ",
    lease_columns!(),
    " FROM lock_leases WHERE substr(name, 1, length(?1)) = ?1 AND expires_boot_ms > ?2 \
     AND (boot_id = ?3 OR typeof(boot_id) <> 'text') ORDER BY name, fence"
);

/// The row of name `?1` as schema versions 1 and 2 keep it, for a read-only client of an
/// older database (columns in `LEGACY_LEASE_COLUMNS` order).
pub(crate) const SELECT_LEGACY_LEASE: &str = "SELECT name, owner, label, pid, host, fence, \
     acquired_at_ms, expires_at_ms FROM lock_leases WHERE name = ?1";

/// Rows of schema versions 1 and 2 whose name starts with `?1` and whose wall-clock expiry
/// is after `?2`, by name.
pub(crate) const SELECT_LEGACY_LEASES_WITH_PREFIX: &str = "SELECT name, owner, label, pid, \
     host, fence, acquired_at_ms, expires_at_ms FROM lock_leases \
     WHERE substr(name, 1, length(?1)) = ?1 AND expires_at_ms > ?2 ORDER BY name";

/// The one-statement acquire of a lock (run on its own, autocommit): takes the row of slot
/// `?2` of name `?1` for owner `?3` (label `?4`, pid `?5`, host `?6`, limit `?8`, acquired at
/// `?9` on the wall clock, hold stamp `?13`) if its lease is free (recorded under another
/// boot than `?10`, or expired at `?12`, the boot clock now) and its fence is below `?7`,
/// the fence clock now; the new fence is then `?7` itself, which the caller knows, and the
/// new lease expires at `?11` on this boot's clock. Changes one row if it took it.
///
/// So it needs neither `RETURNING` (SQLite runs it as a trigger with a table of its own,
/// which took more instructions than the update itself) nor a transaction around it (one
/// statement is atomic). Matches nothing when the name has no row or other slots, when the
/// lease is live, when its fence is not below the clock (a grant within the same
/// microsecond, a wall clock stepped back), or when a value it decides by is not of a type
/// this library writes: the caller then reads the rows in a transaction and decides there.
/// Other columns are all overwritten, so they are not checked.
pub(crate) const TAKE_FREE_LOCK: &str = "UPDATE lock_leases SET \
     owner = ?3, label = ?4, pid = ?5, host = ?6, fence = ?7, \
     lease_limit = ?8, acquired_at_ms = ?9, boot_id = ?10, expires_boot_ms = ?11, hold = ?13 \
     WHERE name = ?1 AND slot = ?2 \
     AND typeof(boot_id) = 'text' AND typeof(expires_boot_ms) = 'integer' \
     AND (boot_id <> ?10 OR expires_boot_ms <= ?12) \
     AND typeof(fence) = 'integer' AND fence > 0 AND fence < ?7 \
     AND NOT EXISTS (SELECT 1 FROM lock_leases AS other \
     WHERE other.name = ?1 AND other.slot <> ?2)";

/// [`TAKE_FREE_LOCK`] with the hybrid fence `max(fence + 1, ?7)` instead of the clock
/// (whatever the row's fence), for a row that cannot be read: run in the acquire's
/// transaction, it takes the lease over if it is free (rewriting every column but the
/// fence), and [`FENCE_OF_SLOT`] then reads the new fence.
pub(crate) const TAKE_FREE_UNREADABLE_LOCK: &str = concat!(
    "UPDATE lock_leases SET \
     owner = ?3, label = ?4, pid = ?5, host = ?6, fence = max(fence + 1, ?7), \
     lease_limit = ?8, acquired_at_ms = ?9, boot_id = ?10, expires_boot_ms = ?11, hold = ?13 \
     WHERE name = ?1 AND slot = ?2 \
     AND typeof(boot_id) = 'text' AND typeof(expires_boot_ms) = 'integer' \
     AND (boot_id <> ?10 OR expires_boot_ms <= ?12) \
     AND typeof(fence) = 'integer' AND fence > 0 AND fence < ",
    max_fence!(),
    " AND NOT EXISTS (SELECT 1 FROM lock_leases AS other \
     WHERE other.name = ?1 AND other.slot <> ?2)"
);

/// The fence of slot `?2` of name `?1`, read by primary key.
pub(crate) const FENCE_OF_SLOT: &str =
    "SELECT fence FROM lock_leases WHERE name = ?1 AND slot = ?2";

/// Writes the row of permit slot `?2` of name `?1` (the caller has read the name's rows in
/// the same transaction and found the slot free), replacing a free row there; `?12` is the
/// holder's hold stamp.
pub(crate) const PUT_LEASE: &str = concat!(
    "INSERT OR REPLACE INTO lock_leases (",
    lease_columns!(),
    ", hold) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
);

/// Takes over the live permit in slot `?2` of name `?1` whose holder's process is gone: the
/// row must still be owner `?14`'s with hold stamp `?15` (so of two contenders that both
/// found the holder gone, exactly one changes it) and the limit `?8`. Parameters `?1` to
/// `?13` as [`TAKE_FREE_LOCK`]'s. Returns the new fence.
pub(crate) const TAKE_GONE_PERMIT: &str = concat!(
    "UPDATE lock_leases SET \
     owner = ?3, label = ?4, pid = ?5, host = ?6, fence = max(fence + 1, ?7), \
     lease_limit = ?8, acquired_at_ms = ?9, boot_id = ?10, expires_boot_ms = ?11, hold = ?13 \
     WHERE name = ?1 AND slot = ?2 AND owner = ?14 AND hold = ?15 AND lease_limit = ?8 \
     AND boot_id = ?10 AND typeof(expires_boot_ms) = 'integer' AND expires_boot_ms > ?12 \
     AND typeof(fence) = 'integer' AND fence > 0 AND fence < ",
    max_fence!(),
    " RETURNING fence"
);

/// The live permits of name `?1` (under boot `?2`, expiring after `?3` on its clock): slot,
/// owner, fence, host, hold stamp and expiry, by fence. Rows of the wrong types are left
/// out (the lease operations report them).
pub(crate) const SELECT_LIVE_HOLDS: &str = "SELECT slot, owner, fence, host, hold, \
     expires_boot_ms FROM lock_leases WHERE name = ?1 AND boot_id = ?2 \
     AND typeof(expires_boot_ms) = 'integer' AND expires_boot_ms > ?3 ORDER BY fence";

/// The first fence of a name that has no row: `max(seed + 1, ?1)` with `?1` the wall clock
/// in microseconds (at most the largest fence), stored back as the new seed and returned.
/// Matches no row (and so returns nothing) when the seed is missing or is not a
/// non-negative integer below the largest fence: the caller reports that as corrupt
/// instead of guessing.
pub(crate) const NEXT_SEED_FENCE: &str = concat!(
    "UPDATE lock_meta SET value = max(value + 1, ?1) \
     WHERE key = 'fence_seed' AND typeof(value) = 'integer' \
     AND value >= 0 AND value < ",
    max_fence!(),
    " RETURNING value"
);

/// Raises the fence seed to at least `?1` (below the largest fence), when rows are deleted,
/// so that the name's next row starts above every fence it had. Same conditions as
/// [`NEXT_SEED_FENCE`].
pub(crate) const RAISE_FENCE_SEED: &str = concat!(
    "UPDATE lock_meta SET value = max(value, ?1) \
     WHERE key = 'fence_seed' AND typeof(value) = 'integer' \
     AND value >= 0 AND value < ",
    max_fence!(),
    " RETURNING value"
);

/// Compare-and-extend: sets the expiry of owner `?2`'s permit of name `?1` to `?3` only if
/// it is live: recorded under this boot (`?4`) and not expired at `?5` (the boot clock
/// now). Changes one row if it did.
///
/// It finds the row among the name's slots (the owner, not the slot, identifies it), so it
/// has no `RETURNING`: SQLite runs `RETURNING` as a trigger, which rules out the one-pass
/// plan for an `UPDATE` that is not by the whole primary key, and the two-pass plan (an
/// ephemeral table of rows to change) costs about 2 us. The caller counts changed rows.
pub(crate) const EXTEND_OWNED_LEASE: &str = "UPDATE lock_leases SET expires_boot_ms = ?3 \
     WHERE name = ?1 AND owner = ?2 AND boot_id = ?4 \
     AND typeof(expires_boot_ms) = 'integer' AND expires_boot_ms > ?5";

/// Compare-and-free: frees owner `?2`'s permit of name `?1` only if it is live (under boot
/// `?3`, not expired at `?4`); changes one row if it did (no `RETURNING`, as
/// [`EXTEND_OWNED_LEASE`]). The row and its fence stay.
pub(crate) const FREE_OWNED_LEASE: &str = "UPDATE lock_leases SET expires_boot_ms = 0 \
     WHERE name = ?1 AND owner = ?2 AND boot_id = ?3 \
     AND typeof(expires_boot_ms) = 'integer' AND expires_boot_ms > ?4";

/// Frees every permit of name `?1`, whoever holds them (the caller has read the rows and
/// found them sound).
pub(crate) const FREE_NAME: &str = "UPDATE lock_leases SET expires_boot_ms = 0 WHERE name = ?1";

/// Removes every row of name `?1` (one of them cannot be read or advanced; the caller
/// raises the fence seed in the same transaction).
pub(crate) const DELETE_NAME: &str = "DELETE FROM lock_leases WHERE name = ?1";

#[cfg(test)]
mod tests {
    use super::*;
    use lock_core::backend_kit::fence::MAX_FENCE;

    #[test]
    fn literals_match_the_constants() {
        assert!(SEED_META.contains(&format!("('schema_version', {SCHEMA_VERSION})")));
        assert_eq!(max_fence!(), MAX_FENCE.to_string());
        for sql in [
            TAKE_FREE_UNREADABLE_LOCK,
            TAKE_GONE_PERMIT,
            NEXT_SEED_FENCE,
            RAISE_FENCE_SEED,
        ] {
            assert!(sql.contains(max_fence!()), "{sql}");
        }
        assert_eq!(lease_columns!(), V3_LEASE_COLUMNS.join(", "));
        assert_eq!(&LEASE_COLUMNS[..V3_LEASE_COLUMNS.len()], V3_LEASE_COLUMNS);
        for column in LEASE_COLUMNS {
            assert!(CREATE_LEASES.contains(&format!("{column} ")), "{column}");
        }
        assert_eq!(
            CREATE_LEASES.replace("lock_leases", "lock_leases_v3"),
            CREATE_MIGRATED_LEASES
        );
    }
}
