//! Taking an fs4 (`flock`) lock on a lease file without blocking the async runtime.
//!
//! fs4's methods are called through the `fs4::FileExt` trait path on purpose: std's
//! `File` has inherent `lock`/`try_lock` methods with different error types, which would
//! otherwise be picked instead.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lock_core::LockError;

use crate::io_error::{BACKEND, io_error};

/// Which lock an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// Readers (`inspect`, `list`): many at once.
    Shared,
    /// Read-decide-rewrite (`try_acquire`, `heartbeat`, `release`, `force_release`).
    Exclusive,
}

/// Locks `file` and hands it back locked; the lock is released when the file is closed.
///
/// The fast path is one non-blocking `try_lock` on the calling thread. Only if another
/// process (or another open of the file in this process) is inside its critical section
/// does it wait, with a blocking `flock` on Tokio's blocking thread pool: the kernel wakes
/// that thread the instant the lock is free, and the runtime thread is never blocked.
///
/// Cancel-safe: if this future is dropped while waiting, the blocking thread still gets the
/// lock, but nobody receives its result, so Tokio drops it there and closing the file
/// releases the lock at once. The same happens after `busy_timeout`, which is reported as
/// [`LockError::Unavailable`].
pub(crate) async fn lock(
    file: File,
    kind: LockKind,
    path: &Path,
    busy_timeout: Duration,
) -> Result<File, LockError> {
    let attempt = match kind {
        LockKind::Shared => fs4::FileExt::try_lock_shared(&file),
        LockKind::Exclusive => fs4::FileExt::try_lock(&file),
    };
    match attempt {
        Ok(()) => return Ok(file),
        Err(fs4::TryLockError::WouldBlock) => {}
        Err(fs4::TryLockError::Error(err)) => return Err(io_error("lock", path, err)),
    }
    let waiter = tokio::task::spawn_blocking(move || blocking_lock(&file, kind).map(|()| file));
    match tokio::time::timeout(busy_timeout, waiter).await {
        Ok(Ok(Ok(file))) => Ok(file),
        Ok(Ok(Err(err))) => Err(io_error("lock", path, err)),
        Ok(Err(join)) => Err(LockError::backend(
            BACKEND,
            format!(
                "the thread waiting to lock {} failed: {join}",
                path.display()
            ),
        )),
        Err(_elapsed) => Err(LockError::unavailable(
            BACKEND,
            Busy {
                path: path.to_owned(),
                waited: busy_timeout,
            },
        )),
    }
}

/// Waits for the lock, retrying if a signal interrupts the wait.
fn blocking_lock(file: &File, kind: LockKind) -> io::Result<()> {
    loop {
        let result = match kind {
            LockKind::Shared => fs4::FileExt::lock_shared(file),
            LockKind::Exclusive => fs4::FileExt::lock(file),
        };
        match result {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A lease file stayed locked by someone else for longer than `busy_timeout`.
#[derive(Debug)]
struct Busy {
    path: PathBuf,
    waited: Duration,
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} stayed locked by another process for over {:?}, although lock operations \
             hold it for microseconds; a process may be stopped or stuck on a hung disk inside \
             one (find it with `fuser {}`), or raise the busy timeout if the disk is just slow",
            self.path.display(),
            self.waited,
            self.path.display()
        )
    }
}

impl std::error::Error for Busy {}
