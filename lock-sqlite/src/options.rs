//! [`SqliteOptions`]: which database file, how it is opened, and how long a busy database is
//! waited for; built in code or parsed from a `sqlite:` URL.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lock_core::LockError;
use lock_core::backend_kit::clock::{self, HostClock};
use lock_core::backend_kit::config::{StoreUrl, percent_decode};

use crate::BACKEND;

/// The URL schemes of the rusqlite driver ([`SqliteBackend`](crate::SqliteBackend)).
pub const URL_SCHEMES: &[&str] = &["sqlite"];

/// The URL schemes of the sqlx driver (`SqlxSqliteBackend`, feature `sqlx`).
pub const SQLX_URL_SCHEMES: &[&str] = &["sqlite+sqlx"];

const USAGE: &str = "use sqlite:///absolute/path.db or sqlite://relative/path.db, with \
     optional ?synchronous=normal|full, ?busy_timeout=30s, ?mode=ro|rw|rwc";

/// Where the database is and how to open it.
///
/// Build it in code, or parse it from a URL (`sqlite:///abs/path.db`,
/// `sqlite://relative/path.db`, or `sqlite+sqlx://...` for the sqlx driver) with its
/// options:
///
/// | option | values | default |
/// |---|---|---|
/// | `synchronous` | `normal`, `full` | `normal` |
/// | `busy_timeout` | a duration: `500ms`, `30s`, `2m` (at most a day) | `30s` |
/// | `mode` | `ro` (read-only), `rw` (must exist), `rwc` (create if missing) | `rwc` |
///
/// ```
/// use std::time::Duration;
/// use lock_sqlite::{SqliteOptions, Synchronous};
///
/// let opts = SqliteOptions::new("/var/lib/app/locks.db")
///     .with_synchronous(Synchronous::Full)
///     .with_busy_timeout(Duration::from_secs(5));
/// let parsed: SqliteOptions = "sqlite:///var/lib/app/locks.db?synchronous=full&busy_timeout=5s".parse()?;
/// assert_eq!(opts, parsed);
/// # Ok::<(), lock_core::LockError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// The database file (relative paths are relative to the working directory).
    pub path: PathBuf,
    /// How hard SQLite pushes each commit to disk. Default [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// How long one operation keeps retrying while another connection holds the database's
    /// write lock (`SQLITE_BUSY` / `SQLITE_LOCKED`) before it fails with
    /// [`LockError::Unavailable`]. Default 30 s.
    /// Zero tries once.
    pub busy_timeout: Duration,
    /// Open the database read-only: `inspect` and `list` work, taking or releasing a lock
    /// fails with a configuration error. The file and its lock tables must already exist
    /// (a read-only open never creates anything). Default `false`.
    pub read_only: bool,
    /// Create the database file if it does not exist (never its directory; never when
    /// [`read_only`](Self::read_only)). Default `true`.
    pub create_if_missing: bool,
    /// The host's clocks (see [`with_clock`](Self::with_clock)).
    clock: Arc<dyn HostClock>,
}

impl PartialEq for SqliteOptions {
    /// Equal when every setting is, and the clocks are the same clock.
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
            && self.synchronous == other.synchronous
            && self.busy_timeout == other.busy_timeout
            && self.read_only == other.read_only
            && self.create_if_missing == other.create_if_missing
            && Arc::ptr_eq(&self.clock, &other.clock)
    }
}

impl Eq for SqliteOptions {}

/// SQLite's `PRAGMA synchronous` for the connection.
///
/// The database runs in WAL mode, where [`Normal`](Self::Normal) never corrupts the
/// database but a power loss (not a process crash) can undo the last commits, for example
/// a lease just taken or released. [`Full`](Self::Full) syncs the WAL on every commit:
/// slower, and durable across power loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL` (the default).
    #[default]
    Normal,
    /// `PRAGMA synchronous = FULL`.
    Full,
}

impl Synchronous {
    /// The pragma value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// The default [`SqliteOptions::busy_timeout`].
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest [`SqliteOptions::busy_timeout`] a URL may ask for.
const MAX_URL_BUSY_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

impl SqliteOptions {
    /// The database at `path`, with default options.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::Normal,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            read_only: false,
            create_if_missing: true,
            clock: clock::system(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// With `PRAGMA synchronous` set to `synchronous`.
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Retries a busy database for at most `timeout` per operation.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens the database read-only (or read-write, the default).
    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Creates a missing database file (the default), or fails if it does not exist.
    pub fn with_create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// A test hook: judges time by `clock` instead of the system's clocks
    /// ([`clock::system`]), for example a
    /// [`SteppedClock`](lock_core::backend_kit::clock::SteppedClock) that steps the wall
    /// clock or pretends the host rebooted. Expiry is judged on its boot clock (with its
    /// boot id); fences and the times shown to people come from its wall clock. Every
    /// process sharing a database must use the same boot clock, so production code keeps
    /// the default. Not part of the URL.
    pub fn with_clock(mut self, clock: Arc<dyn HostClock>) -> Self {
        self.clock = clock;
        self
    }

    /// The host's clocks these options judge time by.
    pub fn clock(&self) -> &Arc<dyn HostClock> {
        &self.clock
    }

    /// The `sqlite:` URL that parses back to these options (for tools that pass a store on
    /// to another process), except the [clock](Self::with_clock), which a URL cannot carry.
    /// `None` if the path is not UTF-8.
    pub fn to_url(&self) -> Option<String> {
        let path = self.path.to_str()?;
        let mode = match (self.read_only, self.create_if_missing) {
            (true, _) => "ro",
            (false, false) => "rw",
            (false, true) => "rwc",
        };
        let mut encoded = String::with_capacity(path.len());
        for c in path.chars() {
            match c {
                '%' | '?' | '#' => encoded.push_str(&format!("%{:02X}", u32::from(c))),
                c => encoded.push(c),
            }
        }
        Some(format!(
            "sqlite://{encoded}?mode={mode}&synchronous={}&busy_timeout={}ms",
            self.synchronous.as_str().to_ascii_lowercase(),
            self.busy_timeout.as_millis()
        ))
    }
}

impl FromStr for SqliteOptions {
    type Err = LockError;

    /// Parses a `sqlite:` (or `sqlite+sqlx:`) URL. The path is taken as written (only `%XX`
    /// escapes are decoded): `sqlite:///abs/path.db` is absolute, `sqlite://rel/path.db` and
    /// `sqlite:rel.db` are relative to the working directory.
    fn from_str(text: &str) -> Result<Self, LockError> {
        let schemes: Vec<&str> = URL_SCHEMES
            .iter()
            .chain(SQLX_URL_SCHEMES)
            .copied()
            .collect();
        let mut url = StoreUrl::parse(text, BACKEND, &schemes, USAGE)?;
        if url.fragment().is_some() {
            return Err(url.error("a fragment (#...) means nothing here"));
        }
        let body = url.body();
        let path = body.strip_prefix("//").unwrap_or(body);
        let path = percent_decode(path)
            .ok_or_else(|| url.error("the path has a bad %-escape or is not UTF-8"))?;
        if path.is_empty() || path.ends_with('/') {
            return Err(url.error("it names no database file"));
        }
        if path == ":memory:" || path.starts_with("file:") || path.contains('\0') {
            return Err(url.error(
                "in-memory databases and nested URIs are not supported: locks must live in a \
                 file that every process opens",
            ));
        }
        let mut opts = Self::new(path);
        let query = url.query();
        if let Some(synchronous) = query.choice(
            "synchronous",
            &[("normal", Synchronous::Normal), ("full", Synchronous::Full)],
        )? {
            opts.synchronous = synchronous;
        }
        if let Some(timeout) = query.duration("busy_timeout")? {
            if timeout > MAX_URL_BUSY_TIMEOUT {
                return Err(query.error("busy_timeout", "it is longer than a day"));
            }
            opts.busy_timeout = timeout;
        }
        if let Some((read_only, create)) = query.choice(
            "mode",
            &[
                ("ro", (true, false)),
                ("rw", (false, false)),
                ("rwc", (false, true)),
            ],
        )? {
            opts.read_only = read_only;
            opts.create_if_missing = create;
        }
        url.finish()?;
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(url: &str) -> String {
        url.parse::<SqliteOptions>()
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .path
            .display()
            .to_string()
    }

    #[test]
    fn absolute_and_relative_paths() {
        assert_eq!(
            path_of("sqlite:///var/lib/app/locks.db"),
            "/var/lib/app/locks.db"
        );
        assert_eq!(path_of("sqlite://locks.db"), "locks.db");
        assert_eq!(path_of("sqlite://data/locks.db"), "data/locks.db");
        assert_eq!(path_of("sqlite://Data/Locks.db"), "Data/Locks.db");
        assert_eq!(path_of("sqlite:locks.db"), "locks.db");
        assert_eq!(path_of("sqlite:///tmp/a%20b.db"), "/tmp/a b.db");
        assert_eq!(path_of("sqlite://./x.db"), "./x.db");
        assert_eq!(path_of("sqlite://../../x.db"), "../../x.db");
        assert_eq!(path_of("sqlite:///a/../b.db"), "/a/../b.db");
        assert_eq!(path_of("SQLite:///x.db"), "/x.db");
        assert_eq!(path_of("sqlite:///x.db?"), "/x.db");
        assert_eq!(path_of("sqlite+sqlx:///x.db"), "/x.db");
    }

    #[test]
    fn options() {
        let o: SqliteOptions = "sqlite:///x.db".parse().unwrap();
        assert_eq!(o, SqliteOptions::new("/x.db"));
        let o: SqliteOptions = "sqlite:///x.db?synchronous=FULL&busy_timeout=250ms&mode=ro"
            .parse()
            .unwrap();
        assert_eq!(o.synchronous, Synchronous::Full);
        assert_eq!(o.busy_timeout, Duration::from_millis(250));
        assert!(o.read_only && !o.create_if_missing);
        let o: SqliteOptions = "sqlite://x.db?mode=rw&synchronous=normal".parse().unwrap();
        assert!(!o.read_only && !o.create_if_missing);
        assert_eq!(o.synchronous, Synchronous::Normal);
    }

    #[test]
    fn the_clock_hook_is_kept_and_compared_by_identity() {
        use lock_core::backend_kit::clock::SteppedClock;
        let plain = SqliteOptions::new("/x.db");
        assert!(Arc::ptr_eq(plain.clock(), &clock::system()));
        let stepped: Arc<dyn HostClock> = Arc::new(SteppedClock::new());
        let hooked = plain.clone().with_clock(Arc::clone(&stepped));
        assert!(Arc::ptr_eq(hooked.clock(), &stepped));
        assert_ne!(hooked, plain, "another clock");
        assert_eq!(hooked, hooked.clone());
        // A URL cannot carry the hook: it parses back with the system's clocks.
        let url = hooked.to_url().unwrap();
        assert_eq!(url.parse::<SqliteOptions>().unwrap(), plain);
    }

    #[test]
    fn to_url_round_trips() {
        for opts in [
            SqliteOptions::new("/tmp/a b%?#.db"),
            SqliteOptions::new("rel/x.db")
                .with_read_only(true)
                .with_create_if_missing(false)
                .with_synchronous(Synchronous::Full)
                .with_busy_timeout(Duration::from_millis(1500)),
            SqliteOptions::new("/x.db").with_create_if_missing(false),
        ] {
            let url = opts.to_url().unwrap();
            assert_eq!(url.parse::<SqliteOptions>().unwrap(), opts, "{url}");
        }
    }

    #[test]
    fn bad_urls_are_config_errors_that_say_what_to_write() {
        for bad in [
            "",
            "sqlite",
            "redis://localhost/0",
            "sqlite://",
            "sqlite:///",
            "sqlite:///dir/",
            "sqlite::memory:",
            "sqlite:///x.db?synchronous=off",
            "sqlite:///x.db?busy_timeout=soon",
            "sqlite:///x.db?busy_timeout=30",
            "sqlite:///x.db?busy_timeout=400days",
            "sqlite:///x.db?busy_budget=30s",
            "sqlite:///x.db?mode=memory",
            "sqlite:///x.db?journal_mode=delete",
            "sqlite:///x%2.db",
            "sqlite:///x.db?busy_timeout",
            "sqlite:///x.db#frag",
            "sqlite:///%FF.db",
        ] {
            match bad.parse::<SqliteOptions>() {
                Err(LockError::Config { detail, .. }) => {
                    assert!(detail.contains("sqlite:///absolute/path.db"), "{detail}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let e = "sqlite:///x.db?busy_budget=30s"
            .parse::<SqliteOptions>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown option `busy_budget` (known: synchronous, busy_timeout, mode)"),
            "{e}"
        );
    }
}
