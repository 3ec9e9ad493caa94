//! [`Engine`]: the [`LockBackend`](lock_core::LockBackend) behaviour over any driver, and
//! the open-time schema procedure. Both public backends are thin wrappers around it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, Weak};
use std::time::Duration;

use lock_core::backend_kit::batch::all_failed;
use lock_core::backend_kit::clock::HostClock;
use lock_core::backend_kit::hold::{self, ProcessHold};
use lock_core::backend_kit::permits::validate_limit;
use lock_core::backend_kit::time::validate_ttl;
use lock_core::backend_kit::{Closely, LeaseProbe, Seen};
use lock_core::{Capabilities, Holder, Lease, LeaseInfo, LockName, OwnerToken, Result};
use tracing::Instrument;

use crate::driver::{Driver, TxKind};
use crate::file_identity::{Expect, OpenedFile};
use crate::now::{Cx, Layout};
use crate::ops::{
    Acquire, ForceRelease, Heartbeat, HeartbeatMany, HeldLock, Inspect, List, LiveHold, LiveHolds,
    Peek, Release, TakeFreeLock, TakeGone,
};
use crate::retry::{self, Op};
use crate::schema::{Verdict, read_only_without_tables};
use crate::setup::{JournalMode, LookAtSchema, PrepareSchema};
use crate::wake::WakeFiles;

/// What both backends can do.
pub(crate) const CAPABILITIES: Capabilities = Capabilities::none()
    .with_list(true)
    .with_shared_across_hosts(false)
    .with_notifies_release(true)
    .with_batched_heartbeat(true)
    .with_semaphores(true)
    .with_watches_every_change(true);

/// What to do about the journal mode once the schema is in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Journal {
    /// Switch the database to WAL (we own the connections).
    SetWal,
    /// Leave it alone and log if it is not WAL (the application owns the pool).
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    Report,
}

/// A contender that waited its whole busy budget behind this backend's other contenders.
fn queued_too_long(db: &str, budget: Duration) -> lock_core::LockError {
    lock_core::LockError::unavailable(
        crate::BACKEND,
        format!(
            "database {db} stayed busy: this process's other acquisitions kept it for the whole \
             busy budget ({})",
            humantime::format_duration(budget)
        ),
    )
}

/// The shared implementation over a driver.
pub(crate) struct Engine<D> {
    driver: D,
    db: String,
    busy_timeout: Duration,
    /// The host's clocks: the boot clock judges expiry, the wall clock gives fences and the
    /// times people read.
    clock: Arc<dyn HostClock>,
    /// The schema layout found at open (set once by [`prepare`](Self::prepare); the
    /// operations that look at the schema run before, on the current layout's terms).
    layout: OnceLock<Layout>,
    /// The database file it opened, to notice when the path names another one.
    file: OpenedFile,
    /// Releases through any backend of this process on this database, to wake waiters.
    released: Arc<lock_core::backend_kit::ReleaseLog>,
    /// Taken by every write of a non-holder (an acquisition, a force-release) on this
    /// database in this process, whichever backend value makes it, so that contenders queue
    /// here, woken in turn, instead of all asking SQLite for the write lock at once and
    /// sleeping through busy backoff (an application may open several backends, each with
    /// a connection of its own). Heartbeats and releases do not queue: a holder is never
    /// kept waiting behind contenders.
    contenders: Arc<tokio::sync::Mutex<()>>,
    /// This process's hold on the database (`<db>-holds/`), taken at the first acquisition:
    /// `None` inside when the database is not a file or the directory cannot be written
    /// (leases are then freed by their TTL only).
    hold: OnceLock<Option<Holds>>,
    /// Set by [`prepare`](Self::prepare): a read-only client writes nothing, not even a hold.
    read_only: OnceLock<bool>,
}

/// The hold directory of a database file and this process's hold in it.
#[derive(Debug)]
struct Holds {
    dir: std::path::PathBuf,
    mine: Arc<ProcessHold>,
    /// The wake files this engine's releases wrote, kept open.
    wakes: WakeFiles,
}

impl Holds {
    /// The hold directory of the database at `db`: `<db>-holds`, next to its `-wal` and
    /// `-shm` files.
    fn dir_of(db: &str) -> Option<std::path::PathBuf> {
        let file = std::fs::canonicalize(db).ok()?;
        if !file.is_file() {
            return None;
        }
        let mut dir = file.into_os_string();
        dir.push("-holds");
        Some(dir.into())
    }

    /// The file a waiter for `name` watches and a release of `name` touches.
    fn wake_file(&self, name: &LockName) -> std::path::PathBuf {
        self.dir.join(format!("{:016x}.wake", fnv1a(name.as_str())))
    }

    /// The file the processes waiting for `name` take turns on (one watches at a time).
    fn turn_file(&self, name: &LockName) -> std::path::PathBuf {
        self.dir.join(format!("{:016x}.turn", fnv1a(name.as_str())))
    }
}

/// FNV-1a, 64 bits: a stable short file name for a lock name (a collision only wakes a
/// waiter for nothing).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The contenders' queue of the database `store` (a canonical path) in this process, shared
/// by every engine on it while any of them lives.
fn contenders_of(store: &str) -> Arc<tokio::sync::Mutex<()>> {
    static QUEUES: OnceLock<std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> =
        OnceLock::new();
    let mut queues = QUEUES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(queue) = queues.get(store).and_then(Weak::upgrade) {
        return queue;
    }
    queues.retain(|_, queue| queue.strong_count() > 0);
    let queue = Arc::new(tokio::sync::Mutex::new(()));
    queues.insert(store.to_owned(), Arc::downgrade(&queue));
    queue
}

impl<D> fmt::Debug for Engine<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("db", &self.db)
            .field("busy_timeout", &self.busy_timeout)
            .finish_non_exhaustive()
    }
}

impl<D: Driver> Engine<D> {
    /// An engine for `driver` on the database at path `db` (also its name in messages),
    /// where `expect` says whether there must be a file, judging time by `clock`.
    pub(crate) fn new(
        driver: D,
        db: String,
        busy_timeout: Duration,
        expect: Expect,
        clock: Arc<dyn HostClock>,
    ) -> Self {
        let store =
            std::fs::canonicalize(&db).map_or_else(|_| db.clone(), |p| p.display().to_string());
        Self {
            driver,
            file: OpenedFile::new(std::path::Path::new(&db), expect),
            db,
            busy_timeout,
            clock,
            layout: OnceLock::new(),
            released: lock_core::backend_kit::ReleaseLog::shared(&format!("sqlite:{store}")),
            contenders: contenders_of(&store),
            hold: OnceLock::new(),
            read_only: OnceLock::new(),
        }
    }

    /// The driver.
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    pub(crate) fn driver(&self) -> &D {
        &self.driver
    }

    /// The database, as named in messages.
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    pub(crate) fn db(&self) -> &str {
        &self.db
    }

    /// Runs `op` in its own transaction, retrying a busy database within the budget.
    pub(crate) async fn run<O: Op>(&self, op: &O) -> Result<O::Output> {
        self.run_within(op, self.busy_timeout).await
    }

    /// Runs `op` as [`run`](Self::run) does, retrying a busy database for at most `budget`;
    /// then, for an operation that grants or renews a lease (and the first operation),
    /// makes sure the database file is still the one this engine opened. Every operation
    /// of every driver goes through here.
    async fn run_within<O: Op>(&self, op: &O, budget: Duration) -> Result<O::Output> {
        // A file found lost before is refused at once: no more writes into it.
        self.file.refuse_if_lost(&self.db)?;
        let queued = tokio::time::Instant::now();
        let _turn = if O::KIND == TxKind::Write && !O::FOR_A_HOLDER {
            // The wait for the turn counts against the busy budget.
            match tokio::time::timeout(budget, self.contenders.lock()).await {
                Ok(turn) => Some(turn),
                Err(_) => return Err(queued_too_long(&self.db, budget)),
            }
        } else {
            None
        };
        let budget = budget.saturating_sub(queued.elapsed());
        let cx = Cx {
            db: &self.db,
            clock: &*self.clock,
            layout: self.layout.get().copied().unwrap_or(Layout::Current),
        };
        let outcome = retry::run(&self.driver, &cx, budget, op).await;
        // The `stat` runs after the transaction, never only before it. Checked before, the
        // file could still be ours at the check, then be deleted or replaced, another client
        // open the new file at the path and take a name, and our transaction grant the same
        // name in the lost file: two holders, each told it holds the lease. Checked after
        // the commit, an answer is given only if the path still named our file once our
        // write was in it, so every client opening the path from then on sees that write; a
        // replacement after the check destroys the lease, and its holder is told at its next
        // operation (the next heartbeat fails), as for any lease lost in the store.
        //
        // The first operation after a replacement has already run when it is refused: in
        // the lost file, where nobody sees it (each driver keeps the one connection it
        // opened). A second `stat` before every transaction would spare that one operation;
        // it is not worth doubling the cost of every operation.
        //
        // Only operations that grant or renew a lease (and the first operation, which
        // records the file) pay for the `stat`: a release, a look or a waiter's poll
        // answered from a lost file gives nobody a lease, and the next acquisition or
        // heartbeat finds the file lost. That keeps it to one `stat` per acquire + release
        // pair.
        if O::GRANTS || !self.file.recorded() {
            self.file.check(&self.db)?;
        }
        outcome
    }

    /// Makes the database ready: looks at it without writing and refuses a foreign or newer
    /// schema or a file that is not a database; then creates missing tables or migrates an
    /// older schema (unless `read_only`) and handles the journal mode.
    pub(crate) async fn prepare(&self, read_only: bool, journal: Journal) -> Result<()> {
        let span = tracing::debug_span!("open", db = %self.db);
        async {
            let layout = match self.run(&LookAtSchema).await?.verdict(&self.db)? {
                Verdict::Ready => Layout::Current,
                Verdict::Create if read_only => return Err(read_only_without_tables(&self.db)),
                // A reader cannot migrate: it reads the older rows as they are.
                Verdict::Migrate { from } if read_only => {
                    tracing::debug!(db = %self.db, from, "reading an older lock schema as it is");
                    Layout::Legacy { version: from }
                }
                Verdict::Create | Verdict::Migrate { .. } => self.run(&PrepareSchema).await?,
            };
            // `prepare` runs once, when the backend opens.
            let _ = self.layout.set(layout);
            let _ = self.read_only.set(read_only);
            if read_only {
                return Ok(());
            }
            let set_wal = journal == Journal::SetWal;
            let mode = self.run(&JournalMode { set_wal }).await?;
            if mode != "wal" {
                tracing::warn!(
                    db = %self.db,
                    mode,
                    "the lock database is not in WAL mode; readers and the writer will block \
                     each other more often (PRAGMA journal_mode = WAL is recommended)"
                );
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    pub(crate) async fn try_acquire_permit(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
    ) -> Result<Option<Lease>> {
        validate_ttl(ttl)?;
        let limit = validate_limit(limit)?;
        let holds = self.holds();
        let stamp = holds.map(|h| h.mine.stamp(holder.token));
        let op = Acquire {
            name,
            holder,
            ttl,
            limit,
            hold: stamp.as_deref(),
        };
        let acquired = async {
            // A lock's free row is taken by one statement; anything else is decided on the
            // rows, in a transaction.
            if limit == 1 {
                if let Some(lease) = self.run(&TakeFreeLock { acquire: &op }).await? {
                    return Ok(Some(lease));
                }
                // Most often the lock is held: a read, which takes no write lock (so it never
                // delays the holder or another writer), tells so, with what a takeover of a
                // gone holder needs.
                if let Some(live) = self.live_lock(&op).await {
                    return match holds {
                        Some(holds) => self.take_over_gone(op, holds, &live).await,
                        None => Ok(None),
                    };
                }
            }
            match self.run(&op).await? {
                Some(lease) => Ok(Some(lease)),
                None => match holds {
                    Some(holds) => match self.run(&LiveHolds { name: op.name }).await {
                        Ok(live) => self.take_over_gone(op, holds, &live).await,
                        Err(error) => {
                            tracing::debug!(%error, "could not read the holders' holds");
                            Ok(None)
                        }
                    },
                    None => Ok(None),
                },
            }
        }
        .instrument(tracing::debug_span!("try_acquire", lock = %name, limit))
        .await;
        self.released
            .attempted(name, matches!(acquired, Ok(Some(_))));
        acquired
    }

    /// This process's hold on the database, taken at the first call.
    fn holds(&self) -> Option<&Holds> {
        self.hold
            .get_or_init(|| {
                // Not for a read-only client, nor an older schema read as it is (an
                // application's read-only pool): they write nothing.
                let writes = self.read_only.get() == Some(&false)
                    && self.layout.get() == Some(&Layout::Current);
                if !writes {
                    return None;
                }
                let dir = Holds::dir_of(&self.db)?;
                match ProcessHold::of_process(&dir) {
                    Ok(mine) => Some(Holds {
                        dir,
                        mine,
                        wakes: WakeFiles::default(),
                    }),
                    Err(error) => {
                        tracing::debug!(
                            db = %self.db,
                            %error,
                            "no process hold: leases of this process are freed by their TTL only"
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The live lease of a lock `acquire` could not take at once, read without the write
    /// lock: `None` when there is none that the read-and-decide [`Acquire`] would leave alone
    /// (the name is new, its row is free but cannot be taken by one statement, or cannot be
    /// read, or is held under another limit), or when the read failed: [`Acquire`] then
    /// decides and reports.
    async fn live_lock(&self, acquire: &Acquire<'_>) -> Option<Vec<LiveHold>> {
        self.run(&HeldLock { acquire }).await.ok().flatten()
    }

    /// After an attempt found every permit live (`live`, as [`LiveHolds`] read them): takes
    /// over a permit whose holder's process is gone (its hold can be locked), if there is
    /// one. See `lock_core::backend_kit::hold`.
    async fn take_over_gone(
        &self,
        acquire: Acquire<'_>,
        holds: &Holds,
        live: &[LiveHold],
    ) -> Result<Option<Lease>> {
        // Permits are not re-entrant: a holder that has one gets no other.
        if live.iter().any(|h| h.owner == acquire.holder.token) {
            return Ok(None);
        }
        for holder in live {
            let Some(stamp) = holder.hold.as_deref() else {
                continue;
            };
            if holds.mine.is_mine(stamp) {
                continue;
            }
            let hold::Holder::Gone(gone) =
                hold::probe(&holds.dir, stamp, holder.owner, &holder.host)
            else {
                continue;
            };
            let take = TakeGone {
                acquire: Acquire { ..acquire },
                gone: holder,
            };
            if let Some(lease) = self.run(&take).await? {
                tracing::info!(
                    lock = %acquire.name,
                    fence = lease.fence,
                    "took over a lease whose holder's process is gone"
                );
                gone.finish();
                return Ok(Some(lease));
            }
        }
        Ok(None)
    }

    pub(crate) async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_ttl(ttl)?;
        self.run(&Heartbeat { lease, ttl })
            .instrument(tracing::debug_span!("heartbeat", lock = %lease.name))
            .await
    }

    /// Heartbeats `leases` in one write transaction; results in the order of `leases`.
    pub(crate) async fn heartbeat_many(
        &self,
        leases: &[Lease],
        ttl: Duration,
    ) -> Vec<Result<Lease>> {
        if let Err(e) = validate_ttl(ttl) {
            return all_failed(e, leases.len());
        }
        if leases.is_empty() {
            return Vec::new();
        }
        let run = self
            .run(&HeartbeatMany { leases, ttl })
            .instrument(tracing::debug_span!(
                "heartbeat_many",
                leases = leases.len()
            ))
            .await;
        match run {
            Ok(results) => results,
            Err(e) => all_failed(e, leases.len()),
        }
    }

    pub(crate) async fn release(&self, lease: &Lease) -> Result<bool> {
        let freed = self
            .run(&Release { lease })
            .instrument(tracing::debug_span!("release", lock = %lease.name))
            .await?;
        if freed {
            self.released.record(&lease.name);
            self.wake_other_processes(&lease.name);
        }
        Ok(freed)
    }

    /// The live permits of `name`, by fence.
    pub(crate) async fn inspect_all(&self, name: &LockName) -> Result<Vec<LeaseInfo>> {
        self.run(&Inspect { name })
            .instrument(tracing::debug_span!("inspect", lock = %name))
            .await
    }

    /// The live permit of `name` acquired last (highest fence).
    pub(crate) async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        Ok(self.inspect_all(name).await?.pop())
    }

    pub(crate) async fn force_release(&self, name: &LockName) -> Result<bool> {
        let freed = self
            .run(&ForceRelease { name })
            .instrument(tracing::debug_span!("force_release", lock = %name))
            .await?;
        self.released.record(name);
        self.wake_other_processes(name);
        Ok(freed)
    }

    /// Wakes waiters of `name` in other processes (see [`wait_for_change`](Self::wait_for_change)).
    fn wake_other_processes(&self, name: &LockName) {
        if let Some(holds) = self.hold.get().and_then(Option::as_ref) {
            holds.wakes.wake(&holds.wake_file(name));
        }
    }

    /// Wakes on a release through this process at once. Across processes it sleeps in the
    /// kernel (inotify) on the name's wake file, which releases touch, and on the live
    /// holders' hold files, which the kernel closes when a holder's process exits; it also
    /// wakes when the earliest live permit expires. Where that is not possible (no hold
    /// directory, no inotify) it reads the name's rows every 1-2 ms, in a read transaction,
    /// which in WAL mode never blocks the writer.
    pub(crate) async fn wait_for_change(
        &self,
        name: &LockName,
        since: std::time::Instant,
        max: Duration,
    ) {
        let probe = PeekRow {
            engine: self,
            name,
            holds: self.holds(),
        };
        self.released.wait_or_poll(name, since, max, probe).await;
    }

    /// Lets a process that has waited for `name` long enough go first (see
    /// [`ReleaseLog::give_way`](lock_core::backend_kit::ReleaseLog::give_way)).
    pub(crate) async fn give_way(&self, name: &LockName, max: Duration) {
        if let Some(holds) = self.holds() {
            self.released
                .give_way(name, &holds.turn_file(name), max)
                .await;
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
        self.run(&List { prefix })
            .instrument(tracing::debug_span!("list", prefix))
            .await
    }
}

/// How long one look at a row may wait for a busy database before it counts as unknown.
const PEEK_BUDGET: Duration = Duration::from_millis(5);

/// A waiter's look at one name's row.
struct PeekRow<'a, D> {
    engine: &'a Engine<D>,
    name: &'a LockName,
    holds: Option<&'a Holds>,
}

impl<D: Driver> LeaseProbe for PeekRow<'_, D> {
    /// Every live permit's owner and fence, by fence.
    type Holder = Vec<(OwnerToken, u64)>;

    async fn look(&mut self) -> Seen<Self::Holder> {
        let peek = Peek { name: self.name };
        match self.engine.run_within(&peek, PEEK_BUDGET).await {
            Ok(holders) if holders.is_empty() => Seen::Free,
            Ok(holders) => Seen::Held(holders),
            Err(_) => Seen::Unknown,
        }
    }

    fn watched_files(&mut self) -> Vec<std::path::PathBuf> {
        let Some(holds) = self.holds else {
            return Vec::new();
        };
        let wake = holds.wake_file(self.name);
        // Made by the first waiter; opening it does not wake the others (only writes do).
        let made = wake.exists()
            || std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&wake)
                .is_ok();
        if made { vec![wake] } else { Vec::new() }
    }

    fn turn_file(&mut self) -> Option<std::path::PathBuf> {
        self.holds.map(|holds| holds.turn_file(self.name))
    }

    /// The wake file is written only by releases, and hold files are watched for their
    /// holders' exit.
    fn events_are_changes(&self) -> bool {
        true
    }

    async fn look_closely(&mut self) -> Closely<Self::Holder> {
        let holds = self.holds;
        let live = self
            .engine
            .run_within(&LiveHolds { name: self.name }, PEEK_BUDGET)
            .await;
        let Ok(live) = live else {
            return Closely {
                seen: Seen::Unknown,
                holds: Vec::new(),
                holder_gone: false,
                expires_in: None,
            };
        };
        let seen = if live.is_empty() {
            Seen::Free
        } else {
            Seen::Held(live.iter().map(|h| (h.owner, h.fence)).collect())
        };
        let mut hold_files = Vec::new();
        let mut holder_gone = false;
        if let Some(holds) = holds {
            for holder in &live {
                let Some(stamp) = holder.hold.as_deref() else {
                    continue;
                };
                hold_files.extend(hold::stamp_path(&holds.dir, stamp));
                if !holds.mine.is_mine(stamp) {
                    let probed = hold::probe(&holds.dir, stamp, holder.owner, &holder.host);
                    holder_gone |= matches!(probed, hold::Holder::Gone(_));
                }
            }
        }
        Closely {
            holds: hold_files,
            holder_gone,
            expires_in: live.iter().map(|h| h.expires_in).min(),
            seen,
        }
    }
}

/// Implements [`LockBackend`](lock_core::LockBackend) for a type with an `engine` field.
macro_rules! forward_lock_backend {
    ($ty:ty) => {
        #[lock_core::async_trait]
        impl lock_core::LockBackend for $ty {
            async fn try_acquire(
                &self,
                name: &lock_core::LockName,
                holder: &lock_core::Holder,
                ttl: std::time::Duration,
            ) -> lock_core::Result<Option<lock_core::Lease>> {
                self.engine.try_acquire_permit(name, holder, ttl, 1).await
            }

            async fn try_acquire_permit(
                &self,
                name: &lock_core::LockName,
                holder: &lock_core::Holder,
                ttl: std::time::Duration,
                limit: u32,
            ) -> lock_core::Result<Option<lock_core::Lease>> {
                self.engine
                    .try_acquire_permit(name, holder, ttl, limit)
                    .await
            }

            async fn heartbeat(
                &self,
                lease: &lock_core::Lease,
                ttl: std::time::Duration,
            ) -> lock_core::Result<lock_core::Lease> {
                self.engine.heartbeat(lease, ttl).await
            }

            async fn heartbeat_many(
                &self,
                leases: &[lock_core::Lease],
                ttl: std::time::Duration,
            ) -> Vec<lock_core::Result<lock_core::Lease>> {
                self.engine.heartbeat_many(leases, ttl).await
            }

            async fn release(&self, lease: &lock_core::Lease) -> lock_core::Result<bool> {
                self.engine.release(lease).await
            }

            async fn inspect(
                &self,
                name: &lock_core::LockName,
            ) -> lock_core::Result<Option<lock_core::LeaseInfo>> {
                self.engine.inspect(name).await
            }

            async fn inspect_all(
                &self,
                name: &lock_core::LockName,
            ) -> lock_core::Result<Vec<lock_core::LeaseInfo>> {
                self.engine.inspect_all(name).await
            }

            async fn force_release(&self, name: &lock_core::LockName) -> lock_core::Result<bool> {
                self.engine.force_release(name).await
            }

            async fn wait_for_change(
                &self,
                name: &lock_core::LockName,
                since: std::time::Instant,
                max: std::time::Duration,
            ) {
                self.engine.wait_for_change(name, since, max).await
            }

            async fn give_way(&self, name: &lock_core::LockName, max: std::time::Duration) {
                self.engine.give_way(name, max).await
            }

            async fn list(&self, prefix: &str) -> lock_core::Result<Vec<lock_core::LeaseInfo>> {
                self.engine.list(prefix).await
            }

            fn capabilities(&self) -> lock_core::Capabilities {
                $crate::engine::CAPABILITIES
            }

            fn backend_name(&self) -> &'static str {
                $crate::BACKEND
            }
        }
    };
}

pub(crate) use forward_lock_backend;
