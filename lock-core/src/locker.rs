//! [`Locker`]: acquire, wait for, and run work under leases from any [`LockBackend`].

use std::borrow::Borrow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::Instrument;

use crate::backend::LockBackend;
use crate::backend_kit::Backoff;
use crate::backend_kit::time::monotonic_now;
use crate::error::{LockError, Result};
use crate::guard::{LeaseWatch, LockGuard};
use crate::heartbeat::Heartbeater;
use crate::holder::{Holder, OwnerToken};
use crate::in_place::InPlace;
use crate::lease::Lease;
use crate::name::{IntoLockName, LockName};
use crate::options::LockOptions;
use crate::telemetry::Labels;

/// The high-level entry point: acquires leases from a backend and hands out
/// [`LockGuard`]s that keep them alive.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant, SystemTime};
/// use lock_core::{LockOptions, Locker};
/// # use lock_core::memory::MemoryBackend;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lock_core::LockError> {
/// # let backend = Arc::new(MemoryBackend::new());
/// let locker = Locker::new(backend);
/// let opts = LockOptions::default().with_ttl(Duration::from_secs(5)).with_wait(Duration::from_secs(1));
///
/// let report = locker
///     .with_lock("nightly-report", &opts, async { "built" })
///     .await?;
/// assert_eq!(report, "built");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Locker {
    backend: Arc<dyn LockBackend>,
    /// Renews the leases of every guard this locker (or a clone) hands out.
    heartbeater: Heartbeater,
}

impl Locker {
    /// A locker over `backend`.
    pub fn new(backend: Arc<dyn LockBackend>) -> Self {
        Self {
            heartbeater: Heartbeater::new(Arc::clone(&backend)),
            backend,
        }
    }

    /// The backend this locker uses.
    pub fn backend(&self) -> &Arc<dyn LockBackend> {
        &self.backend
    }

    /// One attempt: the guard if the lock was free, `None` if someone else holds it.
    ///
    /// Cancel-safe: if this future is dropped while the store is acquiring, the lease is
    /// released as soon as the store answers.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidName`], [`LockError::InvalidTtl`], or any store error.
    pub async fn try_lock(
        &self,
        name: impl IntoLockName,
        opts: impl Borrow<LockOptions>,
    ) -> Result<Option<LockGuard>> {
        let name = name.into_lock_name()?;
        let opts = opts.borrow();
        opts.validate()?;
        let span = tracing::debug_span!("try_lock", lock = %name);
        async {
            let called = monotonic_now();
            let labels = self.labels(&name, opts);
            let holder = Holder::current(opts.label.clone());
            let lease = self.attempt(&name, &holder, opts, &labels).await?;
            match lease {
                Some(lease) => {
                    labels.acquired("try_lock", called);
                    Ok(Some(self.guard(lease, opts)))
                }
                None => {
                    labels.contended("try_lock");
                    Ok(None)
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Waits for the lock: retries with jittered exponential backoff, waking early when the
    /// backend reports a release, until it is acquired or `opts.wait` has passed.
    ///
    /// Transient store errors ([`LockError::is_transient`]) are retried while the wait lasts;
    /// with `wait: None` they are returned at once.
    ///
    /// With a `wait`, it returns within `wait` plus at most [`ATTEMPT_FLOOR`], even when the
    /// store is slow to answer (a busy SQLite database is retried inside the backend): the
    /// attempt still running then is abandoned, and a lease it is granted later is
    /// released.
    ///
    /// Cancel-safe: dropping the future never leaves a lease held beyond its TTL, and releases
    /// one that was being acquired as soon as the store answers.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] when `opts.wait` passed, the last transient error if the store
    /// kept failing until then, or any other error at once.
    pub async fn lock(
        &self,
        name: impl IntoLockName,
        opts: impl Borrow<LockOptions>,
    ) -> Result<LockGuard> {
        let name = name.into_lock_name()?;
        let opts = opts.borrow();
        opts.validate()?;
        let span = tracing::debug_span!("lock", lock = %name);
        self.wait_for(&name, opts).instrument(span).await
    }

    async fn wait_for(&self, name: &LockName, opts: &LockOptions) -> Result<LockGuard> {
        let start = monotonic_now();
        let labels = self.labels(name, opts);
        let mut holder = Holder::current(opts.label.clone());
        let mut backoff = Backoff::new(opts.min_backoff, opts.max_backoff);
        let mut unanswered = Unanswered::default();
        // Processes that have waited long enough go first (see `LockBackend::give_way`).
        self.backend
            .give_way(name, opts.wait.unwrap_or(Duration::MAX))
            .await;
        loop {
            let attempted = monotonic_now();
            // A store can take long to answer (SQLite retries a busy database for its whole
            // busy budget): the attempt may run to the end of the wait, or for
            // ATTEMPT_FLOOR when less is left, and is abandoned then. Abandoning it is safe:
            // a lease granted after that is released as soon as it arrives.
            let answer = match opts.wait {
                None => Some(self.attempt(name, &holder, opts, &labels).await),
                Some(wait) => {
                    let left = wait.saturating_sub(attempted.saturating_duration_since(start));
                    let attempt = self.attempt(name, &holder, opts, &labels);
                    tokio::time::timeout(left.max(ATTEMPT_FLOOR), attempt)
                        .await
                        .ok()
                }
            };
            let Some(answer) = answer else {
                // The store did not answer before the wait ran out. The abandoned attempt
                // finishes in a task of its own, which releases whatever it is granted (see
                // `attempt`).
                unanswered.free_in_background(&self.backend, name, opts.ttl);
                labels.timed_out("lock");
                return Err(LockError::Timeout {
                    name: name.clone(),
                    waited: monotonic_now().saturating_duration_since(start),
                });
            };
            let failure = match answer {
                Ok(Some(lease)) => {
                    unanswered.free_in_background(&self.backend, name, opts.ttl);
                    labels.acquired("lock", start);
                    return Ok(self.guard(lease, opts));
                }
                // Held: perhaps by one of our own unanswered attempts; if so, go again now.
                Ok(None) if unanswered.free(&self.backend, name, opts.ttl).await => continue,
                Ok(None) => {
                    labels.contended("lock");
                    None
                }
                Err(error) if error.is_transient() && opts.wait.is_some() => {
                    tracing::debug!(%error, "transient error while waiting; retrying");
                    // The next attempt gets a new token, so that freeing this one's possible
                    // lease can never free a lease granted to a later attempt.
                    unanswered.push(&mut holder, attempted);
                    Some(error)
                }
                Err(error) => {
                    unanswered.free_in_background(&self.backend, name, opts.ttl);
                    return Err(error);
                }
            };
            let waited = monotonic_now().saturating_duration_since(start);
            let remaining = opts.wait.map(|wait| wait.saturating_sub(waited));
            if remaining == Some(Duration::ZERO) {
                unanswered.free_in_background(&self.backend, name, opts.ttl);
                return Err(failure.unwrap_or_else(|| {
                    labels.timed_out("lock");
                    LockError::Timeout {
                        name: name.clone(),
                        waited,
                    }
                }));
            }
            let capabilities = self.backend.capabilities();
            let delay = if capabilities.queues_waiters || capabilities.watches_every_change {
                // The backend wakes this caller in turn (or on any change), or when the
                // holder's lease may have expired, and bounds each wait itself: no retries
                // on a timer.
                remaining.unwrap_or(QUEUED_WAIT)
            } else {
                backoff.next_delay().min(remaining.unwrap_or(Duration::MAX))
            };
            self.backend.wait_for_change(name, attempted, delay).await;
        }
    }

    /// Runs `work` under the lock: waits for it as [`lock`](Self::lock) does, runs `work`
    /// while the lease is held, then releases it. If the lease is lost first, `work` is
    /// cancelled (dropped) at once and the result is [`LockError::LeaseLost`].
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), plus [`LockError::LeaseLost`].
    pub async fn with_lock<F: Future>(
        &self,
        name: impl IntoLockName,
        opts: impl Borrow<LockOptions>,
        work: F,
    ) -> Result<F::Output> {
        self.with_lock_fn(name, opts, |_| work).await
    }

    /// Like [`with_lock`](Self::with_lock), but builds the work from a [`LeaseWatch`] once the
    /// lease is held, so the work can read its fencing token.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lock_core::{LockOptions, Locker};
    /// # use lock_core::memory::MemoryBackend;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lock_core::LockError> {
    /// # let locker = Locker::new(Arc::new(MemoryBackend::new()));
    /// let fence = locker
    ///     .with_lock_fn("migrations", LockOptions::default(), |lease| async move {
    ///         // write(lease.fence(), ...) so the resource rejects stale holders
    ///         lease.fence()
    ///     })
    ///     .await?;
    /// assert!(fence > 0);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`with_lock`](Self::with_lock).
    pub async fn with_lock_fn<F, Fut>(
        &self,
        name: impl IntoLockName,
        opts: impl Borrow<LockOptions>,
        work: F,
    ) -> Result<Fut::Output>
    where
        F: FnOnce(LeaseWatch) -> Fut,
        Fut: Future,
    {
        let guard = self.lock(name, opts).await?;
        let outcome = guard.run(work(guard.watch())).await;
        let name = guard.name();
        match guard.release().await {
            Ok(true) => {}
            Ok(false) if outcome.is_ok() => {
                tracing::warn!(lock = %name, "the lease was already gone when the finished work released it");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(lock = %name, %error, "releasing after the work failed; the TTL will free the lock");
            }
        }
        outcome
    }

    fn guard(&self, lease: Lease, opts: &LockOptions) -> LockGuard {
        LockGuard::with_heartbeater(&self.heartbeater, Arc::clone(&self.backend), lease, opts)
    }

    /// The metrics labels of calls about `name` with `opts`.
    pub(crate) fn labels(&self, name: &LockName, opts: &LockOptions) -> Labels {
        Labels::new(self.backend.backend_name(), name, opts.lock_name_in_metrics)
    }

    /// One `try_acquire_permit` (`try_acquire` for a limit of 1), polled by the caller and
    /// finished in a task of its own if the caller's future is dropped first (see
    /// [`InPlace`]): a lease granted to nobody is then released at once.
    ///
    /// A transient error may hide a lease the store granted anyway (the answer was lost to a
    /// timeout): that lease is also freed, once, in the background.
    /// [`wait_for`](Self::wait_for) goes further, since it keeps talking to the store.
    async fn attempt(
        &self,
        name: &LockName,
        holder: &Holder,
        opts: &LockOptions,
        labels: &Labels,
    ) -> Result<Option<Lease>> {
        let (ttl, limit) = (opts.ttl, opts.limit);
        let labels = labels.clone();
        let backend = Arc::clone(&self.backend);
        let (name, holder) = (name.clone(), holder.clone());
        let orphans = Arc::clone(&self.backend);
        let acquiring = async move {
            let acquiring = backend.try_acquire_permit(&name, &holder, ttl, limit);
            let result = labels.store_call("try_acquire", acquiring).await;
            if matches!(&result, Err(error) if error.is_transient()) {
                // Best effort, after the caller has its answer.
                let unseen = granted_unseen(&name, holder, ttl);
                tokio::spawn(async move {
                    let _ = backend.release(&unseen).await;
                });
            }
            result
        };
        InPlace::new(acquiring, move |orphan| async move {
            if let Ok(Some(orphan)) = orphan {
                release_orphan(orphans, orphan).await;
            }
        })
        .await
        .map_err(|()| {
            LockError::backend(
                "leaselock",
                "the backend panicked while acquiring; this is a bug in the backend",
            )
        })?
    }
}

/// A lease the store may have granted to `holder` without the answer reaching us: enough for
/// [`LockBackend::release`], which decides by name and token alone.
fn granted_unseen(name: &LockName, holder: Holder, ttl: Duration) -> Lease {
    Lease::new(
        name.clone(),
        holder,
        0,
        SystemTime::UNIX_EPOCH,
        monotonic_now(),
        ttl,
    )
}

/// The least time an attempt of [`Locker::lock`] gets, even when less of the wait is left, so
/// that a short wait still makes one real attempt on a store with a slow round trip.
/// `lock()` thus returns within `wait` plus this, however long the store takes to answer.
pub const ATTEMPT_FLOOR: Duration = Duration::from_millis(250);

/// The wait a `lock()` without a time limit asks of a backend that queues waiters or watches
/// every change (each wait ends much sooner: see
/// [`Capabilities::queues_waiters`](crate::Capabilities)).
const QUEUED_WAIT: Duration = Duration::from_secs(3600);

/// How many unanswered attempts one `lock()` call remembers (see `Unanswered::push`).
const MAX_UNANSWERED: usize = 16;

/// The holders of a `lock()` call's attempts that failed with a transient error, each of
/// which the store may have granted all the same. Such a lease would block the lock, this
/// waiter included, for a whole TTL; while the waiter still sees the lock held, it frees them.
#[derive(Debug, Default)]
struct Unanswered {
    attempts: Vec<(Holder, Instant)>,
}

impl Unanswered {
    /// Remembers `holder`'s attempt made at `at`, and gives `holder` a new token.
    ///
    /// Only the first [`MAX_UNANSWERED`] are kept, so a store that keeps failing costs a
    /// bounded number of releases per round. The first are the likeliest to have been
    /// granted: a paused server runs the requests queued for it in order when it resumes, and
    /// the first one takes the lease. A lease granted to a forgotten attempt expires by
    /// itself.
    fn push(&mut self, holder: &mut Holder, at: Instant) {
        if self.attempts.len() < MAX_UNANSWERED {
            self.attempts.push((holder.clone(), at));
        }
        holder.token = OwnerToken::random();
    }

    /// Frees any lease granted to an unanswered attempt; returns whether one was freed.
    /// Attempts older than the TTL are forgotten: their leases expired anyway.
    async fn free(
        &mut self,
        backend: &Arc<dyn LockBackend>,
        name: &LockName,
        ttl: Duration,
    ) -> bool {
        let now = monotonic_now();
        self.attempts
            .retain(|(_, at)| now.saturating_duration_since(*at) < ttl);
        let mut freed = false;
        for (holder, _) in &self.attempts {
            let lease = granted_unseen(name, holder.clone(), ttl);
            if let Ok(true) = backend.release(&lease).await {
                tracing::debug!(lock = %name, "freed a lease granted to an attempt whose answer was lost");
                freed = true;
            }
        }
        freed
    }

    /// As [`free`](Self::free), once, in the background, for a caller that is done waiting.
    fn free_in_background(self, backend: &Arc<dyn LockBackend>, name: &LockName, ttl: Duration) {
        if self.attempts.is_empty() {
            return;
        }
        let (backend, name) = (Arc::clone(backend), name.clone());
        tokio::spawn(async move {
            let mut this = self;
            this.free(&backend, &name, ttl).await;
        });
    }
}

/// Releases a lease whose acquisition finished after the caller gave up.
async fn release_orphan(backend: Arc<dyn LockBackend>, orphan: Lease) {
    tracing::debug!(lock = %orphan.name, "acquisition finished after the caller gave up; releasing it");
    if let Err(error) = backend.release(&orphan).await {
        tracing::warn!(lock = %orphan.name, %error, "could not release an abandoned lease; its TTL will free it");
    }
}
