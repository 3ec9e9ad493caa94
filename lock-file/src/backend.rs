//! [`FileBackend`]: the [`LockBackend`] over a lock directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lock_core::backend_kit::Driver;
use lock_core::backend_kit::time::{fence_seed_now, monotonic_now, validate_ttl};
use lock_core::{
    Capabilities, Holder, Lease, LeaseInfo, LockBackend, LockError, LockName, Result, async_trait,
};
use tracing::Instrument;

use crate::flock::LockKind;
use crate::io_error::BACKEND;
use crate::lease_file::LeaseFile;
use crate::lock_dir::LockDir;
use crate::options::{FileOptions, URL_SCHEMES};
use crate::peek::PeekFile;
use crate::record::{self, Held, State};

/// Lease locks in a local directory: one lease file per lock name.
///
/// Every operation opens the name's lease file, takes an exclusive fs4 (`flock`) lock for
/// its critical section (read, decide, rewrite in place), and closes it; `inspect` and
/// `list` take a shared lock. So any number of tasks, backends and processes on this host
/// can share a directory. Clones share everything; two [`connect`](Self::connect)s of the same
/// directory are independent clients of one store.
///
/// See the [crate documentation](crate) for the file format, fences and durability.
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
        validate_ttl(ttl)?;
        let span = tracing::debug_span!("try_acquire", lock = %name);
        async {
            let sent = monotonic_now();
            let Some(file) = self.exclusive(name, true).await? else {
                return Err(LockError::backend(
                    BACKEND,
                    "a created lease file was not opened",
                ));
            };
            let (name, holder) = (name.clone(), holder.clone());
            self.write_section(file, move |file| {
                let state = file.load(&name)?;
                let now = SystemTime::now();
                let fence = match &state {
                    Some(s) if s.holder.as_ref().is_some_and(|h| h.is_live(now)) => {
                        return Ok(None);
                    }
                    Some(s) => s
                        .fence
                        .checked_add(1)
                        .ok_or_else(|| file.corrupt(&name, "has a fence that cannot grow"))?,
                    None => fence_seed_now(),
                };
                let held = Held::new(&holder, now, ttl);
                let expires_at = held.expires_at();
                file.store(
                    &name,
                    &State {
                        fence,
                        holder: Some(held),
                    },
                )?;
                Ok(Some(Lease::new(name, holder, fence, expires_at, sent, ttl)))
            })
            .await
        }
        .instrument(span)
        .await
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
            self.write_section(file, move |file| {
                let now = SystemTime::now();
                let Some(mut state) = file.load(&lease.name)? else {
                    return Err(LockError::LeaseLost { name: lease.name });
                };
                let Some(held) = state
                    .holder
                    .as_mut()
                    .filter(|h| h.is_live_for(lease.holder.token, now))
                else {
                    return Err(LockError::LeaseLost { name: lease.name });
                };
                held.extend(now, ttl);
                let expires_at = held.expires_at();
                file.store(&lease.name, &state)?;
                Ok(lease.renewed(expires_at, sent, ttl))
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
            let (name, token) = (lease.name.clone(), lease.holder.token);
            let freed = self
                .write_section(file, move |file| {
                    let Some(mut state) = file.load(&name)? else {
                        return Ok(false);
                    };
                    let Some(held) = state.holder.take_if(|h| h.token == token) else {
                        return Ok(false);
                    };
                    // Ours: clear it, live or (cleaning up) expired; the fence stays.
                    file.store(&name, &state)?;
                    Ok(held.is_live(SystemTime::now()))
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
        async {
            let Some(mut file) = self.dir.lease_file(name, LockKind::Shared, false).await? else {
                return Ok(None);
            };
            let now = SystemTime::now();
            Ok(file
                .load(name)?
                .and_then(|state| live_info(name, &state, now)))
        }
        .instrument(span)
        .await
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let span = tracing::debug_span!("force_release", lock = %name);
        async {
            let Some(file) = self.exclusive(name, false).await? else {
                return Ok(false);
            };
            let lock = name.clone();
            let freed = self
                .write_section(file, move |file| match file.load(&lock) {
                    Ok(None) => Ok(false),
                    Ok(Some(mut state)) => match state.holder.take() {
                        None => Ok(false),
                        Some(held) => {
                            file.store(&lock, &state)?;
                            Ok(held.is_live(SystemTime::now()))
                        }
                    },
                    Err(LockError::Corrupt { detail, .. }) => {
                        reset_corrupt(file, &lock, &detail)?;
                        Ok(false)
                    }
                    Err(other) => Err(other),
                })
                .await?;
            self.released(name);
            Ok(freed)
        }
        .instrument(span)
        .await
    }

    /// Wakes on a release by this process at once, and on one by another process within
    /// a few milliseconds: it looks at the lease file, without locking it, every 1-2 ms.
    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        let probe = PeekFile::new(self.dir.lease_path(name));
        self.dir
            .changes()
            .wait_or_poll(name, since, max, probe)
            .await;
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
        let span = tracing::debug_span!("list", prefix);
        async {
            let now = SystemTime::now();
            let mut out = Vec::new();
            for path in self.dir.lease_paths()? {
                let opened = self.dir.lease_file_at(path, LockKind::Shared, false).await;
                let result = match opened {
                    // Deleted by hand since the directory was read: nothing to list.
                    Ok(None) => continue,
                    Ok(Some(mut file)) => listed(&mut file, prefix, now),
                    Err(error) => Err(error),
                };
                match result {
                    Ok(info) => out.extend(info),
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
            out.sort_by(|a, b| a.name.cmp(&b.name));
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
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

/// The live lease in `state`, if any, as others may see it.
fn live_info(name: &LockName, state: &State, now: SystemTime) -> Option<LeaseInfo> {
    let held = state.holder.as_ref().filter(|h| h.is_live(now))?;
    Some(held.info(name, state.fence))
}

/// The live lease in a listed file, if its name starts with `prefix`.
fn listed(file: &mut LeaseFile, prefix: &str, now: SystemTime) -> Result<Option<LeaseInfo>> {
    let Some(decoded) = file.load_any()? else {
        return Ok(None);
    };
    let bad = |why: &str| {
        LockError::corrupt(
            BACKEND,
            format!("lease file {} {why}", file.path().display()),
        )
    };
    let name = LockName::new(&decoded.name).map_err(|_| bad("holds an invalid lock name"))?;
    if file.path().file_name() != Some(crate::file_name::lease_file_name(&name).as_ref()) {
        return Err(bad(&format!(
            "holds the lease of {name:?}, whose file has another name"
        )));
    }
    if !name.as_str().starts_with(prefix) {
        return Ok(None);
    }
    Ok(live_info(&name, &decoded.state, now))
}

/// Rewrites a corrupt lease file as free, with a fence no lower than anything it held.
fn reset_corrupt(file: &mut LeaseFile, name: &LockName, detail: &str) -> Result<()> {
    let recovered = record::recover_fence(&file.read_bytes()?).unwrap_or(0);
    let fence = fence_seed_now().max(recovered);
    tracing::warn!(lock = %name, detail, fence, "force_release reset a corrupt lease file");
    file.store(
        name,
        &State {
            fence,
            holder: None,
        },
    )
}
