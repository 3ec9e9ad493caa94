//! [`WaitTurn`]: which of the processes waiting for one name on a single-host store watches
//! for its release, so that a release wakes one process, not all of them.
//!
//! Every waiting process opens the name's turn file (read-only: its comings and goings wake
//! nobody) and tries an exclusive `flock` on it without blocking. The one that gets it, the
//! head, watches the lease as before and is the only one woken by a release; the others
//! queue for the `flock` in the kernel (see [`turn_queue`](super::turn_queue)), and when the
//! head lets go of it (also when its process dies) the one that has waited longest becomes
//! the next head. Leaving, the head drops the `flock` and then closes a second descriptor it
//! opened for writing, the beacon: the close (also the one the kernel makes when the head's
//! process exits) tells processes that let the head go first (see below) that it left. The
//! head keeps its turn through its next acquire attempt (see
//! [`ReleaseLog::attempted`](super::ReleaseLog::attempted)), so the others wake only once the
//! lease has a new holder and find it held.
//!
//! While it leads, the head keeps its process id in the turn file (empty otherwise), so the
//! file's modification time says since when a head has been waiting. A process about to
//! wait for the lock that finds a head waiting for longer than [`HAND_OFF_AFTER`] lets it go
//! first (see [`ReleaseLog::give_way`](super::ReleaseLog::give_way)): processes looping on
//! one name then take it in turns instead of the releaser taking it back each time, while a
//! releaser may still take it back within that time, which keeps hand-offs (and their cost)
//! rare. Go's `sync.Mutex` switches to hand-offs the same way once a waiter has waited 1 ms.
//!
//! Turns only decide who is woken, never who holds a lease: two heads at once (a turn file
//! deleted and made again) cost an extra attempt, nothing more. A head that stops acting (a
//! stopped process) is worked around: every 2.5-5 s ([`TURN_CHECK`]) the others check whether
//! the lease changed (a `stat` of the watched files, or its expiry passed) and if so look at
//! it, and try for it when it is free or its holder is gone.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::private_file;
use super::process_state::{self, ProcessState};

/// How often a waiter that is not the head checks on the lease itself (jittered to 2.5-5 s), in
/// case the head stopped acting.
pub const TURN_CHECK: Duration = Duration::from_secs(5);

/// How long the head of the waiting processes may wait before the others let it go first
/// (see [`ReleaseLog::give_way`](super::ReleaseLog::give_way)): until then a process that
/// released may take the lock back at once.
pub const HAND_OFF_AFTER: Duration = Duration::from_millis(2);

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
        self.raise_beacon()
    }

    /// Leads with `locked`: the turn file, locked by an open file description of this
    /// process (its [queue](super::turn_queue)'s). Whether this process is now the head.
    pub(crate) fn adopt(&mut self, locked: File) -> bool {
        if self.beacon.is_some() {
            return true;
        }
        self.lock = locked;
        self.raise_beacon()
    }

    /// Opens the beacon of a head that holds the turn file's lock, and writes who it is.
    fn raise_beacon(&mut self) -> bool {
        match std::fs::OpenOptions::new().write(true).open(&self.path) {
            Ok(beacon) => {
                // Since when this head waits (the modification time), and who it is. It
                // replaces whatever a killed head left.
                let me = format!("{}\n", std::process::id());
                let _ = std::io::Write::write_all(&mut &beacon, me.as_bytes())
                    .and_then(|()| beacon.set_len(me.len() as u64));
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
}

/// How long the head of the waiters whose turn file is `path` has been waiting, if there is
/// one: one `stat` (the head writes the file as it starts to lead, and empties it as it
/// leaves). The time is the file's modification time, on the wall clock, at the kernel's
/// timestamp granularity (1-4 ms); a step of the wall clock only makes processes give way
/// sooner or later.
pub(crate) fn head_waiting(path: &Path) -> Option<Duration> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() == 0 {
        return None;
    }
    let since = meta.modified().ok()?;
    Some(
        std::time::SystemTime::now()
            .duration_since(since)
            .unwrap_or_default(),
    )
}

/// Whether the head of the waiters whose turn file is `path` is a process that cannot act
/// now: stopped (`SIGSTOP`, a debugger), exiting, or one this process cannot see (gone, or in
/// another PID namespace). Reads the process id it wrote and its `/proc/<pid>/stat`.
pub(crate) fn head_cannot_act(path: &Path) -> bool {
    process_state::of_pid_in(path) != ProcessState::Acting
}

impl Drop for WaitTurn {
    /// Unlocks before closing the beacon, so that a waiter woken by the close finds the turn
    /// free (and empty: no head waiting).
    fn drop(&mut self) {
        if let Some(beacon) = self.beacon.take() {
            let _ = beacon.set_len(0);
            let _ = self.lock.unlock();
            drop(beacon);
        }
    }
}

/// A turn to pass on (drop) once, by whichever gets to it first: the acquiring caller's
/// runtime, or the [`backstop`] thread.
#[derive(Clone, Debug)]
pub(crate) struct PassOn(Arc<Mutex<Option<WaitTurn>>>);

impl PassOn {
    pub(crate) fn new(turn: WaitTurn) -> Self {
        Self(Arc::new(Mutex::new(Some(turn))))
    }

    /// Passes the turn on, unless that was done already.
    pub(crate) fn now(&self) {
        let turn = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(turn);
    }
}

/// How long after an acquisition the backstop thread passes the head's turn on, if its
/// runtime has not (see [`backstop`]).
pub(crate) const BACKSTOP: Duration = Duration::from_millis(10);

/// How long the backstop thread keeps checking every [`BACKSTOP`] after its last turn,
/// rather than sleeping until woken: so that hand-offs in a busy period do not wake it at
/// the moment the new holder and the woken waiter need the CPU.
const BACKSTOP_LINGER: Duration = Duration::from_secs(1);

/// The backstop thread's queue: turns with the time to pass them on (in that order), and
/// whether the thread sleeps until woken.
#[derive(Default)]
struct Pending {
    due: VecDeque<(Instant, PassOn)>,
    asleep: bool,
}

/// Passes `turn` on [`BACKSTOP`] from now unless it was by then, on a thread of its own
/// (one per process, started on first use), for a process whose runtime's thread is
/// blocked. The thread sleeps until woken while it has had nothing to do for
/// [`BACKSTOP_LINGER`], and wakes every [`BACKSTOP`] otherwise.
pub(crate) fn backstop(turn: PassOn) {
    static BACKSTOP_THREAD: OnceLock<Option<(Arc<Mutex<Pending>>, std::thread::Thread)>> =
        OnceLock::new();
    let started = BACKSTOP_THREAD.get_or_init(|| {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let queue = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("lock-turn-backstop".into())
            .spawn(move || pass_on_when_due(&queue))
            .ok()
            .map(|handle| (pending, handle.thread().clone()))
    });
    let Some((pending, thread)) = started else {
        // No thread: pass it on now rather than risk keeping it.
        turn.now();
        return;
    };
    let wake = {
        let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.due.push_back((Instant::now() + BACKSTOP, turn));
        std::mem::take(&mut pending.asleep)
    };
    if wake {
        thread.unpark();
    }
}

/// The backstop thread: passes each turn on once it is due.
fn pass_on_when_due(pending: &Mutex<Pending>) {
    let mut last_turn = Instant::now();
    loop {
        let now = Instant::now();
        let (due, sleep) = {
            let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
            let mut due = Vec::new();
            while pending.due.front().is_some_and(|(at, _)| *at <= now) {
                due.extend(pending.due.pop_front().map(|(_, turn)| turn));
            }
            let sleep = match pending.due.front() {
                Some((at, _)) => Some(at.saturating_duration_since(now)),
                None if now.saturating_duration_since(last_turn) < BACKSTOP_LINGER => {
                    Some(BACKSTOP)
                }
                None => {
                    pending.asleep = true;
                    None
                }
            };
            (due, sleep)
        };
        if !due.is_empty() {
            last_turn = now;
        }
        for turn in due {
            turn.now();
        }
        match sleep {
            Some(sleep) => std::thread::park_timeout(sleep),
            None => std::thread::park(),
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
    fn the_head_says_since_when_it_waits_until_it_leaves() {
        let path = temp_path("waiting");
        let mut a = WaitTurn::open(&path).unwrap();
        let mut b = WaitTurn::open(&path).unwrap();
        assert_eq!(head_waiting(&path), None, "no head yet");
        assert!(a.lead());
        let waiting = head_waiting(&path).expect("a leads");
        assert!(waiting < Duration::from_secs(10), "{waiting:?}");
        assert!(!head_cannot_act(&path), "this process runs");
        assert!(!b.lead());
        drop(a);
        assert_eq!(head_waiting(&path), None, "emptied as it leaves");
        assert!(b.lead());
        assert!(head_waiting(&path).is_some());
        drop(b);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_killed_head_leaves_a_waiting_mark_that_the_next_replaces() {
        let path = temp_path("killed");
        let mut a = WaitTurn::open(&path).unwrap();
        assert!(a.lead());
        // A killed process's descriptors close without its Drop having run.
        drop(a.beacon_for_test());
        drop(a);
        assert!(head_waiting(&path).is_some());
        std::fs::write(&path, "4194305\n").unwrap(); // above any pid_max
        assert!(head_cannot_act(&path), "no such process");
        let mut b = WaitTurn::open(&path).unwrap();
        assert!(b.lead());
        assert!(!head_cannot_act(&path), "replaced by this process");
        drop(b);
        assert_eq!(head_waiting(&path), None);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_backstop_passes_a_turn_on_that_nobody_else_did() {
        let path = temp_path("backstop");
        let mut head = WaitTurn::open(&path).unwrap();
        assert!(head.lead());
        let start = Instant::now();
        backstop(PassOn::new(head));
        let mut next = WaitTurn::open(&path).unwrap();
        while !next.lead() {
            assert!(start.elapsed() < Duration::from_secs(10), "never passed on");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(start.elapsed() >= BACKSTOP);
        drop(next);
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
