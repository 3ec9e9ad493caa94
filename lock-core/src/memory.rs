//! [`MemoryBackend`]: leases in this process's memory.
//!
//! For tests, examples, and "at most one task at a time" inside a single process. It follows
//! the full [`LockBackend`] contract (the conformance suite runs against it), but nothing is
//! shared with other processes and nothing survives a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use crate::backend::{Capabilities, LockBackend};
use crate::backend_kit::ReleaseLog;
use crate::backend_kit::fence::{micros_since_epoch, next_fence};
use crate::backend_kit::permits::{limit_mismatch, validate_limit};
use crate::backend_kit::time::{monotonic_now, validate_ttl};
use crate::error::{LockError, Result};
use crate::holder::{Holder, OwnerToken};
use crate::lease::{Lease, LeaseInfo};
use crate::name::LockName;

/// Leases kept in memory; clones share the same store.
///
/// ```
/// use std::time::Duration;
/// use lock_core::{Holder, LockBackend, LockName, memory::MemoryBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lock_core::LockError> {
/// let store = MemoryBackend::new();
/// let name = LockName::new("job")?;
/// let lease = store.try_acquire(&name, &Holder::current("a"), Duration::from_secs(5)).await?;
/// assert!(lease.is_some());
/// assert!(store.try_acquire(&name, &Holder::current("b"), Duration::from_secs(5)).await?.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    names: Mutex<HashMap<LockName, Permits>>,
    released: ReleaseLog,
}

/// One name's state: its last fence (kept forever) and its live or expired permits (one for
/// a lock, up to the limit for a semaphore).
#[derive(Clone, Debug, Default)]
struct Permits {
    fence: u64,
    held: Vec<Stored>,
}

impl Permits {
    /// Drops expired permits; returns the limit the live ones were taken with.
    fn live_limit(&mut self, now: Instant) -> Option<u32> {
        self.held.retain(|s| s.is_live(now));
        self.held.first().map(|s| s.limit)
    }
}

#[derive(Clone, Debug)]
struct Stored {
    token: OwnerToken,
    label: String,
    pid: u32,
    host: String,
    fence: u64,
    limit: u32,
    acquired_at: SystemTime,
    expires: Instant,
}

impl Stored {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires
    }

    fn expires_at(&self, now: Instant) -> SystemTime {
        SystemTime::now() + self.expires.saturating_duration_since(now)
    }
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The whole store as it is now, for [`restore`](Self::restore): a test can then make
    /// the store lose every write made since, as a power loss or a restored backup would.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.with_names(|names| names.clone()))
    }

    /// Puts the store back to `snapshot`, losing every write made since (the fence counters
    /// go back too: the hybrid fences keep the next grant above every fence handed out).
    pub fn restore(&self, snapshot: &Snapshot) {
        self.with_names(|names| *names = snapshot.0.clone());
    }

    fn with_names<T>(&self, f: impl FnOnce(&mut HashMap<LockName, Permits>) -> T) -> T {
        f(&mut self
            .inner
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }
}

#[async_trait]
impl LockBackend for MemoryBackend {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.try_acquire_permit(name, holder, ttl, 1).await
    }

    async fn try_acquire_permit(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
    ) -> Result<Option<Lease>> {
        validate_ttl(ttl)?;
        validate_limit(limit)?;
        let now = monotonic_now();
        self.with_names(|names| {
            let permits = names.entry(name.clone()).or_default();
            match permits.live_limit(now) {
                Some(held) if held != limit => {
                    return Err(limit_mismatch(BACKEND, name, held, limit));
                }
                _ => {}
            }
            // Not re-entrant: a token holds at most one permit of a name.
            let again = permits.held.iter().any(|s| s.token == holder.token);
            if again || permits.held.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
                return Ok(None);
            }
            let fence = next_fence(permits.fence, micros_since_epoch(SystemTime::now()))
                .ok_or_else(|| {
                    LockError::corrupt(BACKEND, format!("the fence of {name:?} is exhausted"))
                })?;
            permits.fence = fence;
            let stored = Stored {
                token: holder.token,
                label: holder.label.clone(),
                pid: holder.pid,
                host: holder.host.clone(),
                fence,
                limit,
                acquired_at: SystemTime::now(),
                expires: now + ttl,
            };
            let expires_at = stored.expires_at(now);
            permits.held.push(stored);
            Ok(Some(Lease::new(
                name.clone(),
                holder.clone(),
                fence,
                expires_at,
                now,
                ttl,
            )))
        })
    }

    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_ttl(ttl)?;
        let now = monotonic_now();
        self.with_names(|names| {
            let stored = names
                .get_mut(&lease.name)
                .and_then(|p| p.held.iter_mut().find(|s| s.token == lease.holder.token))
                .filter(|s| s.is_live(now))
                .ok_or_else(|| LockError::LeaseLost {
                    name: lease.name.clone(),
                })?;
            stored.expires = now + ttl;
            Ok(lease.renewed(stored.expires_at(now), now, ttl))
        })
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        let now = monotonic_now();
        let freed = self.with_names(|names| {
            let Some(permits) = names.get_mut(&lease.name) else {
                return false;
            };
            let Some(i) = permits
                .held
                .iter()
                .position(|s| s.token == lease.holder.token)
            else {
                return false;
            };
            permits.held.swap_remove(i).is_live(now)
        });
        if freed {
            self.inner.released.record(&lease.name);
        }
        Ok(freed)
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        Ok(self.inspect_all(name).await?.pop())
    }

    async fn inspect_all(&self, name: &LockName) -> Result<Vec<LeaseInfo>> {
        let now = monotonic_now();
        Ok(self.with_names(|names| {
            names
                .get(name)
                .map(|permits| infos(name, permits, now))
                .unwrap_or_default()
        }))
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let now = monotonic_now();
        let freed = self.with_names(|names| {
            names.get_mut(name).is_some_and(|permits| {
                let live = permits.held.iter().any(|s| s.is_live(now));
                permits.held.clear();
                live
            })
        });
        self.inner.released.record(name);
        Ok(freed)
    }

    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        self.inner.released.wait(name, since, max).await;
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
        let now = monotonic_now();
        let mut out = self.with_names(|names| {
            names
                .iter()
                .filter(|(name, _)| name.as_str().starts_with(prefix))
                .flat_map(|(name, permits)| infos(name, permits, now))
                .collect::<Vec<_>>()
        });
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.fence.cmp(&b.fence)));
        Ok(out)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_notifies_release(true)
            .with_list(true)
            .with_semaphores(true)
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

/// The backend name in errors.
const BACKEND: &str = "memory";

/// A copy of a [`MemoryBackend`]'s state (see [`MemoryBackend::snapshot`]).
#[derive(Clone, Debug)]
pub struct Snapshot(HashMap<LockName, Permits>);

/// The live permits of `name`, by fence.
fn infos(name: &LockName, permits: &Permits, now: Instant) -> Vec<LeaseInfo> {
    let mut out: Vec<LeaseInfo> = permits
        .held
        .iter()
        .filter(|s| s.is_live(now))
        .map(|s| info(name, s, now))
        .collect();
    out.sort_by_key(|i| i.fence);
    out
}

fn info(name: &LockName, s: &Stored, now: Instant) -> LeaseInfo {
    LeaseInfo::new(
        name.clone(),
        s.label.clone(),
        s.pid,
        s.host.clone(),
        s.fence,
        s.acquired_at,
        s.expires_at(now),
    )
    .with_limit(s.limit)
}
