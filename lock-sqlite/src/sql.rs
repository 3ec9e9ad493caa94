//! Every SQL statement this crate runs, shared by both drivers.
//!
//! Parameters are numbered (`?1`), which rusqlite and sqlx both bind by position.

/// The schema version this library writes and understands.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The columns of `lock_meta`, in order, as schema version 1 creates them.
pub(crate) const META_COLUMNS: &[&str] = &["key", "value"];

/// The columns of `lock_leases`, in order, as schema version 1 creates them.
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

/// Schema version 1: the key/value table (schema version and the global fence counter).
pub(crate) const CREATE_META: &str = "CREATE TABLE IF NOT EXISTS lock_meta (\
     key TEXT PRIMARY KEY NOT NULL, \
     value INTEGER NOT NULL)";

/// Schema version 1: one row per lease. `name` uses the default BINARY collation, so names
/// that differ in case or Unicode normalization are different rows.
pub(crate) const CREATE_LEASES: &str = "CREATE TABLE IF NOT EXISTS lock_leases (\
     name TEXT PRIMARY KEY NOT NULL, \
     owner BLOB NOT NULL, \
     label TEXT NOT NULL, \
     pid INTEGER NOT NULL, \
     host TEXT NOT NULL, \
     fence INTEGER NOT NULL, \
     acquired_at_ms INTEGER NOT NULL, \
     expires_at_ms INTEGER NOT NULL)";

/// Schema version 1: the version row and the fence counter, starting at 0.
pub(crate) const SEED_META: &str = "INSERT OR IGNORE INTO lock_meta (key, value) \
     VALUES ('schema_version', 1), ('fence', 0)";

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
/// unlike `LIKE`, which ignores ASCII case and treats `%` and `_` as wildcards), by name.
pub(crate) const SELECT_LEASES_WITH_PREFIX: &str = "SELECT name, owner, label, pid, host, \
     fence, acquired_at_ms, expires_at_ms FROM lock_leases \
     WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name";

/// Advances the global fence counter and returns the new value. Matches no row (and so
/// returns nothing) when the counter is missing or is not a non-negative integer below the
/// maximum: the caller reports that as corrupt instead of reusing or overflowing fences.
pub(crate) const NEXT_FENCE: &str = "UPDATE lock_meta SET value = value + 1 \
     WHERE key = 'fence' AND typeof(value) = 'integer' \
     AND value >= 0 AND value < 9223372036854775807 RETURNING value";

/// Takes name `?1` for owner `?2` if it is free or its lease expired at `?7` (now) or
/// before; returns the fence when it did.
pub(crate) const UPSERT_LEASE: &str = "INSERT INTO lock_leases \
     (name, owner, label, pid, host, fence, acquired_at_ms, expires_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (name) DO UPDATE SET \
     owner = excluded.owner, label = excluded.label, pid = excluded.pid, \
     host = excluded.host, fence = excluded.fence, \
     acquired_at_ms = excluded.acquired_at_ms, expires_at_ms = excluded.expires_at_ms \
     WHERE lock_leases.expires_at_ms <= excluded.acquired_at_ms \
     RETURNING fence";

/// Sets the expiry of name `?1` to `?2`.
pub(crate) const EXTEND_LEASE: &str = "UPDATE lock_leases SET expires_at_ms = ?2 WHERE name = ?1";

/// Compare-and-delete: removes name `?1` only if owner `?2` holds it; returns its expiry.
pub(crate) const DELETE_OWNED_LEASE: &str =
    "DELETE FROM lock_leases WHERE name = ?1 AND owner = ?2 RETURNING expires_at_ms";

/// Removes name `?1` whoever holds it (and whatever the row holds); returns its expiry.
pub(crate) const DELETE_LEASE: &str =
    "DELETE FROM lock_leases WHERE name = ?1 RETURNING expires_at_ms";
