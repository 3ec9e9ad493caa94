//! [`ReleaseLog`]: releases this process has seen, for backends that wake waiters.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::backoff::jitter;
use super::time::{deadline_in, monotonic_now};
use super::turn::{self, HAND_OFF_AFTER, TURN_CHECK, TURN_LINGER, WaitTurn};
use super::turn_queue::TurnQueues;
use crate::name::LockName;

/// How long a release is remembered: far longer than any gap between a waiter's failed
/// attempt and its wait.
const REMEMBER: Duration = Duration::from_secs(10);
/// How long, at most, a process about to wait lets the head of the waiting processes go first
/// (see [`ReleaseLog::give_way`]): far longer than a hand-off takes (0.3-2 ms), short enough
/// that a head that stopped acting costs little.
pub const GIVE_WAY: Duration = Duration::from_millis(20);
/// Above this many remembered names, old entries are dropped.
const PRUNE_ABOVE: usize = 4096;

/// Releases seen by this process (its own, or notifications from the store), and the waiters
/// to wake for them.
///
/// A waiter that failed to acquire at `since` and then waits must not miss a release that
/// happened between its attempt and its wait: [`wait`](Self::wait) returns at once if the
/// name was released after `since`. Backends record releases with [`record`](Self::record)
/// and implement [`LockBackend::wait_for_change`](crate::LockBackend::wait_for_change)
/// with `wait`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use lock_core::LockName;
/// use lock_core::backend_kit::{ReleaseLog, time::monotonic_now};
///
/// let log = ReleaseLog::new();
/// let name = LockName::new("job").unwrap();
/// let since = monotonic_now();
/// log.record(&name); // released before the waiter got to wait
/// let start = monotonic_now();
/// log.wait(&name, since, Duration::from_secs(5)).await;
/// assert!(start.elapsed() < Duration::from_secs(1));
/// # }
/// ```
#[derive(Debug, Default)]
pub struct ReleaseLog {
    recent: Mutex<HashMap<String, Instant>>,
    notify: Notify,
    /// Names a waiter of this process is polling the store for (one poller per name).
    polled: Mutex<HashSet<String>>,
    /// The turns among waiting processes (see [`LeaseProbe::turn_file`]) that this process
    /// led when its wait returned, kept until its next attempt for the name, by name, with
    /// the number that tells one keeping from the next.
    kept: Arc<Mutex<HashMap<String, (u64, WaitTurn)>>>,
    /// How many turns are kept, so that an attempt when none is (an uncontended
    /// acquisition) takes no lock.
    kept_count: Arc<AtomicUsize>,
    keepings: AtomicU64,
    /// Names whose head of the waiting processes this process found not acting (a stopped
    /// process that keeps its turn): until this process can lead, it watches without a turn.
    stuck_heads: Mutex<HashSet<String>>,
    /// This process's places in the queues for turn files.
    turn_queues: TurnQueues,
}

impl ReleaseLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The log of the store identified by `store` (for example a canonical file path),
    /// shared by every backend value of this process that uses that store, so that a
    /// release through one wakes waiters on another. Kept while any holder of it lives.
    pub fn shared(store: &str) -> Arc<Self> {
        static LOGS: OnceLock<Mutex<HashMap<String, Weak<ReleaseLog>>>> = OnceLock::new();
        let mut logs = LOGS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = logs.get(store).and_then(Weak::upgrade) {
            return log;
        }
        logs.retain(|_, log| log.strong_count() > 0);
        let log = Arc::new(Self::new());
        logs.insert(store.to_owned(), Arc::downgrade(&log));
        log
    }

    /// Records that `name` was released just now and wakes its waiters.
    pub fn record(&self, name: &LockName) {
        self.record_str(name.as_str());
    }

    /// As [`record`](Self::record), for a name received as text (a store notification).
    pub fn record_str(&self, name: &str) {
        let now = monotonic_now();
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() >= PRUNE_ABOVE {
                recent.retain(|_, at| now.saturating_duration_since(*at) < REMEMBER);
            }
            recent.insert(name.to_owned(), now);
        }
        self.notify.notify_waiters();
    }

    /// Tells the log that this process just tried to acquire `name`. After a wait that
    /// returned because the lease may have changed hands, this process keeps its turn among
    /// the waiting processes (see [`LeaseProbe::turn_file`]) until it has tried: when it got
    /// the lease, the turn passes to the next waiting process, which then finds the lease
    /// held and sleeps; when it did not, it keeps the turn for its next wait. A backend
    /// whose probe names a turn file calls this after each acquire attempt.
    pub fn attempted(&self, name: &LockName, acquired: bool) {
        if !acquired || self.kept_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let left = kept.remove(name.as_str());
        self.kept_count.store(kept.len(), Ordering::Relaxed);
        drop(kept);
        if let Some((_, left)) = left {
            // Passed on once the caller has its lease: closing the beacon wakes every other
            // waiting process (all but one go back to sleep), which must not delay the
            // caller. The attempt runs in the caller's task (see `Locker`), so a task spawned
            // here runs once the caller yields, after it heard back; yielding once more
            // first keeps it behind the caller's next steps too (and behind the caller of an
            // attempt that runs in a task of its own). A caller that blocks its runtime's
            // thread right after acquiring (a long computation, a stall) never lets that
            // task run: then the backstop thread passes the turn on a little later, so that a
            // waiting process still watches the lease while it is held.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let left = turn::PassOn::new(left);
                    turn::backstop(left.clone());
                    drop(runtime.spawn(async move {
                        tokio::task::yield_now().await;
                        left.now();
                    }));
                }
                Err(_) => drop(left),
            }
        }
    }

    /// Lets the processes waiting for `name` go first once they have waited long enough:
    /// when the head of those processes (whose turn file is `turn_file`) has waited
    /// [`HAND_OFF_AFTER`] or longer, waits until it passes its turn on (it got the lease, or
    /// left), for at most [`GIVE_WAY`] or `max`. Returns at once otherwise (one `stat`). A
    /// backend calls this from [`LockBackend::give_way`](crate::LockBackend::give_way), which
    /// `Locker::lock` calls before its first attempt: processes looping on one name then take
    /// it in turns, while a process that released may still take it back at once when
    /// nobody has waited long (cheaper than a hand-off).
    ///
    /// A head that does not take its turn within [`GIVE_WAY`] and is stopped (or cannot be
    /// seen from this process) is not given way to again until this process leads; a head
    /// that is only slow (a busy machine) is.
    pub async fn give_way(&self, name: &LockName, turn_file: &Path, max: Duration) {
        self.give_way_for(name, turn_file, GIVE_WAY.min(max)).await;
    }

    /// As [`give_way`](Self::give_way), with `patience` for [`GIVE_WAY`].
    async fn give_way_for(&self, name: &LockName, turn_file: &Path, patience: Duration) {
        let due = turn::head_waiting(turn_file).is_some_and(|waited| waited >= HAND_OFF_AFTER);
        if !due || self.head_stuck(name) || self.keeps(name) {
            return;
        }
        let Ok(mut watch) = super::FileWatch::new() else {
            return;
        };
        // Looked at again once the watch is armed: a head that left before is seen here.
        if watch.closed_for_writing(turn_file).is_err() || turn::head_waiting(turn_file).is_none() {
            return;
        }
        if tokio::time::timeout(patience, watch.changed())
            .await
            .is_ok()
            || patience < GIVE_WAY
        {
            return;
        }
        // Leading clears what a killed head left behind; a head that is there but stopped is
        // not waited for again.
        if let Ok(mut turn) = WaitTurn::open(turn_file)
            && !turn.lead()
            && turn::head_cannot_act(turn_file)
        {
            self.set_head_stuck(name, true);
        }
    }

    /// Whether this process keeps its turn for `name` (it is the head).
    fn keeps(&self, name: &LockName) -> bool {
        self.kept_count.load(Ordering::Relaxed) > 0
            && self
                .kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(name.as_str())
    }

    /// Keeps `turn` until this process's next attempt for `name`, or [`TURN_LINGER`] if it
    /// makes none.
    fn keep(&self, name: &LockName, turn: WaitTurn) {
        let keeping = self.keepings.fetch_add(1, Ordering::Relaxed);
        let name = name.as_str().to_owned();
        let replaced = {
            let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let replaced = kept.insert(name.clone(), (keeping, turn));
            self.kept_count.store(kept.len(), Ordering::Relaxed);
            replaced
        };
        drop(replaced);
        let kept = Arc::clone(&self.kept);
        let kept_count = Arc::clone(&self.kept_count);
        tokio::spawn(async move {
            tokio::time::sleep(TURN_LINGER).await;
            let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.get(&name).is_some_and(|(k, _)| *k == keeping) {
                let left = kept.remove(&name);
                kept_count.store(kept.len(), Ordering::Relaxed);
                drop(kept);
                drop(left);
            }
        });
    }

    /// Whether this process found the head of the waiters for `name` not acting.
    fn head_stuck(&self, name: &LockName) -> bool {
        self.stuck_heads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name.as_str())
    }

    fn set_head_stuck(&self, name: &LockName, stuck: bool) {
        let mut stuck_heads = self
            .stuck_heads
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if stuck {
            stuck_heads.insert(name.as_str().to_owned());
        } else {
            stuck_heads.remove(name.as_str());
        }
    }

    /// The turn this process kept for `name`, if any.
    fn take_kept(&self, name: &LockName) -> Option<WaitTurn> {
        if self.kept_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = kept.remove(name.as_str());
        self.kept_count.store(kept.len(), Ordering::Relaxed);
        taken.map(|(_, turn)| turn)
    }

    /// Whether `name` was released at or after `since`.
    pub fn released_since(&self, name: &LockName, since: Instant) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name.as_str())
            .is_some_and(|at| *at >= since)
    }

    /// Waits until `name` is released after `since` (returning at once if it already was),
    /// or `max` passes.
    pub async fn wait(&self, name: &LockName, since: Instant, max: Duration) {
        let deadline = tokio::time::Instant::from_std(deadline_in(max));
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.released_since(name, since) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// As [`wait`](Self::wait), and also returns when `probe` shows the lease changed
    /// hands: for stores that other processes write without telling this one (a lock
    /// directory, a SQLite file).
    ///
    /// `probe` must be cheap and must not lock anything a holder needs (read the lease
    /// record without a lock, or in a read transaction). It is called at the start and then
    /// every [`POLL_INTERVAL`] (jittered); the wait ends once it sees the lease
    /// [`Free`](Seen::Free), or held by someone other than at the start. A lease free at the
    /// start ends it one interval later, never at once, so a caller that keeps losing the
    /// race for it cannot spin.
    ///
    /// However many tasks of this process wait for one name, one of them polls: when it
    /// sees a change it wakes the others as a release would. The others check every
    /// [`TAKEOVER_CHECK`] whether the poller left, and one of them takes over. Where the
    /// probe names a [turn file](LeaseProbe::turn_file), the same holds across processes:
    /// one waiting process at a time watches the lease, and a release wakes it alone.
    ///
    /// Where the probe names [files to watch](LeaseProbe::watched_files) and the platform
    /// has inotify, the waiter sleeps in the kernel instead of polling: it wakes when a
    /// watched file changes, when a live holder's [hold file](super::hold) is closed (its
    /// process exited), or when the earliest live permit expires, and then looks again;
    /// it costs no CPU while nothing happens. Otherwise it polls: one probe every 1 to 2 ms
    /// per name waited for, a few microseconds each for a local file.
    pub async fn wait_or_poll(
        &self,
        name: &LockName,
        since: Instant,
        max: Duration,
        mut probe: impl LeaseProbe,
    ) {
        let deadline = deadline_in(max);
        loop {
            let left = deadline.saturating_duration_since(monotonic_now());
            if let Some(_polling) = self.poll_turn(name) {
                let kept = self.take_kept(name);
                let was_stuck = self.head_stuck(name);
                let mut stuck = was_stuck;
                tokio::select! {
                    () = self.wait(name, since, left) => {}
                    (changed, turn) = until_changed(&mut probe, left, kept, &self.turn_queues, &mut stuck) => {
                        if changed {
                            self.record(name);
                            if let Some(turn) = turn {
                                self.keep(name, turn);
                            }
                        }
                    }
                }
                if stuck != was_stuck {
                    self.set_head_stuck(name, stuck);
                }
                return;
            }
            self.wait(name, since, left.min(TAKEOVER_CHECK)).await;
            if left <= TAKEOVER_CHECK || self.released_since(name, since) {
                return;
            }
        }
    }

    /// The right to poll the store for `name`, unless another waiter has it.
    fn poll_turn(&self, name: &LockName) -> Option<PollTurn<'_>> {
        let mut polled = self.polled.lock().unwrap_or_else(PoisonError::into_inner);
        polled.insert(name.as_str().to_owned()).then(|| PollTurn {
            log: self,
            name: name.as_str().to_owned(),
        })
    }
}

/// How often a waiter that is not polling checks whether the poller of its name has left.
pub const TAKEOVER_CHECK: Duration = Duration::from_millis(10);

/// A waiter's turn to poll for a name; ends when dropped (the wait ended or was cancelled).
struct PollTurn<'a> {
    log: &'a ReleaseLog,
    name: String,
}

impl Drop for PollTurn<'_> {
    fn drop(&mut self) {
        self.log
            .polled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
    }
}

/// A cheap look at one lease in a store, for [`ReleaseLog::wait_or_poll`].
pub trait LeaseProbe: Send {
    /// What tells two holders apart (say, the owner token and the fence).
    type Holder: PartialEq + Send;

    /// The lease as the store has it now.
    fn look(&mut self) -> impl Future<Output = Seen<Self::Holder>> + Send;

    /// Files whose change may mean the lease changed hands (the lease file, a wake file the
    /// store's releases touch), for a waiter that sleeps in the kernel. They must exist.
    /// The default, none, makes waiters poll.
    fn watched_files(&mut self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// The file the processes waiting for this name take turns on, so that one of them at a
    /// time watches the lease and a release wakes one process, not all (see
    /// [`attempted`](ReleaseLog::attempted)). Its directory must exist. The default, none,
    /// has every waiting process watch.
    fn turn_file(&mut self) -> Option<PathBuf> {
        None
    }

    /// Whether a waiter woken by an event on the watched files goes straight to its next
    /// attempt instead of looking first: true where every event means the lease may have
    /// changed hands (a wake file only releases write, hold files closed when a holder
    /// exits), or where an attempt that finds the lease held costs little more than a look
    /// and the events that do not change hands are rare (a lease file that heartbeats also
    /// rewrite, every `ttl / 3`); false (the default) otherwise.
    fn events_are_changes(&self) -> bool {
        false
    }

    /// As [`look`](Self::look), with what a waiter sleeping in the kernel needs: the live
    /// holders' hold files, whether one of those holders is gone, and when the earliest
    /// live permit expires. The default has none of them.
    fn look_closely(&mut self) -> impl Future<Output = Closely<Self::Holder>> + Send {
        async {
            Closely {
                seen: self.look().await,
                holds: Vec::new(),
                holder_gone: false,
                expires_in: None,
            }
        }
    }
}

/// What [`LeaseProbe::look_closely`] saw.
#[derive(Clone, Debug)]
pub struct Closely<T> {
    /// The lease.
    pub seen: Seen<T>,
    /// The hold files of the live holders (see [`hold`](super::hold)), to watch for their
    /// processes' exit.
    pub holds: Vec<PathBuf>,
    /// A live holder's process is gone: an attempt now takes its lease over.
    pub holder_gone: bool,
    /// When the earliest live permit expires unless renewed.
    pub expires_in: Option<Duration>,
}

/// What a backend's probe saw of a lease, for [`ReleaseLog::wait_or_poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen<T> {
    /// Nobody holds it: no record, a released one, or an expired one.
    Free,
    /// A live lease, told apart from others by `T` (say, its owner token and fence).
    Held(T),
    /// The probe could not tell (the store was busy, or a write was half done).
    Unknown,
}

/// How often [`ReleaseLog::wait_or_poll`] probes the store: every 1 to 2 ms (jittered).
pub const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// Sleeps in the kernel until the lease is seen changed (`true`) or `max` has passed
/// (`false`); polls where the probe has no files to watch or inotify is not available.
///
/// Where the probe names a turn file, it first waits for its turn among the waiting
/// processes (starting from `kept`, the turn this process kept from its last wait). When it
/// returns `true` as the head, it returns the turn too, to keep until its attempt.
/// `head_stuck` says (and is updated to say) whether this process found the head not acting:
/// then, unless it can lead, it watches without waiting for its turn, as every process did
/// before turns, until the head leaves.
async fn until_changed(
    probe: &mut impl LeaseProbe,
    max: Duration,
    kept: Option<WaitTurn>,
    queues: &TurnQueues,
    head_stuck: &mut bool,
) -> (bool, Option<WaitTurn>) {
    let files = probe.watched_files();
    if files.is_empty() {
        return (poll_until_changed(probe, max).await, None);
    }
    let deadline = deadline_in(max);
    let mut turn = kept.or_else(|| {
        probe
            .turn_file()
            .and_then(|path| WaitTurn::open(&path).ok())
    });
    if let Some(turn) = turn.as_mut() {
        if turn.lead() {
            *head_stuck = false;
        } else if !*head_stuck {
            match wait_for_turn(probe, turn, queues, &files, deadline).await {
                TurnWait::Lead => {}
                TurnWait::Look => {
                    *head_stuck = true;
                    return (true, None);
                }
                TurnWait::Deadline => return (false, None),
            }
        }
    }
    let changed = watch_until_changed(probe, &files, deadline).await;
    (changed, turn.filter(|_| changed))
}

/// How [`wait_for_turn`] ended.
enum TurnWait {
    /// This process leads (or cannot tell, and watches as if it did).
    Lead,
    /// The head has not acted and the lease is free or its holder gone: try for it.
    Look,
    /// Nothing happened before the deadline.
    Deadline,
}

/// When a waiter that is not the head first looks at the lease even though none of the
/// watched files changed: to learn when it expires, in case both its holder (dead or
/// stopped, so the files do not change) and the head (stopped) fail to act.
const FIRST_TURN_LOOK: Duration = Duration::from_secs(15);

/// Waits until this process is the head of the waiters (see [`WaitTurn`]): its place in the
/// kernel's queue for the turn file's lock (see [`TurnQueues`]) comes when the heads before
/// it have left. Every [`TURN_CHECK`] (jittered) it checks on the head: it looks at the lease
/// itself (as the head would) only when one of the watched `files` changed, or
/// [`FIRST_TURN_LOOK`] into the wait, or once the earliest expiry it saw has passed (a `stat`
/// per file otherwise), so that waiting stays free while nothing happens.
async fn wait_for_turn(
    probe: &mut impl LeaseProbe,
    turn: &mut WaitTurn,
    queues: &TurnQueues,
    files: &[PathBuf],
    deadline: Instant,
) -> TurnWait {
    if turn.lead() {
        return TurnWait::Lead;
    }
    let mut place = queues.join(turn.path());
    let mut stamps = file_stamps(files);
    let mut look_at = Some(monotonic_now() + FIRST_TURN_LOOK);
    loop {
        let check = (monotonic_now() + jitter(TURN_CHECK)).min(deadline);
        tokio::select! {
            locked = place.turn() => {
                // Without a queue (no thread, no file), this process watches as if it led.
                if let Some(locked) = locked {
                    turn.adopt(locked);
                }
                return TurnWait::Lead;
            }
            () = tokio::time::sleep_until(check.into()) => {
                if check >= deadline {
                    return TurnWait::Deadline;
                }
                let now = file_stamps(files);
                let due = look_at.is_some_and(|at| monotonic_now() >= at);
                if now == stamps && !due {
                    continue;
                }
                stamps = now;
                let closely = probe.look_closely().await;
                if closely.holder_gone || matches!(closely.seen, Seen::Free) {
                    return TurnWait::Look;
                }
                look_at = closely.expires_in.map(|left| monotonic_now() + left);
            }
        }
    }
}

/// What tells a file's change without reading it: its length and modification time.
fn file_stamps(files: &[PathBuf]) -> Vec<Option<(u64, std::time::SystemTime)>> {
    files
        .iter()
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            Some((meta.len(), meta.modified().ok()?))
        })
        .collect()
}

/// How long, at most, a waiter waits for an exiting process (see
/// [`ProcessState::Leaving`](super::process_state::ProcessState::Leaving)) to drop its
/// `flock` after the kernel reported the close of its file: an exit takes microseconds to a
/// few milliseconds; a process held up longer is then left to the waiter's other timers.
const EXIT_WAIT: Duration = Duration::from_millis(100);

/// A waiter's wait for a process that is exiting to drop its locks, bounded by
/// [`EXIT_WAIT`].
#[derive(Default)]
struct ExitingProcess {
    since: Option<Instant>,
}

impl ExitingProcess {
    /// Sleeps a moment (a tick of the runtime's timer, about a millisecond) and returns
    /// `true`, or returns `false` at once once [`EXIT_WAIT`] has passed since the first call.
    async fn wait_a_little(&mut self) -> bool {
        let since = *self.since.get_or_insert_with(monotonic_now);
        if monotonic_now().saturating_duration_since(since) >= EXIT_WAIT {
            return false;
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
        true
    }
}

/// Sleeps in the kernel on `files`, the live holders' hold files and the earliest expiry
/// until the lease is seen changed (`true`) or `deadline` passes (`false`); polls if the
/// files cannot be watched.
async fn watch_until_changed(
    probe: &mut impl LeaseProbe,
    files: &[PathBuf],
    deadline: Instant,
) -> bool {
    let Some(mut watch) = watch_all(files) else {
        return poll_until_changed(probe, deadline.saturating_duration_since(monotonic_now()))
            .await;
    };
    let max = deadline.saturating_duration_since(monotonic_now());
    let mut first: Option<Seen<_>> = None;
    let mut watched_holds: Vec<PathBuf> = Vec::new();
    let mut exiting = ExitingProcess::default();
    loop {
        let now = probe.look_closely().await;
        if now.holder_gone {
            return true;
        }
        match (&now.seen, &first) {
            (Seen::Free, None) => {
                // Free from the start: one interval later, so a caller that keeps losing
                // the race for it cannot spin.
                tokio::time::sleep(jitter(POLL_INTERVAL).min(max)).await;
                return true;
            }
            (Seen::Free, Some(_)) => return true,
            (Seen::Unknown, _) => {
                // The store was busy: look again shortly.
                let next = (monotonic_now() + UNKNOWN_RETRY).min(deadline);
                tokio::time::sleep_until(next.into()).await;
                if next >= deadline {
                    return false;
                }
                continue;
            }
            (Seen::Held(_), Some(seen)) if *seen != now.seen => return true,
            (Seen::Held(_), _) => {}
        }
        if first.is_none() {
            first = Some(now.seen);
        }
        // Watch the holders' hold files; when one was added, look again: its holder may have
        // exited between the look and the watch.
        let mut added = false;
        for hold in &now.holds {
            if !watched_holds.contains(hold) && watch.closed_for_writing(hold).is_ok() {
                watched_holds.push(hold.clone());
                added = true;
            }
        }
        if added {
            continue;
        }
        // A holder whose process is exiting has closed (or is closing) its hold file and is
        // about to drop its lock: look again once it has, rather than sleep through it.
        if now
            .holds
            .iter()
            .any(|hold| super::hold::holder_leaving(hold))
            && exiting.wait_a_little().await
        {
            continue;
        }
        let wake = now
            .expires_in
            .map_or(deadline, |left| monotonic_now() + left)
            .min(deadline);
        tokio::select! {
            changed = watch.changed() => {
                if changed.is_err() {
                    return poll_until_changed(probe, deadline.saturating_duration_since(monotonic_now())).await;
                }
                if probe.events_are_changes() {
                    return true;
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                // At the deadline: unchanged. At an expiry: look again (renewed or free).
                if wake >= deadline {
                    return false;
                }
            }
        }
    }
}

/// How soon a waiter sleeping in the kernel looks again after a look that could not tell.
const UNKNOWN_RETRY: Duration = Duration::from_millis(10);

/// A watch on every file of `files`, or `None` when one cannot be made.
fn watch_all(files: &[PathBuf]) -> Option<super::FileWatch> {
    let mut watch = super::FileWatch::new().ok()?;
    for file in files {
        watch.changes_of(file).ok()?;
    }
    Some(watch)
}

/// Polls until the lease is seen changed (`true`) or `max` has passed (`false`).
async fn poll_until_changed(probe: &mut impl LeaseProbe, max: Duration) -> bool {
    let deadline = deadline_in(max);
    let mut first = probe.look().await;
    loop {
        let next = monotonic_now() + jitter(POLL_INTERVAL);
        if next >= deadline {
            tokio::time::sleep_until(deadline.into()).await;
            return false;
        }
        tokio::time::sleep_until(next.into()).await;
        if first == Seen::Free {
            return true;
        }
        match probe.look().await {
            Seen::Free => return true,
            Seen::Unknown => {}
            seen if first == Seen::Unknown => first = seen,
            seen if seen != first => return true,
            Seen::Held(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_release_before_the_wait_is_not_missed() {
        let log = ReleaseLog::new();
        let name = LockName::new("a").unwrap();
        let since = monotonic_now();
        log.record(&name);
        let start = monotonic_now();
        log.wait(&name, since, Duration::from_secs(5)).await;
        assert_eq!(monotonic_now(), start, "returned at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_of_another_name_or_before_since_does_not_wake() {
        let log = std::sync::Arc::new(ReleaseLog::new());
        let (a, b) = (LockName::new("a").unwrap(), LockName::new("b").unwrap());
        log.record(&a);
        tokio::time::advance(Duration::from_millis(1)).await;
        let since = monotonic_now();
        let waiter = {
            let (log, a) = (log.clone(), a.clone());
            tokio::spawn(async move { log.wait(&a, since, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        log.record(&b);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !waiter.is_finished(),
            "b's release and a's old one do not count"
        );
        log.record(&a);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(waiter.is_finished(), "a's new release wakes it");
    }

    #[test]
    fn one_log_per_store_while_it_is_used() {
        let a = ReleaseLog::shared("/tmp/x.db");
        assert!(Arc::ptr_eq(&a, &ReleaseLog::shared("/tmp/x.db")));
        assert!(!Arc::ptr_eq(&a, &ReleaseLog::shared("/tmp/y.db")));
    }

    /// A probe that replays `seen`, then repeats its last entry; counts its calls.
    struct Replay<'a> {
        seen: Vec<Seen<u32>>,
        calls: &'a std::sync::atomic::AtomicUsize,
    }

    impl LeaseProbe for Replay<'_> {
        type Holder = u32;

        fn look(&mut self) -> impl Future<Output = Seen<u32>> + Send {
            let i = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = self.seen.get(i).or(self.seen.last()).cloned();
            std::future::ready(seen.unwrap_or(Seen::Unknown))
        }
    }

    async fn poll(seen: Vec<Seen<u32>>, max: Duration) -> (Duration, usize) {
        let log = ReleaseLog::new();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let start = monotonic_now();
        let name = LockName::new("a").unwrap();
        log.wait_or_poll(
            &name,
            start,
            max,
            Replay {
                seen,
                calls: &calls,
            },
        )
        .await;
        (monotonic_now() - start, calls.into_inner())
    }

    #[tokio::test(start_paused = true)]
    async fn polling_returns_when_the_holder_changes_or_the_lease_is_free() {
        let max = Duration::from_secs(5);
        let held = |t| Seen::Held(t);
        // Same holder twice, then another: the third probe, two intervals in.
        let (waited, calls) = poll(vec![held(1), held(1), held(2)], max).await;
        assert_eq!(calls, 3);
        assert!(
            waited >= POLL_INTERVAL && waited <= POLL_INTERVAL * 2,
            "{waited:?}"
        );
        let (_, calls) = poll(vec![held(1), held(1), Seen::Free], max).await;
        assert_eq!(calls, 3);
        // Unknown first: the first known holder becomes the baseline.
        let (_, calls) = poll(vec![Seen::Unknown, held(1), held(1), held(2)], max).await;
        assert_eq!(calls, 4);
        // Unknown in between changes nothing.
        let (_, calls) = poll(vec![held(1), Seen::Unknown, held(1), held(3)], max).await;
        assert_eq!(calls, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn polling_a_lease_free_from_the_start_returns_after_one_interval() {
        let (waited, calls) = poll(vec![Seen::Free], Duration::from_secs(5)).await;
        assert_eq!(calls, 1);
        assert!(
            waited >= POLL_INTERVAL / 2 && waited <= POLL_INTERVAL,
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn polling_an_unchanged_lease_waits_max() {
        let max = Duration::from_millis(300);
        let (waited, calls) = poll(vec![Seen::Held(1)], max).await;
        assert_eq!(waited, max);
        // One probe per 1-2 ms.
        assert!((150..=300).contains(&calls), "{calls} probes");
    }

    /// Counts looks; reports `Held(1)` until `changes_at` looks were made, then `Held(2)`.
    struct Shared {
        calls: Arc<std::sync::atomic::AtomicUsize>,
        changes_at: usize,
    }

    impl LeaseProbe for Shared {
        type Holder = u32;

        fn look(&mut self) -> impl Future<Output = Seen<u32>> + Send {
            let i = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Seen::Held(if i < self.changes_at { 1 } else { 2 }))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_waiters_for_one_name_share_one_poller_that_wakes_them_all() {
        let log = Arc::new(ReleaseLog::new());
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = monotonic_now();
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let (log, calls) = (Arc::clone(&log), Arc::clone(&calls));
                tokio::spawn(async move {
                    let probe = Shared {
                        calls,
                        changes_at: 200,
                    };
                    let name = LockName::new("a").unwrap();
                    log.wait_or_poll(&name, start, Duration::from_secs(30), probe)
                        .await;
                    monotonic_now() - start
                })
            })
            .collect();
        for waiter in waiters {
            let waited = waiter.await.unwrap();
            // The change is seen at the 200th look, 200 to 400 ms in: all wake then.
            assert!(waited >= POLL_INTERVAL * 100, "{waited:?}");
            assert!(waited <= POLL_INTERVAL * 200, "{waited:?}");
        }
        // One poller: 200 looks in all (plus at most a few when the turn passes), not 50x.
        let looks = calls.load(std::sync::atomic::Ordering::SeqCst);
        assert!((200..=205).contains(&looks), "{looks} looks");
        assert!(log.polled.lock().unwrap().is_empty(), "the turn ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_takes_over_polling_when_the_poller_leaves() {
        let log = Arc::new(ReleaseLog::new());
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let name = LockName::new("a").unwrap();
        let start = monotonic_now();
        let probe = |changes_at| Shared {
            calls: Arc::clone(&calls),
            changes_at,
        };
        // The first waiter polls for 50 ms and leaves; the second must take over.
        let short = {
            let (log, name, probe) = (Arc::clone(&log), name.clone(), probe(usize::MAX));
            tokio::spawn(async move {
                log.wait_or_poll(&name, start, Duration::from_millis(50), probe)
                    .await;
            })
        };
        tokio::task::yield_now().await;
        let looks_before = calls.load(std::sync::atomic::Ordering::SeqCst);
        let long = {
            let (log, name) = (Arc::clone(&log), name.clone());
            let probe = probe(looks_before + 60);
            tokio::spawn(async move {
                log.wait_or_poll(&name, start, Duration::from_secs(30), probe)
                    .await;
                monotonic_now() - start
            })
        };
        short.await.unwrap();
        let waited = long.await.unwrap();
        assert!(waited < Duration::from_millis(500), "took over: {waited:?}");
    }

    /// A lease that stays as `seen`, whose changes show in `file`, with waiting processes
    /// taking turns on `turn`.
    #[cfg(target_os = "linux")]
    struct Watched {
        file: PathBuf,
        turn: PathBuf,
        seen: Seen<u32>,
    }

    #[cfg(target_os = "linux")]
    impl LeaseProbe for Watched {
        type Holder = u32;

        fn look(&mut self) -> impl Future<Output = Seen<u32>> + Send {
            std::future::ready(self.seen.clone())
        }

        fn watched_files(&mut self) -> Vec<PathBuf> {
            vec![self.file.clone()]
        }

        fn turn_file(&mut self) -> Option<PathBuf> {
            Some(self.turn.clone())
        }

        fn events_are_changes(&self) -> bool {
            true
        }
    }

    #[cfg(target_os = "linux")]
    fn watched_dir() -> (PathBuf, Watched) {
        let dir = std::env::temp_dir().join(format!(
            "lock-core-turns-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("wake");
        std::fs::write(&file, b"").unwrap();
        let probe = Watched {
            file,
            turn: dir.join("turn"),
            seen: Seen::Held(1),
        };
        (dir, probe)
    }

    /// Several processes (one log each) wait for one name: a change of the watched file
    /// wakes one of them, the head. When the head acquires (or, failing that, after
    /// `TURN_LINGER`), the next one leads and the next change wakes it alone.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_change_wakes_one_waiting_process_and_the_turn_passes_on() {
        const PROCESSES: usize = 4;
        let (dir, probe) = watched_dir();
        let name = LockName::new("a").unwrap();
        let (woke_tx, mut woke) = tokio::sync::mpsc::unbounded_channel();
        let logs: Vec<Arc<ReleaseLog>> = (0..PROCESSES).map(|_| Arc::default()).collect();
        let start = monotonic_now();
        for (i, log) in logs.iter().enumerate() {
            let (log, name, woke_tx) = (Arc::clone(log), name.clone(), woke_tx.clone());
            let probe = Watched {
                file: probe.file.clone(),
                turn: probe.turn.clone(),
                seen: Seen::Held(1),
            };
            tokio::spawn(async move {
                log.wait_or_poll(&name, start, Duration::from_secs(60), probe)
                    .await;
                woke_tx.send(i).unwrap();
            });
        }
        let mut order = Vec::new();
        for round in 0..PROCESSES {
            // Changes until one wakes (a waiter may not be watching yet at the first).
            let head = loop {
                std::fs::write(&probe.file, b"x").unwrap();
                match tokio::time::timeout(Duration::from_millis(50), woke.recv()).await {
                    Ok(woken) => break woken.unwrap(),
                    Err(_) => assert!(start.elapsed() < Duration::from_secs(30), "none woke"),
                }
            };
            // The others sleep through more changes (made well within the head's
            // TURN_LINGER).
            for _ in 0..3 {
                std::fs::write(&probe.file, b"x").unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                woke.try_recv().is_err(),
                "round {round}: a second process woke"
            );
            order.push(head);
            // Half the heads acquire; the others make no attempt and their turn lapses.
            if round % 2 == 0 {
                logs[head].attempted(&name, true);
            }
        }
        order.sort_unstable();
        assert_eq!(order, (0..PROCESSES).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A process that leads the waiters but stops acting (here: a turn held and never
    /// given up) delays the others by at most `TURN_CHECK`: they look at the lease
    /// themselves and try for it when it is free.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn waiting_processes_work_around_a_head_that_stopped_acting() {
        let (dir, mut probe) = watched_dir();
        let mut stopped = WaitTurn::open(&probe.turn).unwrap();
        assert!(stopped.lead());
        probe.seen = Seen::Free;
        let (file, turn) = (probe.file.clone(), probe.turn.clone());
        let log = Arc::new(ReleaseLog::new());
        let name = LockName::new("a").unwrap();
        let wait = |probe: Watched| {
            let (log, name) = (Arc::clone(&log), name.clone());
            tokio::spawn(async move {
                let start = monotonic_now();
                log.wait_or_poll(&name, start, Duration::from_secs(60), probe)
                    .await;
                start.elapsed()
            })
        };
        let waiter = wait(probe);
        // Changes wake the head only; a waiter that is not the head sees this one at its
        // next check on the head.
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&file, b"x").unwrap();
        let waited = waiter.await.unwrap();
        assert!(
            waited >= TURN_CHECK / 2,
            "a change woke a waiter that is not the head: {waited:?}"
        );
        assert!(waited < TURN_CHECK * 5, "{waited:?}");
        // From then on, while the stopped head keeps its turn, this process watches without
        // one: the next change wakes it at once.
        let waiter = wait(Watched {
            file: file.clone(),
            turn,
            seen: Seen::Held(1),
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&file, b"x").unwrap();
        let waited = waiter.await.unwrap();
        assert!(waited < TURN_CHECK / 2, "{waited:?}");
        drop(stopped);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A process (its own log) waiting for `name` as the head of the waiters, for long
    /// enough that the others give way to it.
    #[cfg(target_os = "linux")]
    async fn waiting_head(
        name: &LockName,
        probe: &Watched,
    ) -> (Arc<ReleaseLog>, tokio::task::JoinHandle<()>) {
        let log = Arc::new(ReleaseLog::new());
        let waiting = {
            let (log, name) = (Arc::clone(&log), name.clone());
            let probe = Watched {
                file: probe.file.clone(),
                turn: probe.turn.clone(),
                seen: Seen::Held(1),
            };
            tokio::spawn(async move {
                log.wait_or_poll(&name, monotonic_now(), Duration::from_secs(60), probe)
                    .await;
            })
        };
        aged(&probe.turn).await;
        (log, waiting)
    }

    /// Waits until the head of the turn file `path` has waited long enough to be given way.
    #[cfg(target_os = "linux")]
    async fn aged(path: &Path) {
        let start = monotonic_now();
        while turn::head_waiting(path).is_none_or(|w| w < HAND_OFF_AFTER * 10) {
            assert!(start.elapsed() < Duration::from_secs(30), "no head");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A process about to wait lets a head that has waited long enough go first: it waits
    /// until the head has the lease and passes its turn on.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_process_gives_way_to_a_waiting_head_until_it_passes_its_turn_on() {
        let (dir, probe) = watched_dir();
        let name = LockName::new("a").unwrap();
        let other = Arc::new(ReleaseLog::new());
        // No head: one `stat`, no wait.
        other
            .give_way_for(&name, &probe.turn, Duration::from_secs(60))
            .await;
        let (head, waiting) = waiting_head(&name, &probe).await;
        let giving_way = {
            let (other, name, turn) = (Arc::clone(&other), name.clone(), probe.turn.clone());
            tokio::spawn(async move {
                other
                    .give_way_for(&name, &turn, Duration::from_secs(60))
                    .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!giving_way.is_finished(), "it did not wait for the head");
        // A release wakes the head, which acquires and passes its turn on.
        std::fs::write(&probe.file, b"x").unwrap();
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the head woke")
            .unwrap();
        assert!(!giving_way.is_finished(), "the head has not tried yet");
        head.attempted(&name, true);
        tokio::time::timeout(Duration::from_secs(10), giving_way)
            .await
            .expect("the head passed its turn on")
            .unwrap();
        assert_eq!(turn::head_waiting(&probe.turn), None, "emptied as it left");
        assert!(!other.head_stuck(&name));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A head that does not take its turn is waited for `patience` each time while it runs
    /// (a busy machine), and no more once it is seen stopped. What a killed head left is
    /// cleared by the next process to lead.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_slow_head_is_waited_for_a_stopped_one_once_a_killed_one_not() {
        const PATIENCE: Duration = Duration::from_millis(200);
        let (dir, probe) = watched_dir();
        let name = LockName::new("a").unwrap();
        let (_head, waiting) = waiting_head(&name, &probe).await;
        let other = ReleaseLog::new();
        for _ in 0..2 {
            let start = monotonic_now();
            other.give_way_for(&name, &probe.turn, PATIENCE).await;
            assert!(start.elapsed() >= PATIENCE);
            assert!(!other.head_stuck(&name), "the head runs: only slow");
        }
        // The head's process stopped: here, the turn file names a stopped process.
        let mut stopped = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = stopped.id();
        let status = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::write(&probe.turn, format!("{pid}\n")).unwrap();
        while !turn::head_cannot_act(&probe.turn) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        aged(&probe.turn).await;
        let start = monotonic_now();
        other.give_way_for(&name, &probe.turn, PATIENCE).await;
        assert!(start.elapsed() >= PATIENCE);
        assert!(other.head_stuck(&name), "the head is stopped");
        let start = monotonic_now();
        other
            .give_way_for(&name, &probe.turn, Duration::from_secs(60))
            .await;
        assert!(start.elapsed() < Duration::from_secs(30), "waited again");
        stopped.kill().unwrap();
        stopped.wait().unwrap();
        waiting.abort();
        let _ = waiting.await;
        // Killed: a head's descriptors close without emptying the turn file.
        let mut killed = WaitTurn::open(&probe.turn).unwrap();
        assert!(killed.lead());
        drop(killed.beacon_for_test());
        drop(killed);
        aged(&probe.turn).await;
        let third = ReleaseLog::new();
        third.give_way_for(&name, &probe.turn, PATIENCE).await;
        assert_eq!(turn::head_waiting(&probe.turn), None, "cleared by leading");
        assert!(!third.head_stuck(&name), "no head was there");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A child process that has exited and is not reaped yet: a process that is
    /// [leaving](super::super::process_state::ProcessState::Leaving).
    #[cfg(target_os = "linux")]
    async fn exited_child() -> std::process::Child {
        let child = std::process::Command::new("true").spawn().unwrap();
        let start = monotonic_now();
        while super::super::process_state::of(child.id())
            != super::super::process_state::ProcessState::Leaving
        {
            assert!(start.elapsed() < Duration::from_secs(10), "never exited");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child
    }

    /// When the head's process exits, the kernel closes its beacon (which wakes the
    /// others) before it drops the head's `flock`: a waiter woken by that close waits for
    /// the lock to go and leads, rather than sleeping until its next check on the head
    /// (`TURN_CHECK`, seconds).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_waiter_leads_once_an_exiting_head_drops_its_turn() {
        let (dir, probe) = watched_dir();
        let (file, turn) = (probe.file.clone(), probe.turn.clone());
        let mut head = WaitTurn::open(&turn).unwrap();
        assert!(head.lead());
        let mut exited = exited_child().await;
        std::fs::write(&turn, format!("{}\n", exited.id())).unwrap();
        let log = Arc::new(ReleaseLog::new());
        let name = LockName::new("a").unwrap();
        let start = monotonic_now();
        let waiter = {
            let (log, name) = (Arc::clone(&log), name.clone());
            tokio::spawn(async move {
                log.wait_or_poll(&name, start, Duration::from_secs(60), probe)
                    .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The exit as the kernel does it: the beacon's close first, the lock a moment later.
        drop(head.beacon_for_test());
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(head);
        // The waiter now leads: a change of the lease wakes it.
        while !waiter.is_finished() {
            assert!(
                start.elapsed() < TURN_CHECK / 2,
                "the waiter slept through the head's exit"
            );
            std::fs::write(&file, b"x").unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        waiter.await.unwrap();
        assert!(log.take_kept(&name).is_some(), "it woke as the head");
        exited.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A lease held by the process of the hold file `hold` (a live lease while that file is
    /// locked), whose changes show in `file`.
    #[cfg(target_os = "linux")]
    struct HeldBy {
        file: PathBuf,
        hold: PathBuf,
    }

    #[cfg(target_os = "linux")]
    impl LeaseProbe for HeldBy {
        type Holder = u32;

        fn look(&mut self) -> impl Future<Output = Seen<u32>> + Send {
            std::future::ready(Seen::Held(1))
        }

        fn watched_files(&mut self) -> Vec<PathBuf> {
            vec![self.file.clone()]
        }

        fn look_closely(&mut self) -> impl Future<Output = Closely<u32>> + Send {
            let file = std::fs::File::open(&self.hold).unwrap();
            let holder_gone = private_file_try_lock(&file);
            std::future::ready(Closely {
                seen: Seen::Held(1),
                holds: vec![self.hold.clone()],
                holder_gone,
                expires_in: None,
            })
        }
    }

    #[cfg(target_os = "linux")]
    fn private_file_try_lock(file: &std::fs::File) -> bool {
        super::super::private_file::try_lock(file).is_ok()
    }

    /// As for the head of the waiters, so for a holder: its hold file's close is reported
    /// before its lock goes, and a waiter woken by it looks again until it has gone.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_waiter_sees_an_exiting_holder_gone_once_its_lock_goes() {
        let (dir, probe) = watched_dir();
        let hold = dir.join("x.hold");
        std::fs::write(&hold, format!("{}\n", std::process::id())).unwrap();
        // Read-only, so that dropping it (the lock going) is not reported as a close: the
        // kernel reports the holder's one close before the lock goes, not after.
        let locked = std::fs::File::open(&hold).unwrap();
        super::super::private_file::try_lock(&locked).unwrap();
        let log = Arc::new(ReleaseLog::new());
        let name = LockName::new("a").unwrap();
        let start = monotonic_now();
        let waiter = {
            let (log, name) = (Arc::clone(&log), name.clone());
            let probe = HeldBy {
                file: probe.file.clone(),
                hold: hold.clone(),
            };
            tokio::spawn(async move {
                log.wait_or_poll(&name, start, Duration::from_secs(60), probe)
                    .await;
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "the holder lives");
        // The holder's exit: its process is leaving, the close of its hold file is
        // reported (this write's close), and its lock goes a moment later.
        let mut exited = exited_child().await;
        std::fs::write(&hold, format!("{}\n", exited.id())).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(locked);
        let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter slept through the holder's exit")
            .unwrap();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        exited.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_release_it_waits_max() {
        let log = ReleaseLog::new();
        let start = monotonic_now();
        log.wait(
            &LockName::new("a").unwrap(),
            start,
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(monotonic_now() - start, Duration::from_millis(300));
    }
}
