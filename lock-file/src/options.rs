//! [`FileOptions`]: which lock directory, and how a [`FileBackend`](crate::FileBackend)
//! writes and waits; built in code or parsed from a `file:` URL.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lock_core::LockError;
use lock_core::backend_kit::clock::{self, HostClock};
use lock_core::backend_kit::config::{StoreUrl, percent_decode};

use crate::io_error::BACKEND;

/// The URL schemes this backend accepts.
pub const URL_SCHEMES: &[&str] = &["file"];

const USAGE: &str = "use file:///absolute/path/to/lock-dir, optionally with ?sync=true \
                     and/or ?busy_timeout=10s";

/// Where the lock directory is and how to use it.
///
/// Build it in code, or parse it from a `file:///absolute/dir` URL (a host other than
/// `localhost` is refused; `%20` and friends are decoded) with its options:
///
/// | option | values | default |
/// |---|---|---|
/// | `sync` | `true`, `false` | `false` |
/// | `busy_timeout` | a duration: `500ms`, `10s`, `1m` (above zero) | `10s` |
///
/// ```
/// use std::time::Duration;
/// use lock_file::FileOptions;
///
/// let opts = FileOptions::new("/var/lib/app/locks")
///     .with_sync_writes(true)
///     .with_busy_timeout(Duration::from_secs(30));
/// let parsed: FileOptions = "file:///var/lib/app/locks?sync=true&busy_timeout=30s".parse()?;
/// assert_eq!(opts, parsed);
/// # Ok::<(), lock_core::LockError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FileOptions {
    /// The lock directory.
    pub dir: PathBuf,
    /// Create the directory (and missing parents, mode 0700) if it does not exist (default
    /// `true`). With `false`, a missing directory is a configuration error.
    pub create_if_missing: bool,
    /// `fsync` a lease file after every write (default `false`).
    ///
    /// Without it, a write is in the kernel's page cache when the operation returns: every
    /// process on the host sees it at once and it survives any process crash, so fences stay
    /// strictly increasing across process crashes. What it does not survive is an OS crash
    /// or power loss before the kernel flushes it (typically within 30 s): the file can then
    /// come back with an older fence, or empty. With `sync_writes`, each write waits for the
    /// disk (about a millisecond on an SSD, far more on a network filesystem), and that
    /// critical section runs on Tokio's blocking thread pool so the runtime is not stalled.
    pub sync_writes: bool,
    /// How long an operation waits for another process's critical section on the same lease
    /// file before failing with [`LockError::Unavailable`] (default 10 s). Critical sections take microseconds, so running into this limit means
    /// a process is stuck (stopped, or on a hung disk) while holding a lease file's lock.
    pub busy_timeout: Duration,
    /// The host's clocks (see [`with_clock`](Self::with_clock)).
    clock: Arc<dyn HostClock>,
}

/// Options are equal when they name the same directory with the same settings and the same
/// clock (the same shared value: every default option uses the system's).
impl PartialEq for FileOptions {
    fn eq(&self, other: &Self) -> bool {
        self.dir == other.dir
            && self.create_if_missing == other.create_if_missing
            && self.sync_writes == other.sync_writes
            && self.busy_timeout == other.busy_timeout
            && std::ptr::addr_eq(Arc::as_ptr(&self.clock), Arc::as_ptr(&other.clock))
    }
}

impl Eq for FileOptions {}

impl FileOptions {
    /// The lock directory `dir`, with default options.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            create_if_missing: true,
            sync_writes: false,
            busy_timeout: Duration::from_secs(10),
            clock: clock::system(),
        }
    }

    /// The lock directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// With [`create_if_missing`](Self::create_if_missing) set as given.
    pub fn with_create_if_missing(mut self, yes: bool) -> Self {
        self.create_if_missing = yes;
        self
    }

    /// With [`sync_writes`](Self::sync_writes) set as given.
    pub fn with_sync_writes(mut self, yes: bool) -> Self {
        self.sync_writes = yes;
        self
    }

    /// With [`busy_timeout`](Self::busy_timeout) set as given.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// A test hook: judges leases by `clock` instead of the system's clocks
    /// ([`clock::system`], the default).
    ///
    /// The boot clock ([`HostClock::since_boot`]) decides expiry, the boot id
    /// ([`HostClock::boot_id`]) tells this boot's leases from those of a holder that died
    /// with an earlier one, and the wall clock ([`HostClock::wall`]) gives fences and the
    /// times people read. A [`SteppedClock`](clock::SteppedClock) steps the wall clock or
    /// pretends the host rebooted, without touching the system clock:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use lock_core::backend_kit::clock::{HostClock, SteppedClock, SystemClock};
    /// use lock_file::FileOptions;
    ///
    /// let clock = Arc::new(SteppedClock::new());
    /// let opts = FileOptions::new("/tmp/locks").with_clock(clock.clone());
    /// clock.step_wall(Duration::from_secs(120), true); // as `faketime -f +120s` would
    /// assert!(opts.clock().wall() > SystemClock.wall() + Duration::from_secs(119));
    /// assert_ne!(opts, FileOptions::new("/tmp/locks"), "another clock");
    /// ```
    ///
    /// Every process sharing a lock directory uses the same host clocks, so production code
    /// has no reason to call this.
    pub fn with_clock(mut self, clock: Arc<dyn HostClock>) -> Self {
        self.clock = clock;
        self
    }

    /// The host's clocks the backend judges leases by (see [`with_clock`](Self::with_clock)).
    pub fn clock(&self) -> &Arc<dyn HostClock> {
        &self.clock
    }
}

impl FromStr for FileOptions {
    type Err = LockError;

    /// Parses a `file:///absolute/dir[?sync=true&busy_timeout=10s]` URL.
    fn from_str(text: &str) -> Result<Self, LockError> {
        let mut url = StoreUrl::parse(text, BACKEND, URL_SCHEMES, USAGE)?;
        if url.fragment().is_some() {
            return Err(url.error("unexpected #fragment"));
        }
        let Some(rest) = url.body().strip_prefix("//") else {
            return Err(url.error("it does not name an absolute local path"));
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
            return Err(url.error("a lock directory must be local: remove the host name"));
        }
        let path = percent_decode(path)
            .ok_or_else(|| url.error("the path has a bad %-escape or is not UTF-8"))?;
        if !path.starts_with('/') || path.contains('\0') {
            return Err(url.error("it does not name an absolute local path"));
        }
        let mut options = Self::new(path);
        let query = url.query();
        if let Some(sync) = query.boolean("sync")? {
            options.sync_writes = sync;
        }
        if let Some(timeout) = query.duration("busy_timeout")? {
            if timeout.is_zero() {
                return Err(query.error("busy_timeout", "it must be above zero"));
            }
            options.busy_timeout = timeout;
        }
        url.finish()?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileOptions, LockError> {
        text.parse()
    }

    #[test]
    fn parses_path_and_options() {
        let opts = parse("file:///var/lib/my%20locks?sync=true&busy_timeout=2500ms").unwrap();
        assert_eq!(opts.dir, PathBuf::from("/var/lib/my locks"));
        assert!(opts.sync_writes);
        assert_eq!(opts.busy_timeout, Duration::from_millis(2500));
        let opts = parse("file://localhost/tmp/locks").unwrap();
        assert_eq!(opts, FileOptions::new("/tmp/locks"));
        assert_eq!(
            parse("FILE:///tmp/x/").unwrap().dir,
            PathBuf::from("/tmp/x/")
        );
    }

    #[test]
    fn bad_urls_are_config_errors_that_show_the_format() {
        for bad in [
            "not a url",
            "redis://localhost/0",
            "file://otherhost/tmp/locks",
            "file:relative/dir",
            "file:///tmp/locks?sync=maybe",
            "file:///tmp/locks?busy_timeout=0s",
            "file:///tmp/locks?busy_timeout=1500",
            "file:///tmp/locks?busy_timeout_ms=1500",
            "file:///tmp/locks?synch=true",
            "file:///tmp/locks#frag",
            "file:///tmp/%FF",
        ] {
            match parse(bad) {
                Err(LockError::Config { detail, .. }) => {
                    assert!(detail.contains("file:///absolute/path"), "{bad}: {detail}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
