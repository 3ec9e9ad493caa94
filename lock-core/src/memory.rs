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
    slots: Mutex<HashMap<LockName, Slot>>,
    released: ReleaseLog,
}

/// One name's state: its last fence (kept forever) and its lease, if any.
#[derive(Debug, Default)]
struct Slot {
    fence: u64,
    lease: Option<Stored>,
}

#[derive(Debug)]
struct Stored {
    token: OwnerToken,
    label: String,
    pid: u32,
    host: String,
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

    fn with_slots<T>(&self, f: impl FnOnce(&mut HashMap<LockName, Slot>) -> T) -> T {
        f(&mut self
            .inner
            .slots
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
        validate_ttl(ttl)?;
        let now = monotonic_now();
        Ok(self.with_slots(|slots| {
            let slot = slots.entry(name.clone()).or_default();
            if slot.lease.as_ref().is_some_and(|l| l.is_live(now)) {
                return None;
            }
            slot.fence += 1;
            let stored = Stored {
                token: holder.token,
                label: holder.label.clone(),
                pid: holder.pid,
                host: holder.host.clone(),
                acquired_at: SystemTime::now(),
                expires: now + ttl,
            };
            let expires_at = stored.expires_at(now);
            slot.lease = Some(stored);
            Some(Lease::new(
                name.clone(),
                holder.clone(),
                slot.fence,
                expires_at,
                now,
                ttl,
            ))
        }))
    }

    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_ttl(ttl)?;
        let now = monotonic_now();
        self.with_slots(|slots| {
            let stored = slots
                .get_mut(&lease.name)
                .and_then(|slot| slot.lease.as_mut())
                .filter(|s| s.token == lease.holder.token && s.is_live(now))
                .ok_or_else(|| LockError::LeaseLost {
                    name: lease.name.clone(),
                })?;
            stored.expires = now + ttl;
            Ok(lease.renewed(stored.expires_at(now), now, ttl))
        })
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        let now = monotonic_now();
        let freed = self.with_slots(|slots| {
            let Some(slot) = slots.get_mut(&lease.name) else {
                return false;
            };
            let ours = slot
                .lease
                .as_ref()
                .is_some_and(|s| s.token == lease.holder.token);
            if !ours {
                return false;
            }
            slot.lease.take().is_some_and(|s| s.is_live(now))
        });
        if freed {
            self.inner.released.record(&lease.name);
        }
        Ok(freed)
    }

    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        let now = monotonic_now();
        Ok(self.with_slots(|slots| {
            let slot = slots.get(name)?;
            let s = slot.lease.as_ref().filter(|s| s.is_live(now))?;
            Some(info(name, slot.fence, s, now))
        }))
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let now = monotonic_now();
        let freed = self.with_slots(|slots| {
            slots
                .get_mut(name)
                .and_then(|slot| slot.lease.take())
                .is_some_and(|s| s.is_live(now))
        });
        self.inner.released.record(name);
        Ok(freed)
    }

    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        self.inner.released.wait(name, since, max).await;
    }

    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
        let now = monotonic_now();
        let mut out = self.with_slots(|slots| {
            slots
                .iter()
                .filter(|(name, _)| name.as_str().starts_with(prefix))
                .filter_map(|(name, slot)| {
                    let s = slot.lease.as_ref().filter(|s| s.is_live(now))?;
                    Some(info(name, slot.fence, s, now))
                })
                .collect::<Vec<_>>()
        });
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_notifies_release(true)
            .with_list(true)
    }
}

fn info(name: &LockName, fence: u64, s: &Stored, now: Instant) -> LeaseInfo {
    LeaseInfo::new(
        name.clone(),
        s.label.clone(),
        s.pid,
        s.host.clone(),
        fence,
        s.acquired_at,
        s.expires_at(now),
    )
}
