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
//! A head that a release woke but that found the lease taken again before its attempt (by the
//! process that released it and asked again at once, or by one that just arrived) was
//! passed over: it says so by giving the turn file a length of one byte until it holds the
//! lease or leaves. A process about to wait for the lock that sees this lets the head go
//! first (see [`ReleaseLog::give_way`](super::ReleaseLog::give_way)), so processes looping on
//! one name take it in turns instead of the releaser taking it again each time; a head that
//! was not passed over costs the others nothing (Go's `sync.Mutex` switches to hand-offs the
//! same way once a waiter has been passed over).
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

use super::private_file;

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
    /// This head said it was passed over (the turn file's length is one).
    passed_over: bool,
}

impl WaitTurn {
    /// Opens the turn file at `path`, creating it (mode 0600) if it does not exist.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let lock = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let created = private_file::options()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)?;
                drop(created);
                File::open(path)?
            }
            Err(error) => return Err(error),
        };
        Ok(Self {
            lock,
            beacon: None,
            path: path.to_owned(),
            passed_over: false,
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
        if private_file::try_lock(&self.lock).is_err() {
            return false;
        }
        match std::fs::OpenOptions::new().write(true).open(&self.path) {
            Ok(beacon) => {
                // A head that left passed over without saying it no longer is (its process
                // was killed): this one was not.
                if self.lock.metadata().is_ok_and(|meta| meta.len() > 0) {
                    let _ = beacon.set_len(0);
                }
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

    /// Takes the beacon away, for tests that close it as a killed process's exit would
    /// (without clearing the turn file).
    #[cfg(test)]
    pub(crate) fn beacon_for_test(&mut self) -> Option<File> {
        self.beacon.take()
    }

    /// Says that this head was passed over: a release woke it, but the lease was taken
    /// before its attempt. Processes about to wait then let it go first until it leaves.
    pub(crate) fn passed_over(&mut self) {
        if let Some(beacon) = &self.beacon
            && !self.passed_over
        {
            self.passed_over = beacon.set_len(1).is_ok();
        }
    }
}

/// Whether the head of the waiters whose turn file is `path` was passed over (see
/// [`WaitTurn::passed_over`]): one `stat`.
pub(crate) fn head_passed_over(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.len() > 0)
}

impl Drop for WaitTurn {
    /// Unlocks before closing the beacon, so that a waiter woken by the close finds the turn
    /// free (and no longer passed over).
    fn drop(&mut self) {
        if let Some(beacon) = self.beacon.take() {
            if self.passed_over {
                let _ = beacon.set_len(0);
            }
            let _ = self.lock.unlock();
            drop(beacon);
        }
    }
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

    #[test]
    fn a_passed_over_head_says_so_until_it_leaves() {
        let path = temp_path("passed");
        let mut a = WaitTurn::open(&path).unwrap();
        let mut b = WaitTurn::open(&path).unwrap();
        b.passed_over();
        assert!(!head_passed_over(&path), "only the head can say so");
        assert!(a.lead());
        assert!(!head_passed_over(&path));
        a.passed_over();
        assert!(head_passed_over(&path));
        drop(a);
        assert!(!head_passed_over(&path), "cleared as it leaves");
        drop(b);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_new_head_clears_what_a_killed_one_left() {
        let path = temp_path("killed");
        let mut a = WaitTurn::open(&path).unwrap();
        assert!(a.lead());
        a.passed_over();
        // A killed process's descriptors close without its Drop having run.
        drop(a.beacon.take());
        drop(a);
        assert!(head_passed_over(&path));
        let mut b = WaitTurn::open(&path).unwrap();
        assert!(b.lead());
        assert!(!head_passed_over(&path));
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
