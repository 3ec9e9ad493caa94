//! [`FileBackend`]: the [`LockBackend`] over a lock directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lock_core::backend_kit::Driver;
use lock_core::backend_kit::clock::HostClock;
use lock_core::backend_kit::fence::{MAX_FENCE, next_fence};
use lock_core::backend_kit::hold::{self, GoneHolder, ProcessHold};
use lock_core::backend_kit::permits::{limit_mismatch, validate_limit};
use lock_core::backend_kit::time::{monotonic_now, validate_ttl};
use lock_core::{
    Capabilities, Holder, Lease, LeaseInfo, LockBackend, LockError, LockName, Result, async_trait,
};
use tracing::Instrument;

use crate::flock::LockKind;
use crate::io_error::BACKEND;
use crate::lease_file::{LeaseFile, Loaded};
use crate::lock_dir::LockDir;
use crate::options::{FileOptions, URL_SCHEMES};
use crate::peek::PeekFile;
use crate::record::{self, Held, State};
use lock_core::backend_kit::clock::ClockReading as Now;

/// Lease locks in a local directory: one lease file per lock name.
///
/// Every operation opens the name's lease file, takes an exclusive fs4 (`flock`) lock for
/// its critical section (read, decide, rewrite in place), and closes it; `inspect` and
/// `list` take a shared lock. So any number of tasks, backends and processes on this host
/// can share a directory. A semaphore's permits all live in the name's one file, so a
/// grant is one critical section, as for a lock. Expiry is judged on the host's boot
/// clock. Clones share everything; two [`connect`](Self::connect)s of the same directory
/// are independent clients of one store.
///
/// When a holder dies, its process's hold file (in [`holds_dir`](Self::holds_dir)) is
/// unlocked by the kernel, and the next contender takes the lease over at once, with a
/// higher fence. A holder that is paused or slow, or one this cannot be sure of, keeps its
/// lease until its TTL. [`wait_for_change`](LockBackend::wait_for_change) sleeps in the
/// kernel until the lease file changes, a live holder's process exits or the earliest
/// lease expires, so a waiting [`Locker::lock`](lock_core::Locker::lock) costs no CPU.
///
/// See the [crate documentation](crate) for the file format, clocks, fences and
/// durability.
#[derive(Clone, Debug)]
pub struct FileBackend {
    dir: Arc<LockDir>,
}

impl FileBackend {
    /// Connects to the directory a `file:///abs/dir[?sync=true&busy_timeout=10s]` URL
    /// names (see [`FileOptions`]), creating it (mode 0700) if it is missing.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] for a malformed URL or an unknown option; otherwise as
    /// [`connect_with`](Self::connect_with).
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url.parse()?).await
    }

    /// Opens the lock directory `options` names, creating it (and missing parents, mode
    /// 0700) first unless [`FileOptions::create_if_missing`] is off.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] if the directory cannot be created, does not exist (with
    /// `create_if_missing` off), is not a directory, or is not writable by this process;
    /// the message says what to do.
    pub async fn connect_with(options: FileOptions) -> Result<Self> {
        if options.create_if_missing {
            LockDir::create(&options.dir)?;
        }
        Ok(Self {
            dir: Arc::new(LockDir::open(options)?),
        })
    }

    /// The lock directory (absolute, with symlinks resolved when it was opened).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The options this backend was opened with.
    pub fn options(&self) -> &FileOptions {
        self.dir.options()
    }

    /// The path of `name`'s lease file (which may not exist yet), for operators and tools.
    pub fn lease_file(&self, name: &LockName) -> PathBuf {
        self.dir.lease_path(name)
    }

    /// The directory of process holds inside the lock directory (`.holds`): one locked file
    /// per process taking leases here, which tells other processes at once when that
    /// process is gone (see the [crate documentation](crate)). For operators and tools.
    pub fn holds_dir(&self) -> &Path {
        self.dir.holds()
    }

    /// Opens `name`'s file for an exclusive critical section.
    async fn exclusive(&self, name: &LockName, create: bool) -> Result<Option<LeaseFile>> {
        self.dir.lease_file(name, LockKind::Exclusive, create).await
    }

    /// Runs a critical section that may write. With `sync_writes` it runs on the blocking
    /// thread pool, since `fsync` can take milliseconds; otherwise right here. Either way
    /// it runs to completion once started, so dropping the caller's future cannot leave a
    /// file half-decided.
    async fn write_section<T: Send + 'static>(
        &self,
        mut file: LeaseFile,
        section: impl FnOnce(&mut LeaseFile) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if !self.dir.options().sync_writes {
            return section(&mut file);
        }
        tokio::task::spawn_blocking(move || section(&mut file))
            .await
            .map_err(|e| LockError::backend(BACKEND, format!("a lease file write failed: {e}")))?
    }

    /// The host clocks leases are judged by.
    fn clock(&self) -> &Arc<dyn HostClock> {
        self.dir.options().clock()
    }

    /// Runs one exclusive critical section on `file`: reads its state as of now, lets
    /// `decide` answer and maybe change it (`decide` returns the answer and whether it
    /// changed the state), and writes the state back if it changed, or if the file is in an
    /// older format (which that write migrates). Expired permits are dropped from what is
    /// written. An error from `decide` writes nothing.
    async fn update<T: Send + 'static>(
        &self,
        file: LeaseFile,
        name: LockName,
        decide: impl FnOnce(&mut State, &Now, &LeaseFile) -> Result<(T, bool)> + Send + 'static,
    ) -> Result<T> {
        // The file is locked already: this is the section's moment.
        let now = Now::read(&**self.clock());
        self.write_section(file, move |file| {
            let Loaded { mut state, migrate } = file.load(&name, &now)?;
            let (answer, changed) = decide(&mut state, &now, file)?;
            if changed || migrate {
                state.prune(&now);
                file.store(&name, &state, &now)?;
            }
            Ok(answer)
        })
        .await
    }

    /// Every live permit of `name`, by fence, read under a shared lock.
    async fn live_infos(&self, name: &LockName) -> Result<Vec<LeaseInfo>> {
        let Some(mut file) = self.dir.lease_file(name, LockKind::Shared, false).await? else {
            return Ok(Vec::new());
        };
        let now = Now::read(&**self.clock());
        Ok(file.load(name, &now)?.state.infos(name, &now))
    }

    fn released(&self, name: &LockName) {
        self.dir.changes().record(name);
    }
}

/// Connects to a `file://` URL; see [`FileBackend::connect`].
///
/// # Errors
///
/// As [`FileBackend::connect`].
pub async fn connect(url: &str) -> Result<FileBackend> {
    FileBackend::connect(url).await
}

/// This backend's entry in the `leaselock` facade's registry: `file://` URLs.
pub const DRIVER: Driver = Driver {
    name: BACKEND,
    schemes: URL_SCHEMES,
    connect: |url| Box::pin(async move { Ok(Arc::new(FileBackend::connect(&url).await?) as _) }),
};

#[async_trait]
impl LockBackend for FileBackend {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.try_acquire_permit(name, holder, ttl, 1).await
    }

    /// Takes one of `limit` permits: all of a name's permits are in its one lease file, so
    /// the count, the grant and the fence are decided in one critical section. A holder
    /// whose token already has a live permit of `name` gets `Ok(None)` (not re-entrant).
    async fn try_acquire_permit(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
    ) -> Result<Option<Lease>> {
        validate_ttl(ttl)?;
        validate_limit(limit)?;
        let span = tracing::debug_span!("try_acquire", lock = %name, limit);
        let acquired = async {
            let sent = monotonic_now();
            // Taken before the file's lock: the first time, it creates a file.
            let hold = self.dir.hold().cloned();
            let Some(file) = self.exclusive(name, true).await? else {
                return Err(LockError::backend(
                    BACKEND,
                    "a created lease file was not opened",
                ));
            };
            let (lock, holder, dir) = (name.clone(), holder.clone(), Arc::clone(&self.dir));
            let (lease, gone) = self
                .update(file, name.clone(), move |state, now, file| {
                    if let Some(held) = state.live_limit(now)
                        && held != limit
                    {
                        return Err(limit_mismatch(BACKEND, &lock, held, limit));
                    }
                    if state.live(now).any(|h| h.token == holder.token) {
                        return Ok(((None, None), false));
                    }
                    let live = state.live(now).count();
                    let mut gone = None;
                    if live >= usize::try_from(limit).unwrap_or(usize::MAX) {
                        // Full: unless a holder's process is gone, the TTL decides.
                        let Some((i, dead)) = dead_holder(state, now, &dir, hold.as_deref()) else {
                            return Ok(((None, None), false));
                        };
                        let dead_held = state.holders.remove(i);
                        tracing::info!(
                            pid = dead_held.pid,
                            fence = dead_held.fence,
                            "taking over the lease of a holder whose process is gone"
                        );
                        gone = Some(dead);
                    }
                    let fence = next_fence(state.fence, now.fence_clock()).ok_or_else(|| {
                        file.corrupt(
                            &lock,
                            &format!(
                                "has fence {}, and no higher fence below 2^53 can be issued \
                                 (is this host's wall clock past the year 2255?)",
                                state.fence
                            ),
                        )
                    })?;
                    let stamp = hold.as_ref().map(|hold| hold.stamp(holder.token));
                    let held = Held::new(&holder, fence, now, ttl, stamp);
                    let expires_at = held.expires_at(now);
                    state.fence = fence;
                    state.limit = limit;
                    state.holders.push(held);
                    let lease = Lease::new(lock, holder, fence, expires_at, sent, ttl);
                    Ok(((Some(lease), gone), true))
                })
                .await?;
            // The takeover is written: the dead holder's hold file can go.
            if let Some(gone) = gone {
                gone.finish();
            }
            Ok(lease)
        }
        .instrument(span)
        .await;
        self.dir
            .changes()
            .attempted(name, matches!(acquired, Ok(Some(_))));
        acquired
    }

    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_ttl(ttl)?;
        let span = tracing::debug_span!("heartbeat", lock = %lease.name);
        async {
            let sent = monotonic_now();
            let lost = || LockError::LeaseLost {
                name: lease.name.clone(),
            };
            let Some(file) = self.exclusive(&lease.name, false).await? else {
                return Err(lost());
            };
            let lease = lease.clone();
            self.update(file, lease.name.clone(), move |state, now, _| {
                let Some(held) = state
                    .holders
                    .iter_mut()
                    .find(|h| h.token == lease.holder.token && h.is_live(now))
                else {
                    return Err(LockError::LeaseLost { name: lease.name });
                };
                held.extend(now, ttl);
                let renewed = lease.renewed(held.expires_at(now), sent, ttl);
                Ok((renewed, true))
            })
            .await
        }
        .instrument(span)
        .await
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        let span = tracing::debug_span!("release", lock = %lease.name);
        async {
            let Some(file) = self.exclusive(&lease.name, false).await? else {
                return Ok(false);
            };
            let token = lease.holder.token;
            let freed = self
                .update(file, lease.name.clone(), move |state, now, _| {
                    let Some(i) = state.holders.iter().position(|h| h.token == token) else {
                        return Ok((false, false));
                    };
                    // Ours: remove it, live or (cleaning up) expired; the fence stays.
                    Ok((state.holders.remove(i).is_live(now), true))
                })
                .await?;
            if freed {
                self.released(&lease.name);
            }
            Ok(freed)
        }
        .instrument(span)
        .await
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        let span = tracing::debug_span!("inspect", lock = %name);
        async { Ok(self.live_infos(name).await?.pop()) }
            .instrument(span)
            .await
    }

    async fn inspect_all(&self, name: &LockName) -> Result<Vec<LeaseInfo>> {
        let span = tracing::debug_span!("inspect_all", lock = %name);
        self.live_infos(name).instrument(span).await
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let span = tracing::debug_span!("force_release", lock = %name);
        async {
            let Some(file) = self.exclusive(name, false).await? else {
                return Ok(false);
            };
            let (lock, now) = (name.clone(), Now::read(&**self.clock()));
            let freed = self
                .write_section(file, move |file| {
                    match file.load(&lock, &now) {
                        Ok(Loaded { mut state, migrate }) => {
                            let live = state.live(&now).next().is_some();
                            if !state.holders.is_empty() || migrate {
                                state.holders.clear();
                                file.store(&lock, &state, &now)?;
                            }
                            Ok(live)
                        }
                        Err(LockError::Corrupt { detail, .. }) => {
                            reset_corrupt(file, &lock, &detail, &now)?;
                            Ok(false)
                        }
                        // A newer format's file is refused, and left untouched.
                        Err(other) => Err(other),
                    }
                })
                .await?;
            self.released(name);
            Ok(freed)
        }
        .instrument(span)
        .await
    }

    /// Wakes on a release by this process at once; on a change by another process, a live
    /// holder's process exiting, or the earliest live permit's expiry within microseconds,
    /// sleeping in the kernel meanwhile (inotify on the lease file and the live holders'
    /// hold files). Without inotify it looks at the lease file, without locking it, every
    /// 1-2 ms.
    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        let probe = PeekFile::new(
            self.dir.lease_path(name),
            self.dir.holds().to_owned(),
            Arc::clone(self.clock()),
        );
        self.dir
            .changes()
            .wait_or_poll(name, since, max, probe)
            .await;
    }

    /// Lets a process that has waited for `name` for [`HAND_OFF_AFTER`] go first, for up to
    /// [`GIVE_WAY`]; one `stat` otherwise.
    ///
    /// [`HAND_OFF_AFTER`]: lock_core::backend_kit::HAND_OFF_AFTER
    /// [`GIVE_WAY`]: lock_core::backend_kit::GIVE_WAY
    async fn give_way(&self, name: &LockName, max: Duration) {
        if let Some(turn) = crate::peek::turn_file(&self.dir.lease_path(name), self.dir.holds()) {
            self.dir.changes().give_way(name, &turn, max).await;
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
        let span = tracing::debug_span!("list", prefix);
        async {
            let clock = &**self.clock();
            let mut out = Vec::new();
            for path in self.dir.lease_paths()? {
                let opened = self.dir.lease_file_at(path, LockKind::Shared, false).await;
                let result = match opened {
                    // Deleted by hand since the directory was read: nothing to list.
                    Ok(None) => continue,
                    Ok(Some(mut file)) => listed(&mut file, prefix, clock),
                    Err(error) => Err(error),
                };
                match result {
                    Ok(infos) => out.extend(infos),
                    // A busy file may hold a live lease, and a missing directory holds
                    // nothing: both fail the listing rather than give a partial one.
                    Err(error @ LockError::Unavailable { .. }) => return Err(error),
                    Err(error) if !self.dir.path().is_dir() => return Err(error),
                    // One damaged or foreign file must not hide every other lease.
                    Err(error) => {
                        tracing::warn!(%error, "skipping an unreadable lease file while listing");
                    }
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name).then(a.fence.cmp(&b.fence)));
            Ok(out)
        }
        .instrument(span)
        .await
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_list(true)
            .with_notifies_release(true)
            .with_shared_across_hosts(false)
            .with_semaphores(true)
            .with_watches_every_change(true)
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

/// The first live holder in `state` whose process is gone (its hold's lock is free), with
/// that hold, locked until [`GoneHolder::finish`]; `None` when every live holder's process
/// lives or cannot be known to be gone (no stamp, another host, a replaced hold file...):
/// the TTL decides then. Holders of this process (whose hold is `mine`) are not probed.
fn dead_holder(
    state: &State,
    now: &Now,
    dir: &LockDir,
    mine: Option<&ProcessHold>,
) -> Option<(usize, GoneHolder)> {
    state.holders.iter().enumerate().find_map(|(i, held)| {
        let stamp = held.hold.as_deref()?;
        if !held.is_live(now) || mine.is_some_and(|hold| hold.is_mine(stamp)) {
            return None;
        }
        match hold::probe(dir.holds(), stamp, held.token, held.host()) {
            hold::Holder::Gone(gone) => Some((i, gone)),
            hold::Holder::Alive | hold::Holder::Unknown => None,
        }
    })
}

/// The live permits in a listed file, if its name starts with `prefix`.
fn listed(file: &mut LeaseFile, prefix: &str, clock: &dyn HostClock) -> Result<Vec<LeaseInfo>> {
    let now = Now::read(clock);
    let Some((text, state)) = file.load_any(&now)? else {
        return Ok(Vec::new());
    };
    let bad = |why: &str| {
        LockError::corrupt(
            BACKEND,
            format!("lease file {} {why}", file.path().display()),
        )
    };
    let name = LockName::new(&text).map_err(|_| bad("holds an invalid lock name"))?;
    if file.path().file_name() != Some(crate::file_name::lease_file_name(&name).as_ref()) {
        return Err(bad(&format!(
            "holds the lease of {name:?}, whose file has another name"
        )));
    }
    if !name.as_str().starts_with(prefix) {
        return Ok(Vec::new());
    }
    Ok(state.infos(&name, &now))
}

/// Rewrites a corrupt lease file as free, with a fence no lower than anything it still
/// shows, nor than the wall clock in microseconds.
fn reset_corrupt(file: &mut LeaseFile, name: &LockName, detail: &str, now: &Now) -> Result<()> {
    let recovered = record::recover_fence(&file.read_bytes()?).unwrap_or(0);
    let fence = recovered.max(now.fence_clock()).clamp(1, MAX_FENCE);
    tracing::warn!(lock = %name, detail, fence, "force_release reset a corrupt lease file");
    file.store(
        name,
        &State {
            fence,
            ..State::fresh()
        },
        now,
    )
}
