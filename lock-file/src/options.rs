//! [`FileOptions`]: how a [`FileBackend`](crate::FileBackend) writes and waits.

use std::time::Duration;

/// Options for [`FileBackend::open_with`](crate::FileBackend::open_with).
///
/// ```
/// use std::time::Duration;
/// use lock_file::FileOptions;
///
/// let opts = FileOptions::default()
///     .with_sync_writes(true)
///     .with_busy_timeout(Duration::from_secs(30));
/// assert!(opts.sync_writes);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileOptions {
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
    /// file before failing with [`LockError::Unavailable`](lock_core::LockError::Unavailable)
    /// (default 10 s). Critical sections take microseconds, so running into this limit means
    /// a process is stuck (stopped, or on a hung disk) while holding a lease file's lock.
    pub busy_timeout: Duration,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            sync_writes: false,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

impl FileOptions {
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
}
