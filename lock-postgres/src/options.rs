//! [`PostgresOptions`]: where the server is, which schema and table hold the leases, and how
//! long an operation may take; parsed from a URL and adjusted in code.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use lock_core::backend_kit::config::StoreUrl;
use lock_core::{LockError, Result};
use sqlx::postgres::PgConnectOptions;

use crate::BACKEND;

/// The URL schemes [`PostgresBackend::connect`](crate::PostgresBackend::connect) accepts.
pub const URL_SCHEMES: &[&str] = &["postgres", "postgresql"];

/// The default [`PostgresOptions::schema`].
pub const DEFAULT_SCHEMA: &str = "public";

/// The default [`PostgresOptions::table`].
pub const DEFAULT_TABLE: &str = "leaselock_leases";

/// The longest schema or table name: PostgreSQL's 63-byte identifiers, less the `_fences`
/// suffix of the counters table.
pub const MAX_IDENT_LEN: usize = 56;

const USAGE: &str = "use postgres://[user[:password]@]host[:port]/database, with optional \
     ?schema=public&table=leaselock_leases&timeout=2s&connect_timeout=2s&max_connections=10\
     &statement_cache=0|100&listen=true|false&listen_url=postgres://...&poll=100ms and sqlx's own options (sslmode, \
     sslrootcert, sslcert, sslkey, application_name, options, host, port, dbname, user, \
     password, statement-cache-capacity)";

/// sqlx's own URL options, handed to [`PgConnectOptions`] as written.
const SQLX_KEYS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Where a [`PostgresBackend`](crate::PostgresBackend) connects, where its tables live, and
/// how long an operation may take.
///
/// Parse it from a URL (`postgres://` or `postgresql://`), then adjust it with the `with_*`
/// setters. Options of this crate:
///
/// | option | meaning | default |
/// |---|---|---|
/// | `schema` | the schema of the lease tables (created if missing) | `public` |
/// | `table` | the lease table; the fence counters live in `<table>_fences` | `leaselock_leases` |
/// | `timeout` | the budget of one operation, retries of dropped connections, serialization failures and deadlocks included; past it, `Unavailable` | `2s` |
/// | `connect_timeout` | the limit for opening (or waiting for) one connection | `2s` |
/// | `max_connections` | the size of the backend's own pool | `10` |
/// | `statement_cache` | `0` sends every statement without server-side prepared statements (simple query protocol): what PgBouncer in transaction mode needs; any other number is sqlx's statement cache size | `100` |
/// | `listen` | `false` never opens the `LISTEN` connection: waiters poll | `true`, but `false` with `statement_cache=0` |
/// | `listen_url` | a `postgres://` URL (percent-encoded) for the `LISTEN` session alone: the server itself, or a pooler in session mode, when statements go through a pooler in transaction mode | the main URL |
/// | `poll` | how often waiters look again while no `LISTEN` connection is up (jittered) | `100ms` |
///
/// Every other option is sqlx's own ([`PgConnectOptions`]): `sslmode`, `sslrootcert`,
/// `sslcert`, `sslkey`, `application_name`, `options`, `host`, `hostaddr`, `port`,
/// `dbname`, `user`, `password`, `statement-cache-capacity`. An option neither knows is an
/// error that lists them all.
///
/// ```
/// use std::time::Duration;
/// use lock_postgres::PostgresOptions;
///
/// let opts: PostgresOptions =
///     "postgres://app@db.internal/app?schema=locks&timeout=5s&sslmode=require".parse()?;
/// let opts = opts.with_table("job_leases");
/// assert_eq!(opts.schema, "locks");
/// assert_eq!(opts.table, "job_leases");
/// assert_eq!(opts.timeout, Duration::from_secs(5));
/// assert!(opts.prepared_statements());
/// # Ok::<(), lock_core::LockError>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// How sqlx connects (host, database, user, TLS, ...).
    pub connect: PgConnectOptions,
    /// The schema of the lease tables (default [`DEFAULT_SCHEMA`]).
    pub schema: String,
    /// The lease table (default [`DEFAULT_TABLE`]); the fence counters live in
    /// `<table>_fences`.
    pub table: String,
    /// The budget of one operation, retries included (default 2 s). Past it the operation
    /// fails with [`LockError::Unavailable`].
    pub timeout: Duration,
    /// The limit for opening, or waiting for, one connection (default 2 s).
    pub connect_timeout: Duration,
    /// The size of the backend's own pool (default 10).
    pub max_connections: u32,
    /// `true` (the default) uses sqlx's cached, server-side prepared statements; `false`
    /// sends every statement as one simple query with its values inlined as literals, which
    /// works through PgBouncer in transaction mode.
    pub statement_cache: bool,
    /// Open a `LISTEN` connection so waiters wake on a release (default `true`, except
    /// with [`statement_cache`](Self::statement_cache) off, where a `LISTEN` through a
    /// pooler in transaction mode would stay behind on a pooled server connection: give
    /// [`listen_url`](Self::listen_url) then).
    pub listen: bool,
    /// Where the `LISTEN` session connects, when not where statements go (default: the
    /// same place). It must be a session of its own: the server itself, or a pooler in
    /// session mode.
    pub listen_url: Option<PgConnectOptions>,
    /// How often a waiter looks again while no `LISTEN` connection is up (default 100 ms,
    /// jittered).
    pub poll: Duration,
    /// The URL as messages may show it.
    shown: String,
}

impl fmt::Debug for PostgresOptions {
    /// Shows where, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.shown)
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_connections", &self.max_connections)
            .field("statement_cache", &self.statement_cache)
            .field("listen", &self.listen)
            .field(
                "listen_url",
                &self
                    .listen_url
                    .as_ref()
                    .map(|o| format!("{}:{}", o.get_host(), o.get_port())),
            )
            .field("poll", &self.poll)
            .finish()
    }
}

impl PostgresOptions {
    /// The defaults, connecting as `connect` says.
    pub fn new(connect: PgConnectOptions) -> Self {
        let shown = format!(
            "postgres://{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or_default()
        );
        Self {
            connect,
            schema: DEFAULT_SCHEMA.to_owned(),
            table: DEFAULT_TABLE.to_owned(),
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            max_connections: 10,
            statement_cache: true,
            listen: true,
            listen_url: None,
            poll: Duration::from_millis(100),
            shown,
        }
    }

    /// With [`schema`](Self::schema) set.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// With [`table`](Self::table) set.
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// With [`timeout`](Self::timeout) set.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// With [`connect_timeout`](Self::connect_timeout) set.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// With [`max_connections`](Self::max_connections) set.
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// With server-side prepared statements on (`true`, the default) or off (`false`: for
    /// PgBouncer in transaction mode).
    pub fn with_statement_cache(mut self, on: bool) -> Self {
        self.statement_cache = on;
        self
    }

    /// With the `LISTEN` connection on (the default) or off.
    pub fn with_listen(mut self, listen: bool) -> Self {
        self.listen = listen;
        self
    }

    /// With [`listen_url`](Self::listen_url) set (and the `LISTEN` connection on).
    pub fn with_listen_url(mut self, listen: PgConnectOptions) -> Self {
        self.listen_url = Some(listen);
        self.listen = true;
        self
    }

    /// With [`poll`](Self::poll) set.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// True when statements go out as server-side prepared statements.
    pub fn prepared_statements(&self) -> bool {
        self.statement_cache
    }

    /// The URL as messages show it (no password).
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// Checks the values a URL or a setter may have got wrong.
    pub(crate) fn validate(&self) -> Result<()> {
        for (what, name) in [("schema", &self.schema), ("table", &self.table)] {
            check_ident(what, name).map_err(|why| {
                LockError::config(BACKEND, format!("{what} name {name:?}: {why}"))
            })?;
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() || self.poll.is_zero() {
            return Err(LockError::config(
                BACKEND,
                "timeout, connect_timeout and poll must be above zero",
            ));
        }
        if self.max_connections == 0 {
            return Err(LockError::config(
                BACKEND,
                "max_connections must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Schema and table names: 1 to [`MAX_IDENT_LEN`] ASCII letters, digits, `_` or `-` (they
/// are always quoted, so case is kept).
fn check_ident(what: &str, name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > MAX_IDENT_LEN {
        return Err(format!("a {what} name has 1 to {MAX_IDENT_LEN} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("use ASCII letters, digits, `_` and `-` only".to_owned());
    }
    Ok(())
}

impl FromStr for PostgresOptions {
    type Err = LockError;

    /// Parses a `postgres://` or `postgresql://` URL: this crate's options are read here,
    /// sqlx's are handed to [`PgConnectOptions`].
    fn from_str(text: &str) -> Result<Self> {
        let mut url = StoreUrl::parse(text, BACKEND, URL_SCHEMES, USAGE)?;
        if url.fragment().is_some() {
            return Err(url.error("a fragment (#...) means nothing here"));
        }
        if !url.body().starts_with("//") {
            return Err(url.error("write postgres://host/database"));
        }
        let shown = url.shown().to_owned();
        let query = url.query();
        let schema = query.string("schema")?;
        let table = query.string("table")?;
        let timeout = query.duration("timeout")?;
        let connect_timeout = query.duration("connect_timeout")?;
        let max_connections = query.number::<u32>("max_connections")?;
        let statement_cache = query.number::<usize>("statement_cache")?;
        let listen = query.boolean("listen")?;
        let listen_url = query.string("listen_url")?;
        let poll = query.duration("poll")?;
        let mut passed = Vec::new();
        for key in SQLX_KEYS {
            if let Some(value) = query.string(key)? {
                passed.push((*key, value));
            }
        }
        // `options[name]=value`, sqlx's spelling of one server setting.
        let body = url.body().to_owned();
        let scheme = url.scheme().to_owned();
        let mut sqlx_url = format!("{scheme}:{body}");
        let mut first = true;
        let mut append = |key: &str, value: &str| {
            sqlx_url.push(if first { '?' } else { '&' });
            first = false;
            sqlx_url.extend(url_encode(key));
            sqlx_url.push('=');
            sqlx_url.extend(url_encode(value));
        };
        for (key, value) in &passed {
            append(key, value);
        }
        url.finish()?;
        let connect: PgConnectOptions = sqlx_url.parse().map_err(|e| {
            LockError::config(
                BACKEND,
                format!("bad postgres lock URL \"{shown}\": {e}; {USAGE}"),
            )
        })?;
        let cache_capacity = statement_cache.unwrap_or(100);
        let mut opts = Self::new(connect.statement_cache_capacity(cache_capacity.max(1)));
        opts.shown = shown;
        // sqlx's own spelling turns the cache off too.
        let sqlx_cache_off = passed
            .iter()
            .any(|(k, v)| *k == "statement-cache-capacity" && v.trim() == "0");
        opts.statement_cache = cache_capacity != 0 && !sqlx_cache_off;
        if let Some(schema) = schema {
            opts.schema = schema;
        }
        if let Some(table) = table {
            opts.table = table;
        }
        if let Some(timeout) = timeout {
            opts.timeout = timeout;
        }
        if let Some(timeout) = connect_timeout {
            opts.connect_timeout = timeout;
        }
        if let Some(max) = max_connections {
            opts.max_connections = max;
        }
        if let Some(listen_url) = listen_url {
            if !URL_SCHEMES
                .iter()
                .any(|s| listen_url.starts_with(&format!("{s}://")))
            {
                return Err(LockError::config(
                    BACKEND,
                    format!(
                        "bad postgres lock URL \"{}\": listen_url must be a postgres:// URL",
                        opts.shown
                    ),
                ));
            }
            let parsed: PgConnectOptions = listen_url.parse().map_err(|e| {
                LockError::config(
                    BACKEND,
                    format!("bad postgres lock URL \"{}\": listen_url: {e}", opts.shown),
                )
            })?;
            opts.listen_url = Some(parsed);
        }
        // A LISTEN through a pooler in transaction mode stays on a pooled server
        // connection: without a URL of its own, it is off when prepared statements are.
        opts.listen = listen.unwrap_or(opts.statement_cache || opts.listen_url.is_some());
        if let Some(poll) = poll {
            opts.poll = poll;
        }
        opts.validate().map_err(|e| match e {
            LockError::Config { detail, .. } => LockError::config(
                BACKEND,
                format!("bad postgres lock URL \"{}\": {detail}", opts.shown),
            ),
            other => other,
        })?;
        Ok(opts)
    }
}

/// `application/x-www-form-urlencoded` text of `s`, for the URL handed to sqlx.
fn url_encode(s: &str) -> impl Iterator<Item = char> + '_ {
    s.bytes().flat_map(|b| {
        let keep = b.is_ascii_alphanumeric() || b"-_.~[]".contains(&b);
        let chars: Vec<char> = if keep {
            vec![char::from(b)]
        } else {
            format!("%{b:02X}").chars().collect()
        };
        chars
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> String {
        match text.parse::<PostgresOptions>() {
            Err(LockError::Config { detail, .. }) => detail,
            other => panic!("{text}: expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_own_options() {
        let o: PostgresOptions = "postgres://u@h:5433/db".parse().unwrap();
        assert_eq!(o.schema, DEFAULT_SCHEMA);
        assert_eq!(o.table, DEFAULT_TABLE);
        assert_eq!(o.timeout, Duration::from_secs(2));
        assert!(o.statement_cache && o.listen);
        assert_eq!(o.connect.get_port(), 5433);
        assert_eq!(o.connect.get_host(), "h");
        assert_eq!(o.connect.get_database(), Some("db"));
        let o: PostgresOptions = "postgresql://h/db?schema=s&table=t&timeout=5s\
             &connect_timeout=1s&max_connections=3&statement_cache=0&listen=false&poll=20ms"
            .parse()
            .unwrap();
        assert_eq!((o.schema.as_str(), o.table.as_str()), ("s", "t"));
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(o.connect_timeout, Duration::from_secs(1));
        assert_eq!(o.max_connections, 3);
        assert!(!o.statement_cache && !o.listen);
        assert_eq!(o.poll, Duration::from_millis(20));
        let o: PostgresOptions = "postgres://bouncer:6432/db?statement_cache=0"
            .parse()
            .unwrap();
        assert!(
            !o.listen,
            "no LISTEN through a transaction pooler by default"
        );
        let o: PostgresOptions =
            "postgres://bouncer:6432/db?statement_cache=0&listen_url=postgres%3A%2F%2Fdb%3A5432%2Fdb"
                .parse()
                .unwrap();
        assert!(o.listen);
        assert_eq!(o.listen_url.as_ref().map(|l| l.get_port()), Some(5432));
        assert!(config("postgres://h/db?listen_url=redis%3A%2F%2Fx").contains("listen_url"));
    }

    #[test]
    fn sqlx_options_pass_through() {
        let o: PostgresOptions =
            "postgres://h/db?sslmode=disable&application_name=my%20app&statement-cache-capacity=0"
                .parse()
                .unwrap();
        assert!(!o.statement_cache, "sqlx's spelling turns the cache off");
        assert_eq!(o.connect.get_application_name(), Some("my app"));
    }

    #[test]
    fn unknown_options_list_every_known_one() {
        let d = config("postgres://h/db?tabel=x");
        assert!(d.contains("unknown option `tabel`"), "{d}");
        for key in ["schema", "table", "timeout", "statement_cache", "sslmode"] {
            assert!(d.contains(key), "{key} missing: {d}");
        }
    }

    #[test]
    fn bad_values_are_config_errors_without_the_password() {
        let d = config("postgres://u:s3cret@h/db?timeout=5");
        assert!(d.contains("write 5s or 5ms"), "{d}");
        assert!(!d.contains("s3cret"), "{d}");
        let d = config("postgres://u:s3cret@h/db?table=a;drop");
        assert!(d.contains("ASCII letters"), "{d}");
        assert!(!d.contains("s3cret"), "{d}");
        assert!(config("postgres://h/db?schema=").contains("1 to 56"));
        assert!(config(&format!("postgres://h/db?table={}", "x".repeat(57))).contains("1 to 56"));
        assert!(config("postgres://h/db?timeout=0s").contains("above zero"));
        assert!(config("postgres://h/db?max_connections=0").contains("at least 1"));
        assert!(config("mysql://h/db").contains("postgres://"));
        assert!(config("postgres:db").contains("postgres://host/database"));
        assert!(config("postgres://h/db?sslmode=sometimes").contains("sometimes"));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let o: PostgresOptions = "postgres://u:s3cret@h/db?password=hunter2".parse().unwrap();
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
