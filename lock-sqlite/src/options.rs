//! [`SqliteOptions`] and [`Synchronous`]: how the database is opened and how long a busy
//! database is waited for.

use std::time::Duration;

/// Options for [`SqliteBackend::open_with`](crate::SqliteBackend::open_with) (and, for
/// [`busy_budget`](Self::busy_budget) only, the sqlx driver's `new_with`).
///
/// ```
/// use std::time::Duration;
/// use lock_sqlite::{SqliteOptions, Synchronous};
///
/// let opts = SqliteOptions::default()
///     .synchronous(Synchronous::Full)
///     .busy_budget(Duration::from_secs(5));
/// assert_eq!(opts.busy_budget, Duration::from_secs(5));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// How hard SQLite pushes each commit to disk. Default [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// How long one operation keeps retrying while another connection holds the database's
    /// write lock (`SQLITE_BUSY` / `SQLITE_LOCKED`) before it fails with
    /// [`LockError::Unavailable`](lock_core::LockError::Unavailable). Default 30 s.
    /// Zero tries once.
    pub busy_budget: Duration,
    /// Open the database read-only: `inspect` and `list` work, taking or releasing a lock
    /// fails with a configuration error. The file and its lock tables must already exist
    /// (a read-only open never creates anything). Default `false`.
    pub read_only: bool,
    /// Create the database file if it does not exist (never its directory; never when
    /// [`read_only`](Self::read_only)). Default `true`.
    pub create_if_missing: bool,
}

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

/// The default [`SqliteOptions::busy_budget`].
pub const DEFAULT_BUSY_BUDGET: Duration = Duration::from_secs(30);

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            busy_budget: DEFAULT_BUSY_BUDGET,
            read_only: false,
            create_if_missing: true,
        }
    }
}

impl SqliteOptions {
    /// With `PRAGMA synchronous` set to `synchronous`.
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Retries a busy database for at most `budget` per operation.
    pub fn busy_budget(mut self, budget: Duration) -> Self {
        self.busy_budget = budget;
        self
    }

    /// Opens the database read-only (or read-write, the default).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Creates a missing database file (the default), or fails if it does not exist.
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }
}
