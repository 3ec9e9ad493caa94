//! Private PostgreSQL servers (and PgBouncers) for tests.
//!
//! - [`PostgresServer`]: one private cluster (`initdb` + `postgres` from the `postgresql`
//!   package) on a free loopback port, in a temporary directory, that a test can kill,
//!   pause, resume and restart. As root it runs as the `postgres` user. It is shut down by
//!   pid when dropped, also when a test panics, and a guardian shell stops it (and removes
//!   its directory) if the test process dies without dropping it.
//! - [`PgBouncer`]: a private `pgbouncer` in transaction pooling mode in front of a server.
//! - [`TestPostgres`]: the server a test suite should use: `LOCK_TEST_POSTGRES_URL` if set,
//!   else a private cluster; with neither a URL nor the server binaries it panics with how
//!   to install them. Tests never skip.
//! - [`shared`] and [`shared_bouncer`]: one of each per test binary, started on first use;
//!   tests keep apart by schema ([`unique_schema`]).

mod bouncer;
mod server;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use bouncer::{PGBOUNCER_HINT, PgBouncer};
pub use server::PostgresServer;

/// The environment variable naming an existing server for [`TestPostgres`].
pub const URL_ENV: &str = "LOCK_TEST_POSTGRES_URL";

/// What to do when no PostgreSQL server can be had.
pub const INSTALL_HINT: &str = "the PostgreSQL tests need the PostgreSQL server binaries \
    (initdb, postgres, pg_isready): install them (Debian/Ubuntu: `apt-get install \
    postgresql`, which puts them in /usr/lib/postgresql/<version>/bin; macOS: `brew install \
    postgresql`), or set LOCK_TEST_POSTGRES_BIN to their directory, or set \
    LOCK_TEST_POSTGRES_URL=postgres://user@host:port/database to use an existing server";

/// The directory of the server binaries: `LOCK_TEST_POSTGRES_BIN` if set, else the newest
/// `/usr/lib/postgresql/<version>/bin`, else the directory of an `initdb` on `PATH`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LOCK_TEST_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
}

/// A schema name no other test (or test run) uses: `"{tag}_{pid}_{nanos}_{n}"`, at most 56
/// bytes of ASCII letters, digits and `_`.
pub fn unique_schema(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(24)
        .collect();
    format!("{tag}_{}_{nanos:x}_{n}", std::process::id())
}

/// The PostgreSQL server a test binary should use.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestPostgres {
    /// The server named by `LOCK_TEST_POSTGRES_URL`.
    External(String),
    /// A private cluster.
    Local(PostgresServer),
}

impl TestPostgres {
    /// `LOCK_TEST_POSTGRES_URL` if set, else a private cluster.
    ///
    /// # Panics
    ///
    /// When neither is possible, with a message saying how to install PostgreSQL. Tests
    /// never skip silently.
    pub fn from_env_or_start() -> Self {
        if let Ok(url) = std::env::var(URL_ENV)
            && !url.trim().is_empty()
        {
            return Self::External(url.trim().to_owned());
        }
        if bin_dir().is_none() {
            panic!(
                "no PostgreSQL server for the tests: {URL_ENV} is not set and no server binaries were found. {INSTALL_HINT}"
            );
        }
        Self::Local(PostgresServer::start())
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        match self {
            Self::External(url) => url.clone(),
            Self::Local(server) => server.url(),
        }
    }

    /// The private cluster, when this is one (fault tests need it).
    pub fn server(&self) -> Option<&PostgresServer> {
        match self {
            Self::Local(server) => Some(server),
            Self::External(_) => None,
        }
    }

    /// Host, port and database of the server, for a pooler in front of it.
    fn address(&self) -> (String, u16, String) {
        match self {
            Self::Local(server) => ("127.0.0.1".to_owned(), server.port(), "postgres".to_owned()),
            Self::External(url) => parse_address(url),
        }
    }
}

/// `host`, `port` (5432 if absent) and database (`postgres` if absent) of a URL.
fn parse_address(url: &str) -> (String, u16, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(5432)),
        None => (host_port, 5432),
    };
    let database = if database.is_empty() {
        "postgres"
    } else {
        database
    };
    (host.to_owned(), port, database.to_owned())
}

/// The [`TestPostgres`] of this test binary, started on first use and shared by all its
/// tests (never dropped: its guardian stops a private server when the binary exits).
///
/// # Panics
///
/// As [`TestPostgres::from_env_or_start`].
pub fn shared() -> &'static TestPostgres {
    static POSTGRES: OnceLock<TestPostgres> = OnceLock::new();
    POSTGRES.get_or_init(TestPostgres::from_env_or_start)
}

/// The environment variable naming an existing PgBouncer (in transaction mode, in front of
/// [`shared`]'s server) for [`shared_bouncer`]: a process started by a test passes its
/// pooler on to the processes it starts.
pub const BOUNCER_URL_ENV: &str = "LOCK_TEST_PGBOUNCER_URL";

/// The PgBouncer a test binary should use.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestPgBouncer {
    /// The pooler named by `LOCK_TEST_PGBOUNCER_URL`.
    External(String),
    /// A private `pgbouncer`, and the URL of the shared server's database through it.
    Local(PgBouncer, String),
}

impl TestPgBouncer {
    /// The URL of the shared server's database through the pooler.
    pub fn url(&self) -> String {
        match self {
            Self::External(url) | Self::Local(_, url) => url.clone(),
        }
    }
}

/// The [`TestPgBouncer`] of this test binary: `LOCK_TEST_PGBOUNCER_URL` if set, else a
/// private [`PgBouncer`] in transaction mode in front of [`shared`]'s server, started on
/// first use.
///
/// # Panics
///
/// As [`shared`] and [`PgBouncer::start`].
pub fn shared_bouncer() -> &'static TestPgBouncer {
    static BOUNCER: OnceLock<TestPgBouncer> = OnceLock::new();
    BOUNCER.get_or_init(|| {
        if let Ok(url) = std::env::var(BOUNCER_URL_ENV)
            && !url.trim().is_empty()
        {
            return TestPgBouncer::External(url.trim().to_owned());
        }
        let (host, port, database) = shared().address();
        let bouncer = PgBouncer::start(&host, port, 20);
        let url = bouncer.url(&database);
        TestPgBouncer::Local(bouncer, url)
    })
}

/// `text` percent-encoded for a URL's query (everything but ASCII letters, digits and
/// `-._~`), to pass one URL inside another (`?listen_url=...`).
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_external_urls() {
        assert_eq!(
            parse_address("postgres://postgres@127.0.0.1:5432/test"),
            ("127.0.0.1".to_owned(), 5432, "test".to_owned())
        );
        assert_eq!(
            parse_address("postgresql://u:p@db/app?sslmode=disable"),
            ("db".to_owned(), 5432, "app".to_owned())
        );
    }

    #[test]
    fn urls_inside_urls_are_encoded() {
        assert_eq!(
            url_encode("postgres://u@h:1/d?x=1"),
            "postgres%3A%2F%2Fu%40h%3A1%2Fd%3Fx%3D1"
        );
    }

    #[test]
    fn unique_schemas_are_identifiers_and_differ() {
        let (a, b) = (
            unique_schema("conformance-x"),
            unique_schema("conformance-x"),
        );
        assert_ne!(a, b);
        assert!(a.len() <= 56, "{a}");
        assert!(
            a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'),
            "{a}"
        );
    }

    #[test]
    fn without_a_server_the_message_says_how_to_install() {
        for needle in [
            URL_ENV,
            "apt-get install postgresql",
            "LOCK_TEST_POSTGRES_BIN",
        ] {
            assert!(INSTALL_HINT.contains(needle), "{needle}");
        }
        assert!(PGBOUNCER_HINT.contains("apt-get install pgbouncer"));
    }
}
