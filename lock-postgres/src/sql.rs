//! Every statement this backend sends, written once for a schema and table.
//!
//! Parameters are `$1`, `$2`... with an explicit cast each (`$1::text`), so the same text
//! serves both ways of sending it: bound to a server-side prepared statement, or with each
//! parameter replaced by a literal of that type (the simple query protocol, for PgBouncer in
//! transaction mode; see [`inline`]). No statement holds a `$` anywhere else.

use std::fmt::Write as _;
use std::sync::Arc;

/// The schema version this library writes and understands.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The comment on the lease table that marks it as ours, at [`SCHEMA_VERSION`].
pub(crate) const TABLE_COMMENT_PREFIX: &str = "leaselock leases, schema version ";

/// The lease table's columns and their types (as `format_type` prints them), in order.
pub(crate) const LEASE_COLUMNS: &[(&str, &str)] = &[
    ("name", "text"),
    ("slot", "integer"),
    ("permits", "integer"),
    ("token", "text"),
    ("label", "text"),
    ("pid", "bigint"),
    ("host", "text"),
    ("fence", "bigint"),
    ("acquired_at", "timestamp with time zone"),
    ("expires_at", "timestamp with time zone"),
];

/// The fence counter table's columns.
pub(crate) const FENCE_COLUMNS: &[(&str, &str)] = &[("name", "text"), ("fence", "bigint")];

/// The first key of the transaction-scoped advisory locks that serialize semaphore grants of
/// one name (the second is a hash of the table and the name): "LLck".
pub(crate) const ADVISORY_CLASS: i32 = 0x4c4c_636b;

/// A call of one of PostgreSQL's two-key advisory lock functions (`function`) on the key
/// `$1`: under [`ADVISORY_CLASS`], the hash of the text `$1`.
pub(crate) fn advisory(function: &str) -> String {
    format!("{function}({ADVISORY_CLASS}, hashtext($1::text))")
}

/// A quoted identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statements of one schema and table.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) fences_table: String,
    /// The `NOTIFY` channel of releases.
    pub(crate) channel: String,
    pub(crate) acquire: Arc<str>,
    pub(crate) acquire_lock: Arc<str>,
    pub(crate) serialize: Arc<str>,
    pub(crate) sweep: Arc<str>,
    pub(crate) heartbeat: Arc<str>,
    pub(crate) heartbeat_many: Arc<str>,
    pub(crate) release: Arc<str>,
    pub(crate) force_release: Arc<str>,
    pub(crate) inspect: Arc<str>,
    pub(crate) list: Arc<str>,
}

/// `expires_at`-style timestamp as microseconds since the Unix epoch.
fn micros(column: &str) -> String {
    format!("(extract(epoch FROM {column}) * 1000000)::bigint")
}

impl Statements {
    pub(crate) fn new(schema: &str, table: &str) -> Self {
        let fences_table = format!("{table}_fences");
        let l = format!("{}.{}", ident(schema), ident(table));
        let f = format!("{}.{}", ident(schema), ident(&fences_table));
        let ttl = "clock_timestamp() + $7::bigint * interval '1 microsecond'";
        // One statement: look at the name's rows, pick a free slot, advance the fence
        // counter (only when a slot looks free), and take the slot if its row is still
        // absent or expired when the insert gets to it. $8: the caller holds the name's
        // advisory lock (semaphores, and locks on a name with rows of another limit).
        // $9: a retry after an answer was lost: a live lease of this token is ours.
        let acquire = format!(
            "WITH now AS (SELECT clock_timestamp() AS t), \
             rows AS (SELECT slot, permits, token, fence, expires_at, \
                 expires_at > (SELECT t FROM now) AS live FROM {l} WHERE name = $1::text), \
             mine AS (SELECT fence, expires_at FROM rows \
                 WHERE live AND $9::boolean AND token = $3::text LIMIT 1), \
             other AS (SELECT max(permits) AS permits FROM rows \
                 WHERE live AND permits <> $2::integer), \
             pick AS (SELECT s AS slot FROM generate_series(0, $2::integer - 1) AS s \
                 WHERE NOT EXISTS (SELECT 1 FROM rows WHERE rows.slot = s AND rows.live) \
                 ORDER BY s LIMIT 1), \
             go AS (SELECT slot FROM pick WHERE NOT EXISTS (SELECT 1 FROM mine) \
                 AND (SELECT permits FROM other) IS NULL \
                 AND ($8::boolean OR NOT EXISTS \
                     (SELECT 1 FROM rows WHERE permits <> 1 OR slot <> 0))), \
             f AS (INSERT INTO {f} AS c (name, fence) \
                 SELECT $1::text, greatest(1, {clock}) FROM go \
                 ON CONFLICT (name) DO UPDATE SET fence = greatest(c.fence + 1, EXCLUDED.fence) \
                 RETURNING fence), \
             ins AS (INSERT INTO {l} AS l \
                 (name, slot, permits, token, label, pid, host, fence, acquired_at, expires_at) \
                 SELECT $1::text, go.slot, $2::integer, $3::text, $4::text, $5::bigint, \
                     $6::text, f.fence, clock_timestamp(), {ttl} FROM go, f \
                 ON CONFLICT (name, slot) DO UPDATE SET permits = EXCLUDED.permits, \
                     token = EXCLUDED.token, label = EXCLUDED.label, pid = EXCLUDED.pid, \
                     host = EXCLUDED.host, fence = EXCLUDED.fence, \
                     acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at \
                 WHERE l.expires_at <= clock_timestamp() \
                 RETURNING fence, expires_at) \
             SELECT CASE WHEN EXISTS (SELECT 1 FROM ins) THEN 'granted' \
                 WHEN EXISTS (SELECT 1 FROM mine) THEN 'mine' \
                 WHEN (SELECT permits FROM other) IS NOT NULL THEN 'mismatch' \
                 WHEN NOT EXISTS (SELECT 1 FROM pick) THEN 'held' \
                 WHEN NOT EXISTS (SELECT 1 FROM go) THEN 'serialize' \
                 ELSE 'raced' END AS status, \
             coalesce((SELECT fence FROM ins), (SELECT fence FROM mine)) AS fence, \
             {expires} AS expires_us, \
             (SELECT permits FROM other) AS other_permits",
            clock = micros("clock_timestamp()"),
            expires =
                micros("coalesce((SELECT expires_at FROM ins), (SELECT expires_at FROM mine))"),
        );
        // The lock path (limit 1), in one statement: advance the counter only when the
        // name has no live row and no row of another limit or slot (else the caller takes
        // the general path above), then take slot 0 if its row is still absent or expired
        // when the insert gets to it. What happened is worked out only when nothing was
        // granted (an InitPlan in a CASE branch runs only when that branch is taken).
        // $1 name, $2 token, $3 label, $4 pid, $5 host, $6 ttl µs, $7 reclaim.
        let lock_ttl = "clock_timestamp() + $6::bigint * interval '1 microsecond'";
        let acquire_lock = format!(
            "WITH f AS (INSERT INTO {f} AS c (name, fence) \
                 SELECT $1::text, greatest(1, {clock}) WHERE NOT EXISTS (SELECT 1 FROM {l} \
                     WHERE name = $1::text \
                     AND (expires_at > clock_timestamp() OR permits <> 1 OR slot <> 0)) \
                 ON CONFLICT (name) DO UPDATE SET fence = greatest(c.fence + 1, EXCLUDED.fence) \
                 RETURNING fence), \
             ins AS (INSERT INTO {l} AS l \
                 (name, slot, permits, token, label, pid, host, fence, acquired_at, expires_at) \
                 SELECT $1::text, 0, 1, $2::text, $3::text, $4::bigint, $5::text, f.fence, \
                     clock_timestamp(), {lock_ttl} FROM f \
                 ON CONFLICT (name, slot) DO UPDATE SET permits = EXCLUDED.permits, \
                     token = EXCLUDED.token, label = EXCLUDED.label, pid = EXCLUDED.pid, \
                     host = EXCLUDED.host, fence = EXCLUDED.fence, \
                     acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at \
                 WHERE l.expires_at <= clock_timestamp() \
                 RETURNING fence, expires_at) \
             SELECT CASE WHEN i.fence IS NOT NULL THEN 'granted' ELSE \
                 (SELECT CASE WHEN bool_or(live AND $7::boolean AND token = $2::text) THEN 'mine' \
                     WHEN bool_or(live AND permits <> 1) THEN 'mismatch' \
                     WHEN bool_or(live) THEN 'held' \
                     WHEN bool_or(permits <> 1 OR slot <> 0) THEN 'serialize' \
                     ELSE 'raced' END \
                  FROM (SELECT token, permits, slot, expires_at > clock_timestamp() AS live \
                      FROM {l} WHERE name = $1::text) AS r) END AS status, \
             i.fence, {expires} AS expires_us, \
             CASE WHEN i.fence IS NULL THEN (SELECT max(permits) FROM {l} WHERE name = $1::text \
                 AND permits <> 1 AND expires_at > clock_timestamp()) END AS other_permits \
             FROM (SELECT (SELECT fence FROM ins) AS fence, \
                 (SELECT expires_at FROM ins) AS expires_at) AS i",
            clock = micros("clock_timestamp()"),
            expires = micros("i.expires_at"),
        );
        let serialize = format!("SELECT {}", advisory("pg_advisory_xact_lock"));
        // Under the name's advisory lock: expired rows go, so that later lock grants of the
        // name take the one-statement path again.
        let sweep =
            format!("DELETE FROM {l} WHERE name = $1::text AND expires_at <= clock_timestamp()");
        let heartbeat = format!(
            "UPDATE {l} SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond' \
             WHERE name = $1::text AND token = $2::text AND expires_at > clock_timestamp() \
             RETURNING {}",
            micros("expires_at")
        );
        // Rows are locked in (name, slot) order before they are updated: two batches that
        // share leases (a renewal still in flight when the next falls due) then wait for
        // each other instead of deadlocking, as an UPDATE .. FROM in plan order could.
        let heartbeat_many = format!(
            "WITH locked AS (SELECT l.name, l.slot FROM {l} AS l \
                 JOIN unnest($1::text[], $2::text[]) AS i(name, token) \
                     ON l.name = i.name AND l.token = i.token \
                 WHERE l.expires_at > clock_timestamp() \
                 ORDER BY l.name, l.slot FOR UPDATE OF l) \
             UPDATE {l} AS l SET expires_at = clock_timestamp() + $3::bigint * interval '1 microsecond' \
             FROM locked WHERE l.name = locked.name AND l.slot = locked.slot \
                 AND l.expires_at > clock_timestamp() \
             RETURNING l.name, l.token, {}",
            micros("l.expires_at")
        );
        let release = format!(
            "DELETE FROM {l} WHERE name = $1::text AND token = $2::text \
             RETURNING expires_at > clock_timestamp() AS freed, \
                 (CASE WHEN expires_at > clock_timestamp() \
                     THEN pg_notify($3::text, $1::text) END) IS NULL AS quiet"
        );
        let force_release = format!(
            "WITH d AS (DELETE FROM {l} WHERE name = $1::text \
                 RETURNING expires_at > clock_timestamp() AS live), \
             n AS (SELECT pg_notify($2::text, $1::text) FROM (SELECT 1 FROM d LIMIT 1) AS x) \
             SELECT coalesce((SELECT bool_or(live) FROM d), false) AS freed, \
                 (SELECT count(*) FROM n) AS notified"
        );
        let columns = format!(
            "name, permits, label, pid, host, fence, {}, {}",
            micros("acquired_at"),
            micros("expires_at")
        );
        let inspect = format!(
            "SELECT {columns} FROM {l} WHERE name = $1::text AND expires_at > clock_timestamp() \
             ORDER BY fence"
        );
        let list = format!(
            "SELECT {columns} FROM {l} \
             WHERE starts_with(name, $1::text) AND expires_at > clock_timestamp()"
        );
        let channel = channel_name(schema, table);
        Self {
            schema: schema.to_owned(),
            table: table.to_owned(),
            fences_table,
            channel,
            acquire: acquire.into(),
            acquire_lock: acquire_lock.into(),
            serialize: serialize.into(),
            sweep: sweep.into(),
            heartbeat: heartbeat.into(),
            heartbeat_many: heartbeat_many.into(),
            release: release.into(),
            force_release: force_release.into(),
            inspect: inspect.into(),
            list: list.into(),
        }
    }

    /// The key of the advisory lock that serializes grants of `name`.
    pub(crate) fn advisory_key(&self, name: &str) -> String {
        format!("{}.{}/{name}", self.schema, self.table)
    }

    /// The statements that create the schema, exactly as [`crate::schema`] runs them (and
    /// as an error shows them to a role that may not run them).
    pub(crate) fn ddl(&self, with_schema: bool) -> Vec<String> {
        let s = ident(&self.schema);
        let l = format!("{s}.{}", ident(&self.table));
        let f = format!("{s}.{}", ident(&self.fences_table));
        let mut out = Vec::new();
        if with_schema {
            out.push(format!("CREATE SCHEMA IF NOT EXISTS {s}"));
        }
        out.push(format!(
            "CREATE TABLE {l} (\n    name text NOT NULL,\n    slot integer NOT NULL CHECK (slot >= 0),\n    \
             permits integer NOT NULL CHECK (permits >= 1),\n    token text NOT NULL,\n    \
             label text NOT NULL,\n    pid bigint NOT NULL,\n    host text NOT NULL,\n    \
             fence bigint NOT NULL,\n    acquired_at timestamptz NOT NULL,\n    \
             expires_at timestamptz NOT NULL,\n    PRIMARY KEY (name, slot)\n)"
        ));
        out.push(format!(
            "CREATE TABLE {f} (\n    name text PRIMARY KEY,\n    \
             fence bigint NOT NULL CHECK (fence BETWEEN 1 AND 9007199254740991)\n)"
        ));
        out.push(format!(
            "COMMENT ON TABLE {l} IS '{TABLE_COMMENT_PREFIX}{SCHEMA_VERSION}'"
        ));
        out
    }

    /// The DDL as one script a person can run.
    pub(crate) fn ddl_script(&self, with_schema: bool) -> String {
        let mut out = String::new();
        for statement in self.ddl(with_schema) {
            let _ = writeln!(out, "{statement};");
        }
        out
    }
}

/// The release channel of a table: `leaselock:<schema>.<table>`, or a hash of it when that
/// is longer than an identifier may be.
fn channel_name(schema: &str, table: &str) -> String {
    let full = format!("leaselock:{schema}.{table}");
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a: stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in full.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("leaselock:{hash:016x}")
}

/// One parameter of a statement.
#[derive(Clone, Debug)]
pub(crate) enum Param {
    Text(String),
    Int(i32),
    BigInt(i64),
    Bool(bool),
    TextArray(Vec<String>),
}

impl Param {
    /// The literal that stands for this value in a simple query (the statement casts it).
    fn literal(&self, out: &mut String) {
        match self {
            Self::Text(s) => quote(s, out),
            Self::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Self::BigInt(n) => {
                let _ = write!(out, "{n}");
            }
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::TextArray(items) => {
                out.push_str("ARRAY[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    quote(item, out);
                }
                out.push_str("]::text[]");
            }
        }
    }
}

/// `s` as an escape string constant (`E'...'`), which reads the same whatever
/// `standard_conforming_strings` says. Text never holds NUL here (names cannot, and holder
/// fields are cleaned first).
fn quote(s: &str, out: &mut String) {
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// `sql` with each `$n` replaced by the literal of `params[n - 1]`.
pub(crate) fn inline(sql: &str, params: &[Param]) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
        match n.checked_sub(1).and_then(|i| params.get(i)) {
            Some(param) => param.literal(&mut out),
            None => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// Text for a holder field: PostgreSQL's `text` cannot hold NUL.
pub(crate) fn clean(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_escaped() {
        let sql = inline(
            "SELECT $1::text, $2::integer, $10::bigint, $3::text[], $4::boolean",
            &[
                Param::Text("it's a \\ test".into()),
                Param::Int(-3),
                Param::TextArray(vec!["a'b".into(), "c".into()]),
                Param::Bool(true),
                Param::Text("5".into()),
                Param::Text("6".into()),
                Param::Text("7".into()),
                Param::Text("8".into()),
                Param::Text("9".into()),
                Param::BigInt(1 << 40),
            ],
        );
        assert_eq!(
            sql,
            "SELECT E'it''s a \\\\ test'::text, -3::integer, 1099511627776::bigint, \
             ARRAY[E'a''b',E'c']::text[]::text[], true::boolean"
        );
    }

    #[test]
    fn statements_have_no_dollar_but_their_parameters() {
        let s = Statements::new("my-schema", "t");
        for sql in [
            &s.acquire,
            &s.heartbeat,
            &s.heartbeat_many,
            &s.release,
            &s.list,
        ] {
            let sql: &str = sql;
            for (i, _) in sql.match_indices('$') {
                assert!(sql.as_bytes()[i + 1].is_ascii_digit(), "{sql}");
            }
        }
        assert!(s.acquire.contains("\"my-schema\".\"t\""));
        assert!(
            s.ddl_script(true)
                .contains("CREATE SCHEMA IF NOT EXISTS \"my-schema\";")
        );
    }

    #[test]
    fn channels_fit_an_identifier() {
        assert_eq!(channel_name("public", "leases"), "leaselock:public.leases");
        let long = channel_name(&"s".repeat(56), &"t".repeat(56));
        assert!(long.len() <= 63 && long.starts_with("leaselock:"), "{long}");
        assert_ne!(long, channel_name(&"s".repeat(56), &"u".repeat(56)));
    }
}
