//! Looking at a lease file without locking it, for a waiter (see
//! [`ReleaseLog::wait_or_poll`](lock_core::backend_kit::ReleaseLog::wait_or_poll)).
//!
//! Where inotify is available the waiter sleeps in the kernel: it watches the lease file
//! (every operation that may change hands rewrites it), the live holders' hold files (closed
//! when a holder's process exits) and the earliest live expiry. A change of a watched file
//! sends it straight to its next attempt (a heartbeat, which rewrites the lease file too,
//! costs the head of the waiting processes one attempt that finds the lease held); the
//! expiry makes it look again. Elsewhere it looks every 1-2 ms.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lock_core::OwnerToken;
use lock_core::backend_kit::clock::HostClock;
use lock_core::backend_kit::hold;
use lock_core::backend_kit::{Closely, LeaseProbe, Seen};

use crate::lease_file::MAX_LEN;
use crate::lock_dir::create_empty;
use crate::record::{State, decode};
use lock_core::backend_kit::clock::ClockReading as Now;

/// A probe reads no more than a lease file may hold (and one byte to tell it is too long).
const PEEK_LEN: u64 = MAX_LEN + 1;

/// A probe of one lease file, opened on first use and kept open between looks.
#[derive(Debug)]
pub(crate) struct PeekFile {
    path: PathBuf,
    /// The lock directory's hold directory, where the holders' hold files are.
    holds: PathBuf,
    file: Option<File>,
    clock: Arc<dyn HostClock>,
}

/// What one read of the lease file found.
enum Looked {
    /// Nothing to read: no file, or an empty one (never written).
    Fresh,
    /// A record, as of `now`.
    State(State, Now),
    /// It could not be read or decoded (a write half done, a damaged file).
    Unreadable,
}

impl PeekFile {
    pub(crate) fn new(path: PathBuf, holds: PathBuf, clock: Arc<dyn HostClock>) -> Self {
        Self {
            path,
            holds,
            file: None,
            clock,
        }
    }

    /// Reads the file without its lock (a few microseconds, on the calling thread).
    fn read(&mut self) -> Looked {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(opened) => self.file = Some(opened),
                // Never written: nobody holds it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Looked::Fresh,
                Err(_) => return Looked::Unreadable,
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Looked::Unreadable;
        };
        let mut bytes = Vec::with_capacity(512);
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.take(PEEK_LEN).read_to_end(&mut bytes));
        if read.is_err() {
            return Looked::Unreadable;
        }
        let now = Now::read(&*self.clock);
        match decode(&bytes, &now) {
            Ok(None) => Looked::Fresh,
            Ok(Some(decoded)) => Looked::State(decoded.state, now),
            Err(_) => Looked::Unreadable,
        }
    }
}

impl LeaseProbe for PeekFile {
    type Holder = (OwnerToken, u64);

    fn look(&mut self) -> impl Future<Output = Seen<Self::Holder>> + Send {
        let seen = match self.read() {
            Looked::Fresh => Seen::Free,
            Looked::State(state, now) => seen(&state, &now),
            Looked::Unreadable => Seen::Unknown,
        };
        std::future::ready(seen)
    }

    /// The lease file. If it does not exist yet it is created empty (a lock that was never
    /// written, as the first acquire of the name would create it), so that a waiter can
    /// watch it; if even that fails (the directory is gone or read-only), none, and the
    /// waiter polls.
    fn watched_files(&mut self) -> Vec<PathBuf> {
        match create_empty(&self.path) {
            Ok(()) => vec![self.path.clone()],
            Err(_) => Vec::new(),
        }
    }

    /// Every event wakes the waiter straight into its next attempt, without reading the file
    /// first. Heartbeats rewrite the lease file too, so a heartbeat costs the head of the
    /// waiters one attempt that finds the lease held (one every `ttl / 3` per live permit);
    /// in exchange a release reaches the waiter's attempt without a read and a decode of
    /// the file in between, which were about a quarter of the instructions on the path of a
    /// hand-off (callgrind: ~13,000 of ~55,000).
    fn events_are_changes(&self) -> bool {
        true
    }

    /// `<lease file name>.turn` in the hold directory (which the first acquisition in the
    /// directory made; until then, every waiter watches).
    fn turn_file(&mut self) -> Option<PathBuf> {
        turn_file(&self.path, &self.holds)
    }

    /// As [`look`](Self::look), with the live holders' hold files, whether one of their
    /// processes is gone (probed as a contender would; the probe's lock on a dead hold is
    /// dropped at once, for the contender that takes the lease over), and when the
    /// earliest live permit expires.
    fn look_closely(&mut self) -> impl Future<Output = Closely<Self::Holder>> + Send {
        let closely = match self.read() {
            Looked::Fresh => nothing(Seen::Free),
            Looked::Unreadable => nothing(Seen::Unknown),
            Looked::State(state, now) => {
                let seen = seen(&state, &now);
                let held = matches!(seen, Seen::Held(_));
                let mut holds = Vec::new();
                let mut holder_gone = false;
                let mut expires_in: Option<Duration> = None;
                for live in state.live(&now) {
                    // Rounded up: at the expiry's millisecond the lease is over.
                    let left = Duration::from_millis(live.expires_in_ms(&now).saturating_add(1));
                    expires_in = Some(expires_in.map_or(left, |soonest| soonest.min(left)));
                    let Some(stamp) = live.hold.as_deref() else {
                        continue;
                    };
                    holds.extend(hold::stamp_path(&self.holds, stamp));
                    // Only a full lease needs a takeover; a free one ends the wait anyway.
                    if held && !holder_gone {
                        let probed = hold::probe(&self.holds, stamp, live.token, live.host());
                        holder_gone = matches!(probed, hold::Holder::Gone(_));
                    }
                }
                Closely {
                    seen,
                    holds,
                    holder_gone,
                    expires_in,
                }
            }
        };
        std::future::ready(closely)
    }
}

/// A look that found no holders to say more about.
fn nothing(seen: Seen<(OwnerToken, u64)>) -> Closely<(OwnerToken, u64)> {
    Closely {
        seen,
        holds: Vec::new(),
        holder_gone: false,
        expires_in: None,
    }
}

/// What `state` says at `now`: free while fewer permits are live than its limit (for a
/// lock: none), else held by its latest permit (a token and fence that change whenever a
/// permit changes hands). A write half done by a holder reads as [`Seen::Unknown`] (see
/// [`PeekFile::read`]), and the next look sees it whole.
fn seen(state: &State, now: &Now) -> Seen<(OwnerToken, u64)> {
    let live = state.live(now).count();
    match state.live(now).last() {
        Some(latest) if live >= usize::try_from(state.limit).unwrap_or(usize::MAX) => {
            Seen::Held((latest.token, latest.fence))
        }
        _ => Seen::Free,
    }
}

/// The file the processes waiting for the lease in `lease_file` take turns on:
/// `<lease file name>.turn` in the hold directory `holds`.
pub(crate) fn turn_file(lease_file: &Path, holds: &Path) -> Option<PathBuf> {
    let mut turn = lease_file.file_name()?.to_owned();
    turn.push(".turn");
    Some(holds.join(turn))
}
