//! [`WaitTurn`]: which of the processes waiting for one name on a single-host store watches
//! for its release, so that a release wakes one process, not all of them.
//!
//! Every waiting process opens the name's turn file (read-only: its comings and goings wake
//! nobody) and tries an exclusive `flock` on it without blocking. The one that gets it, the
//! head, watches the lease as before and is the only one woken by a release; the others
//! sleep on the turn file until the head leaves. Leaving, the head drops the `flock` and then
//! closes a second descriptor it opened for writing, the beacon: the close (also the one the
//! kernel makes when the head's process exits) wakes the others, one of which becomes the
//! next head. The head keeps its turn through its next acquire attempt (see
//! [`ReleaseLog::attempted`](super::ReleaseLog::attempted)), so the others wake only once the
//! lease has a new holder and find it held.
//!
//! Turns only decide who is woken, never who holds a lease: two heads at once (a turn file
//! deleted and made again) cost an extra attempt, nothing more. A head that stops acting (a
//! stopped process) is worked around: every 2.5-5 s ([`TURN_CHECK`]) the others check whether
//! the lease changed (a `stat` of the watched files, or its expiry passed) and if so look at
//! it, and try for it when it is free or its holder is gone.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a waiter that is not the head checks on the lease itself (jittered to 2.5-5 s), in
/// case the head stopped acting.
pub const TURN_CHECK: Duration = Duration::from_secs(5);

/// How long a head that returned to try for the lease keeps its turn if its process makes no
/// attempt (`Locker` always tries after a wait; a caller dropped during its attempt does
/// not finish it): the others then move up.
pub(crate) const TURN_LINGER: Duration = Duration::from_millis(500);

/// One process's place among the waiters for a name.
#[derive(Debug)]
pub(crate) struct WaitTurn {
    /// The turn file, open read-only; the head holds its `flock`.
    lock: File,
    /// Open for writing while this process is the head; closed when it leaves, which wakes
    /// the others.
    beacon: Option<File>,
    path: PathBuf,
}

impl WaitTurn {
    /// Opens the turn file at `path`, creating it (mode 0600) if it does not exist.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let lock = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                create(path)?;
                File::open(path)?
            }
            Err(error) => return Err(error),
        };
        Ok(Self {
            lock,
            beacon: None,
            path: path.to_owned(),
        })
    }

    /// The turn file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this process is the head, trying to become it (without waiting) if not.
    pub(crate) fn lead(&mut self) -> bool {
        if self.beacon.is_some() {
            return true;
        }
        if try_lock(&self.lock).is_err() {
            return false;
        }
        match std::fs::OpenOptions::new().write(true).open(&self.path) {
            Ok(beacon) => {
                self.beacon = Some(beacon);
                true
            }
            Err(_) => {
                // Without a beacon the others would not hear this head leave: do not lead.
                let _ = self.lock.unlock();
                false
            }
        }
    }
}

impl Drop for WaitTurn {
    /// Unlocks before closing the beacon, so that a waiter woken by the close finds the turn
    /// free.
    fn drop(&mut self) {
        if let Some(beacon) = self.beacon.take() {
            let _ = self.lock.unlock();
            drop(beacon);
        }
    }
}

#[cfg(unix)]
fn create(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(drop)
}

#[cfg(not(unix))]
fn create(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
}

fn try_lock(file: &File) -> io::Result<()> {
    file.try_lock().map_err(|error| match error {
        std::fs::TryLockError::WouldBlock => io::ErrorKind::WouldBlock.into(),
        std::fs::TryLockError::Error(error) => error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "lock-core-turn-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ))
    }

    #[test]
    fn one_head_at_a_time_and_the_next_moves_up_when_it_leaves() {
        let path = temp_path("head");
        let mut a = WaitTurn::open(&path).unwrap();
        let mut b = WaitTurn::open(&path).unwrap();
        assert!(a.lead());
        assert!(a.lead(), "still the head");
        assert!(!b.lead(), "a leads");
        drop(a);
        assert!(b.lead(), "a left");
        drop(b);
        std::fs::remove_file(&path).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_turn_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let path = temp_path("mode");
        drop(WaitTurn::open(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_file(&path).unwrap();
    }
}
