//! Every SQL statement this crate runs, shared by both drivers.
//!
//! Parameters are numbered (`?1`), which rusqlite and sqlx both bind by position.

/// The schema version this library writes and understands.
///
/// Version 2 keeps each name's fence in its lease row (rows are freed, not deleted) and
/// moved the global counter from key `fence` to key `fence_seed`. A version 1 library
/// refuses to open a version 2 database (it refuses every newer version), so it can never
/// issue its global-counter fences over version 2's per-name ones; a version 1 process
/// that was already running when the database was migrated finds no `fence` row and
/// reports `Corrupt` instead of issuing a fence (see [`MIGRATE_V1_FENCE_COUNTER`]).
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// The largest value SQLite can store in an integer column: no fence can go past it.
pub(crate) const MAX_STORED_INTEGER: i64 = i64::MAX;

/// The columns of `lock_meta`, in order, as schema versions 1 and 2 create them.
pub(crate) const META_COLUMNS: &[&str] = &["key", "value"];

/// The columns of `lock_leases`, in order, as schema versions 1 and 2 create them.
pub(crate) const LEASE_COLUMNS: &[&str] = &[
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

/// The key/value table: the schema version and the fence seed (schema versions 1 and 2).
pub(crate) const CREATE_META: &str = "CREATE TABLE IF NOT EXISTS lock_meta (\
     key TEXT PRIMARY KEY NOT NULL, \
     value INTEGER NOT NULL)";

/// One row per lock name (schema versions 1 and 2). `name` uses the default BINARY
/// collation, so names that differ in case or Unicode normalization are different rows.
/// From version 2 on, a row stays when its lease is released (it is then free, with an
/// expiry in the past), so that it keeps the name's last fence.
pub(crate) const CREATE_LEASES: &str = "CREATE TABLE IF NOT EXISTS lock_leases (\
     name TEXT PRIMARY KEY NOT NULL, \
     owner BLOB NOT NULL, \
     label TEXT NOT NULL, \
     pid INTEGER NOT NULL, \
     host TEXT NOT NULL, \
     fence INTEGER NOT NULL, \
     acquired_at_ms INTEGER NOT NULL, \
     expires_at_ms INTEGER NOT NULL)";

/// Schema version 2: the version row and the fence seed, starting at 0.
pub(crate) const SEED_META: &str = "INSERT OR IGNORE INTO lock_meta (key, value) \
     VALUES ('schema_version', 2), ('fence_seed', 0)";

/// Migration from version 1: the global counter becomes the fence seed. Renaming the row
/// (rather than keeping `fence`) makes a version 1 process that still has the database
/// open fail its next fence with `Corrupt` instead of issuing a fence below the per-name
/// ones. Whatever the row holds is kept: a damaged counter stays visible as damaged.
pub(crate) const MIGRATE_V1_FENCE_COUNTER: &str =
    "UPDATE OR REPLACE lock_meta SET key = 'fence_seed' WHERE key = 'fence'";

/// Sets the schema version to `?1`.
pub(crate) const SET_SCHEMA_VERSION: &str =
    "UPDATE lock_meta SET value = ?1 WHERE key = 'schema_version'";

/// `PRAGMA journal_mode` (read) and switching it to WAL.
pub(crate) const JOURNAL_MODE: &str = "PRAGMA journal_mode";
pub(crate) const JOURNAL_MODE_WAL: &str = "PRAGMA journal_mode = WAL";

/// `PRAGMA synchronous` values (a connection setting).
pub(crate) const SYNCHRONOUS_NORMAL: &str = "PRAGMA synchronous = NORMAL";
pub(crate) const SYNCHRONOUS_FULL: &str = "PRAGMA synchronous = FULL";

/// The lease row of name `?1`, columns in `LEASE_COLUMNS` order.
pub(crate) const SELECT_LEASE: &str = "SELECT name, owner, label, pid, host, fence, \
     acquired_at_ms, expires_at_ms FROM lock_leases WHERE name = ?1";

/// Lease rows whose name starts with `?1` (compared character by character and exactly,
/// unlike `LIKE`, which ignores ASCII case and treats `%` and `_` as wildcards) and whose
/// expiry is after `?2` (now), by name. Expiries that are not numbers compare greater than
/// any number in SQLite, so garbled rows are selected too and reported by the decoder.
pub(crate) const SELECT_LEASES_WITH_PREFIX: &str = "SELECT name, owner, label, pid, host, \
     fence, acquired_at_ms, expires_at_ms FROM lock_leases \
     WHERE substr(name, 1, length(?1)) = ?1 AND expires_at_ms > ?2 ORDER BY name";

/// The hot path of acquire: takes over the row of name `?1` for owner `?2` (label `?3`,
/// pid `?4`, host `?5`) if its lease expired at `?6` (now) or before, advancing the row's
/// own fence; the new lease expires at `?7`. Returns the new fence. One statement that
/// decides and writes, touching only the row's page (the `name` index is not changed).
///
/// Matches nothing when the row is missing, live, or its fence or expiry is not an integer
/// this library could have written (or the fence cannot advance): the caller then reads the
/// row to tell these apart. Other columns are all overwritten, so they are not checked.
pub(crate) const TAKE_EXPIRED_LEASE: &str = "UPDATE lock_leases SET \
     owner = ?2, label = ?3, pid = ?4, host = ?5, fence = fence + 1, \
     acquired_at_ms = ?6, expires_at_ms = ?7 \
     WHERE name = ?1 AND typeof(expires_at_ms) = 'integer' AND expires_at_ms <= ?6 \
     AND typeof(fence) = 'integer' AND fence > 0 AND fence < 9223372036854775807 \
     RETURNING fence";

/// The first fence of a name that has no row: `max(seed + 1, ?1)` with `?1` the wall clock
/// in microseconds, stored back as the new seed and returned. Matches no row (and so
/// returns nothing) when the seed is missing or is not a non-negative integer below the
/// maximum: the caller reports that as corrupt instead of guessing.
pub(crate) const NEXT_SEED_FENCE: &str = "UPDATE lock_meta SET value = max(value + 1, ?1) \
     WHERE key = 'fence_seed' AND typeof(value) = 'integer' \
     AND value >= 0 AND value < 9223372036854775807 RETURNING value";

/// Raises the fence seed to at least `?1` (when a row is deleted, so that the name's next
/// row starts above every fence it had). Same conditions as [`NEXT_SEED_FENCE`].
pub(crate) const RAISE_FENCE_SEED: &str = "UPDATE lock_meta SET value = max(value, ?1) \
     WHERE key = 'fence_seed' AND typeof(value) = 'integer' \
     AND value >= 0 AND value < 9223372036854775807 RETURNING value";

/// The first row of a name (the caller has seen, in the same transaction, that it has none).
pub(crate) const INSERT_LEASE: &str = "INSERT INTO lock_leases \
     (name, owner, label, pid, host, fence, acquired_at_ms, expires_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Compare-and-extend: sets the expiry of name `?1` to `?3` only if owner `?2` holds a lease
/// on it that is live at `?4` (now); returns a row if it did.
pub(crate) const EXTEND_OWNED_LEASE: &str = "UPDATE lock_leases SET expires_at_ms = ?3 \
     WHERE name = ?1 AND owner = ?2 AND typeof(expires_at_ms) = 'integer' \
     AND expires_at_ms > ?4 RETURNING 1";

/// Compare-and-free: frees name `?1` only if owner `?2` holds a lease on it that is live at
/// `?3` (now); returns a row if it did. The row and its fence stay.
pub(crate) const FREE_OWNED_LEASE: &str = "UPDATE lock_leases SET expires_at_ms = 0 \
     WHERE name = ?1 AND owner = ?2 AND typeof(expires_at_ms) = 'integer' \
     AND expires_at_ms > ?3 RETURNING 1";

/// Frees name `?1` whoever holds it (the caller has read the row and found it sound).
pub(crate) const FREE_LEASE: &str = "UPDATE lock_leases SET expires_at_ms = 0 WHERE name = ?1";

/// Removes the row of name `?1` (a row that cannot be read or advanced; the caller raises
/// the fence seed in the same transaction).
pub(crate) const DELETE_LEASE: &str = "DELETE FROM lock_leases WHERE name = ?1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_versions_match_the_constant() {
        assert!(SEED_META.contains(&format!("('schema_version', {SCHEMA_VERSION})")));
        let max = MAX_STORED_INTEGER.to_string();
        for sql in [TAKE_EXPIRED_LEASE, NEXT_SEED_FENCE, RAISE_FENCE_SEED] {
            assert!(sql.contains(&max), "{sql}");
        }
    }
}
