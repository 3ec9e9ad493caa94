//! The [`LockBackend`] trait every store implements, and its [`Capabilities`].

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::{LockError, Result};
use crate::holder::Holder;
use crate::lease::{Lease, LeaseInfo};
use crate::name::LockName;

/// A store of TTL leases: the one trait every backend implements.
///
/// Most code uses it through [`Locker`](crate::Locker), which adds waiting, background
/// heartbeats and loss detection. Implement it to add a store.
///
/// # Contract
///
/// Every implementation must behave identically; the `lock-conformance` suite checks it.
///
/// - **One live lease per name.** [`try_acquire`](Self::try_acquire) is one atomic step on
///   the store: it succeeds only if the name is free or its lease has expired, and of any
///   number of concurrent contenders (tasks, processes, hosts) at most one wins.
///   Contention is `Ok(None)`, not an error. It is not re-entrant: a second acquire with the
///   same holder while the lease is live also gets `Ok(None)`.
/// - **TTL.** A lease not heartbeated for `ttl` is expired and may be taken over; it is never
///   free before. TTLs outside [`MIN_TTL`](crate::MIN_TTL)..=[`MAX_TTL`](crate::MAX_TTL) are
///   rejected with [`LockError::InvalidTtl`] before the store is touched.
/// - **Clocks.** The store's clock decides expiry, never the caller's: Redis and PostgreSQL
///   judge by the server's wall clock (a step of the server's clock moves every lease with
///   it; fences protect resources from what that lets through); SQLite and the lock
///   directory, whose users all run on one host, judge by a clock every process of the host
///   shares and that wall-clock steps do not move (`CLOCK_BOOTTIME`, stored with the host's
///   boot id: see [`HostClock`](crate::backend_kit::clock::HostClock)). Times shown to
///   people ([`LeaseInfo::expires_at`], [`Lease::expires_at`]) are wall-clock times derived
///   from it. The returned [`Lease::deadline`] is on the caller's monotonic clock: the moment
///   the request was sent, plus `ttl`, minus a margin
///   ([`local_deadline`](crate::backend_kit::time::local_deadline)). Past it, the holder must
///   assume the lease is gone.
/// - **Ownership.** The holder's [`OwnerToken`](crate::OwnerToken) is the only authority.
///   [`heartbeat`](Self::heartbeat) and [`release`](Self::release) act only if the stored
///   lease carries the same token; they never touch another holder's lease.
/// - **Fencing.** [`Lease::fence`] strictly increases across every successful acquisition of a
///   name in the store — through release, expiry, takeover and
///   [`force_release`](Self::force_release) — and is never reused for the life of the store,
///   also when the store loses its latest writes (a restart from an older snapshot, a
///   failover to a replica that lagged, a power loss, a restored backup). Each grant gives
///   `max(counter + 1, store clock in microseconds)` in the same atomic step
///   ([`next_fence`](crate::backend_kit::fence::next_fence)), so a counter that went back is
///   overtaken by the clock. The guarantee holds as long as the store's wall clock does not
///   go back past the lost fences and fewer than a million grants a second are made per
///   name; when the clock steps back, fences still rise by the counter, and protection
///   against lost writes waits for the clock to catch up. Fences stay below 2^53 and need
///   not be contiguous.
/// - **Semaphores.** [`try_acquire_permit`](Self::try_acquire_permit) with a `limit` of `n`
///   allows up to `n` live leases of a name, each with its own token and fence, under the
///   same expiry, takeover and fencing rules; `try_acquire` is `limit` 1. A name is used
///   with one limit at a time: asking with another limit than the live holders' is
///   [`LockError::Config`] naming both.
/// - **Errors.** Bad input and unreadable store data are typed errors, never a panic and never
///   a false `Some(lease)`. An unreachable store gives [`LockError::Unavailable`] within a
///   bounded time, and the same backend value recovers when the store returns.
#[async_trait]
pub trait LockBackend: Debug + Send + Sync + 'static {
    /// Takes the lease on `name` for `holder` if it is free or expired.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`] for a bad `ttl`, [`LockError::Unavailable`] when the store
    /// cannot be reached, [`LockError::Corrupt`] when the stored lease cannot be read.
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>>;

    /// Takes one of `limit` permits of `name` for `holder`: succeeds if fewer than `limit`
    /// live leases of `name` exist (counting expired ones as free), in one atomic step.
    /// `Ok(None)` when all `limit` permits are held, and when `holder`'s token already holds
    /// one (a token holds at most one permit of a name). With `limit` 1 this is exactly
    /// [`try_acquire`](Self::try_acquire).
    ///
    /// The default supports only `limit` 1; backends that store permits override it (and
    /// say so in [`Capabilities::semaphores`]).
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] when `limit` is 0 or above
    /// [`MAX_PERMITS`](crate::MAX_PERMITS), or differs from the limit of the live holders
    /// of `name`; [`LockError::Unsupported`] for a `limit` above 1 on a backend without
    /// semaphores; otherwise as [`try_acquire`](Self::try_acquire).
    async fn try_acquire_permit(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
    ) -> Result<Option<Lease>> {
        match crate::backend_kit::permits::validate_limit(limit)? {
            1 => self.try_acquire(name, holder, ttl).await,
            _ => Err(LockError::Unsupported {
                backend: self.backend_name(),
                operation: "semaphores (a limit above 1)",
            }),
        }
    }

    /// Extends `lease` to expire `ttl` from now, if the store still holds it for this token and
    /// it has not expired. Returns the renewed lease (same fence, new expiry and deadline).
    ///
    /// # Errors
    ///
    /// [`LockError::LeaseLost`] if the lease expired, was taken over or was force-released;
    /// otherwise as [`try_acquire`](Self::try_acquire).
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Compare-and-delete: frees the lease if the store still holds it for this token.
    /// Returns `true` if it was held and is now free, `false` if it had already been lost.
    /// Idempotent.
    ///
    /// It must decide by `lease.name` and `lease.holder.token` alone: when an acquisition's
    /// answer is lost (a timeout on a slow or paused store), [`Locker`](crate::Locker) frees
    /// the lease the store may have granted anyway with a `Lease` that carries only those.
    ///
    /// # Errors
    ///
    /// [`LockError::Unavailable`] when the store cannot be reached.
    async fn release(&self, lease: &Lease) -> Result<bool>;

    /// The live lease on `name`, if any. Expired leases are reported as `None`. For a
    /// semaphore with several live permits, the one acquired last (highest fence); see
    /// [`inspect_all`](Self::inspect_all).
    ///
    /// # Errors
    ///
    /// [`LockError::Unavailable`], or [`LockError::Corrupt`] when the record cannot be read.
    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>>;

    /// Every live lease of `name` (one for a lock, up to the limit for a semaphore), by
    /// fence. The default returns [`inspect`](Self::inspect)'s.
    ///
    /// # Errors
    ///
    /// As [`inspect`](Self::inspect).
    async fn inspect_all(&self, name: &LockName) -> Result<Vec<LeaseInfo>> {
        Ok(self.inspect(name).await?.into_iter().collect())
    }

    /// Operator action for a stuck lock: frees `name` whoever holds it (every permit of a
    /// semaphore), and also clears a corrupt record. Returns `true` if a live lease was removed. The next acquisition still
    /// gets a higher fence.
    ///
    /// # Errors
    ///
    /// [`LockError::Unavailable`] when the store cannot be reached.
    async fn force_release(&self, name: &LockName) -> Result<bool>;

    /// Waits up to `max` for the lease on `name` to change, for a caller whose last attempt to
    /// acquire it started at `since` (on [`monotonic_now`](crate::backend_kit::time::monotonic_now)'s
    /// clock; pass `monotonic_now()` when there was no attempt).
    ///
    /// Backends that can be notified return as soon as `name` is released, and at once if
    /// they saw it released at or after `since`, so a release between the caller's attempt
    /// and its wait is not slept through ([`ReleaseLog`](crate::backend_kit::ReleaseLog)
    /// implements this). The default sleeps `max`. It is a hint: returning early is always
    /// allowed, and [`Locker::lock`](crate::Locker::lock) simply tries again.
    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        let _ = (name, since);
        tokio::time::sleep(max).await;
    }

    /// Lets callers that have waited for `name` longer go first, for at most `max`: called
    /// by [`Locker::lock`](crate::Locker::lock) (not `try_lock`) before its first attempt.
    ///
    /// A backend whose releases can be taken back by the releaser before a woken waiter
    /// gets to them (a process looping on one name) waits here while a waiter has waited
    /// long enough, so that processes take the lock in turns
    /// ([`ReleaseLog::give_way`](crate::backend_kit::ReleaseLog::give_way) implements this
    /// for single-host stores: 2 ms, then at most 20 ms of giving way). Redis, which hands
    /// a released lease to the next queued waiter, needs none of it. It is a hint: returning
    /// early is always allowed, and it never changes who may hold the lease. The default
    /// returns at once.
    async fn give_way(&self, name: &LockName, max: Duration) {
        let _ = (name, max);
    }

    /// Live leases whose names start with `prefix` (all of them for `""`), sorted by name
    /// and then fence; every permit of a semaphore is listed.
    ///
    /// # Errors
    ///
    /// [`LockError::Unsupported`] by default; [`LockError::Unavailable`] when the store
    /// cannot be reached.
    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
        let _ = prefix;
        Err(LockError::Unsupported {
            backend: "custom",
            operation: "listing leases",
        })
    }

    /// Heartbeats many leases at once. Backends that can batch (one transaction, one
    /// pipeline) override it; the default calls [`heartbeat`](Self::heartbeat) for each.
    /// Results are in the order of `leases`.
    async fn heartbeat_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Lease>> {
        let mut out = Vec::with_capacity(leases.len());
        for lease in leases {
            out.push(self.heartbeat(lease, ttl).await);
        }
        out
    }

    /// What this backend can and cannot do.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// The backend's name, as in its errors and metrics (`"sqlite"`, `"redis"`, ...).
    fn backend_name(&self) -> &'static str {
        "custom"
    }
}

/// Optional abilities of a backend. The conformance suite reads these to skip only what a
/// backend truly cannot do, and says so in its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`LockBackend::wait_for_change`] wakes as soon as a lease is released, instead of
    /// sleeping its whole budget.
    pub notifies_release: bool,
    /// Processes on different hosts can share the store (false for a local directory or a
    /// local SQLite file).
    pub shared_across_hosts: bool,
    /// [`LockBackend::list`] is implemented.
    pub list: bool,
    /// [`LockBackend::heartbeat_many`] does one store round trip for the whole batch.
    pub batched_heartbeat: bool,
    /// [`LockBackend::try_acquire_permit`] takes limits above 1.
    pub semaphores: bool,
    /// The store queues waiting clients and hands a freed lease to one of them in turn
    /// (no thundering herd): [`LockBackend::wait_for_change`] returns when this caller's
    /// turn comes, when what holds the name may have expired, or after a bound the backend
    /// sets itself. [`Locker::lock`](crate::Locker::lock) then waits in it for the rest of
    /// its wait instead of retrying on its backoff, which would add an attempt per waiter
    /// per backoff period.
    pub queues_waiters: bool,
    /// [`LockBackend::wait_for_change`] returns whenever the name may have become free by
    /// any means (a release, an expiry, a holder's process exiting), not only on releases:
    /// [`Locker::lock`](crate::Locker::lock) then waits in it for the rest of its wait
    /// instead of retrying on its backoff. The single-host stores do this by sleeping in the
    /// kernel: waiting costs no CPU.
    pub watches_every_change: bool,
}

impl Capabilities {
    /// No optional abilities.
    pub const fn none() -> Self {
        Self {
            notifies_release: false,
            shared_across_hosts: false,
            list: false,
            batched_heartbeat: false,
            semaphores: false,
            queues_waiters: false,
            watches_every_change: false,
        }
    }

    /// With [`notifies_release`](Self::notifies_release) set as given.
    pub const fn with_notifies_release(mut self, yes: bool) -> Self {
        self.notifies_release = yes;
        self
    }

    /// With [`shared_across_hosts`](Self::shared_across_hosts) set as given.
    pub const fn with_shared_across_hosts(mut self, yes: bool) -> Self {
        self.shared_across_hosts = yes;
        self
    }

    /// With [`list`](Self::list) set as given.
    pub const fn with_list(mut self, yes: bool) -> Self {
        self.list = yes;
        self
    }

    /// With [`batched_heartbeat`](Self::batched_heartbeat) set as given.
    pub const fn with_batched_heartbeat(mut self, yes: bool) -> Self {
        self.batched_heartbeat = yes;
        self
    }

    /// With [`semaphores`](Self::semaphores) set as given.
    pub const fn with_semaphores(mut self, yes: bool) -> Self {
        self.semaphores = yes;
        self
    }

    /// With [`queues_waiters`](Self::queues_waiters) set as given.
    pub const fn with_queues_waiters(mut self, yes: bool) -> Self {
        self.queues_waiters = yes;
        self
    }

    /// With [`watches_every_change`](Self::watches_every_change) set as given.
    pub const fn with_watches_every_change(mut self, yes: bool) -> Self {
        self.watches_every_change = yes;
        self
    }
}

macro_rules! forward_backend {
    ($ty:ty) => {
        #[async_trait]
        impl<T: LockBackend + ?Sized> LockBackend for $ty {
            async fn try_acquire(
                &self,
                name: &LockName,
                holder: &Holder,
                ttl: Duration,
            ) -> Result<Option<Lease>> {
                (**self).try_acquire(name, holder, ttl).await
            }

            async fn try_acquire_permit(
                &self,
                name: &LockName,
                holder: &Holder,
                ttl: Duration,
                limit: u32,
            ) -> Result<Option<Lease>> {
                (**self).try_acquire_permit(name, holder, ttl, limit).await
            }

            async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
                (**self).heartbeat(lease, ttl).await
            }

            async fn release(&self, lease: &Lease) -> Result<bool> {
                (**self).release(lease).await
            }

            async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
                (**self).inspect(name).await
            }

            async fn inspect_all(&self, name: &LockName) -> Result<Vec<LeaseInfo>> {
                (**self).inspect_all(name).await
            }

            async fn force_release(&self, name: &LockName) -> Result<bool> {
                (**self).force_release(name).await
            }

            async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
                (**self).wait_for_change(name, since, max).await
            }

            async fn give_way(&self, name: &LockName, max: Duration) {
                (**self).give_way(name, max).await
            }

            async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
                (**self).list(prefix).await
            }

            async fn heartbeat_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Lease>> {
                (**self).heartbeat_many(leases, ttl).await
            }

            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }

            fn backend_name(&self) -> &'static str {
                (**self).backend_name()
            }
        }
    };
}

forward_backend!(Arc<T>);
forward_backend!(Box<T>);
