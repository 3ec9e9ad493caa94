//! [`LockGuard`]: a held lease, renewed in the background, that reports its loss.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::backend::LockBackend;
use crate::backend_kit::time::monotonic_now;
use crate::error::{LockError, Result};
use crate::heartbeat::Heartbeater;
use crate::holder::Holder;
use crate::lease::Lease;
use crate::name::LockName;
use crate::options::LockOptions;
use crate::release::{self, MinHold};
use crate::telemetry::Labels;

/// Why a lease ended, as [`LockGuard::lost`] and [`LeaseWatch::lost`] report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// The store said the lease is no longer ours: it expired, was taken over, or was
    /// force-released.
    Revoked,
    /// The local deadline passed without a successful heartbeat (the store was unreachable
    /// or this process was paused), so the lease can no longer be trusted.
    DeadlinePassed,
    /// The guard was released or dropped (only a [`LeaseWatch`] can observe this).
    Released,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Held,
    Ended(LossReason),
}

/// State shared by a guard, its watches and the locker's [`Heartbeater`].
#[derive(Debug)]
pub(crate) struct Shared {
    backend: Arc<dyn LockBackend>,
    lease: Mutex<Lease>,
    state: watch::Sender<State>,
    ttl: Duration,
    /// When the guard got the lease (after the store granted it).
    acquired: Instant,
    /// The least time the lease stays in the store, if the options asked for one.
    hold: Option<MinHold>,
    labels: Labels,
}

impl Shared {
    fn with_lease<T>(&self, f: impl FnOnce(&Lease) -> T) -> T {
        f(&self.lease.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A snapshot of the lease as last renewed.
    pub(crate) fn lease(&self) -> Lease {
        self.with_lease(Lease::clone)
    }

    pub(crate) fn name(&self) -> LockName {
        self.with_lease(|l| l.name.clone())
    }

    /// The TTL each renewal asks for.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The labels of this lease's metrics.
    pub(crate) fn labels(&self) -> &Labels {
        &self.labels
    }

    fn deadline(&self) -> Instant {
        self.with_lease(|l| l.deadline)
    }

    fn is_held(&self) -> bool {
        *self.state.borrow() == State::Held && monotonic_now() < self.deadline()
    }

    /// True while the lease should still be renewed: not ended and within its deadline. A
    /// lease found past its deadline is ended here as [`LossReason::DeadlinePassed`].
    pub(crate) fn renewable(&self) -> bool {
        self.check_deadline();
        self.is_held()
    }

    /// Replaces the lease with a renewed one, unless it ended meanwhile; returns whether it
    /// did.
    ///
    /// A renewal that answers after the local deadline comes too late: the lease may already
    /// have been reported lost, and a lost lease never comes back, so it ends here instead.
    pub(crate) fn renew(&self, renewed: Lease) -> bool {
        self.check_deadline();
        if *self.state.borrow() != State::Held {
            return false;
        }
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = renewed;
        true
    }

    /// The store said the lease is no longer ours.
    pub(crate) fn end_revoked(&self) {
        self.end(LossReason::Revoked);
    }

    /// Ends the lease with `reason` unless it already ended.
    fn end(&self, reason: LossReason) {
        let ended = self.state.send_if_modified(|state| {
            if *state == State::Held {
                *state = State::Ended(reason);
                true
            } else {
                false
            }
        });
        if ended {
            self.labels.held(self.acquired);
            match reason {
                LossReason::Revoked => self.labels.lost("revoked"),
                LossReason::DeadlinePassed => self.labels.lost("deadline_passed"),
                LossReason::Released => {}
            }
        }
    }

    /// Frees the lease in the store, at once or when its minimum hold ends, in a call that
    /// finishes in a task of its own if nobody awaits it (see `InPlace`).
    fn release(&self) -> release::Answer {
        release::release(
            Arc::clone(&self.backend),
            self.lease(),
            self.hold,
            self.labels.clone(),
        )
    }

    /// Ends a lease whose local deadline has passed.
    fn check_deadline(&self) {
        if *self.state.borrow() == State::Held && monotonic_now() >= self.deadline() {
            tracing::warn!(lock = %self.name(), "lease deadline passed without a successful heartbeat; reporting it lost");
            self.end(LossReason::DeadlinePassed);
        }
    }

    fn ended(&self) -> Option<LossReason> {
        self.check_deadline();
        match *self.state.borrow() {
            State::Held => None,
            State::Ended(reason) => Some(reason),
        }
    }

    /// Resolves when the lease ends: when it is revoked or released, or when its local
    /// deadline passes without a renewal (this future ends it then).
    fn lost(self: &Arc<Self>) -> impl Future<Output = LossReason> + Send + 'static {
        let mut rx = self.state.subscribe();
        let shared = Arc::clone(self);
        async move {
            loop {
                if let Some(reason) = shared.ended() {
                    return reason;
                }
                // A renewal moves the deadline later: waking at the old one just re-checks.
                let deadline = shared.deadline();
                tokio::select! {
                    changed = rx.changed() => {
                        // `shared` owns the sender, so the channel cannot close under us.
                        debug_assert!(changed.is_ok());
                    }
                    () = tokio::time::sleep_until(deadline.into()) => {}
                }
            }
        }
    }

    fn lease_lost(&self) -> LockError {
        LockError::LeaseLost { name: self.name() }
    }
}

/// A held lease. It is renewed in the background every `ttl / 3` (or the configured
/// interval) by its locker's heartbeat scheduler, which renews leases that fall due together
/// in one store call where the backend can batch. A failed renewal is retried until the local
/// deadline, after which the guard reports the lease lost. A `LeaseLost` answer from the
/// store ends it at once.
///
/// Release it with [`release`](Self::release). Dropping it without releasing releases in the
/// background when a Tokio runtime is running; otherwise the TTL frees it. Under a minimum
/// hold ([`LockOptions::with_hold_at_least`]), both leave the lease in the store until the
/// hold ends (a guard dropped outside a runtime cannot extend its lease: its TTL frees it).
#[must_use = "the lock is released as soon as the guard is dropped; bind it to a variable"]
#[derive(Debug)]
pub struct LockGuard {
    shared: Arc<Shared>,
    /// Keeps the scheduler running while this guard lives, even if its locker is dropped.
    _heartbeater: Heartbeater,
    /// Set by [`release`](Self::release), so that `Drop` does not release again.
    released: bool,
}

impl LockGuard {
    /// Starts guarding `lease`, renewing it to `ttl` every `heartbeat_interval` from a
    /// scheduler of its own on the current Tokio runtime.
    ///
    /// [`Locker`](crate::Locker) does this for you, with one scheduler for all its guards;
    /// use it directly only with a lease you acquired from a backend yourself.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`] when `ttl` or `heartbeat_interval` is out of bounds (see
    /// [`LockOptions::validate`](crate::LockOptions::validate)).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(
        backend: Arc<dyn LockBackend>,
        lease: Lease,
        ttl: Duration,
        heartbeat_interval: Duration,
    ) -> Result<Self> {
        crate::options::validate_heartbeat(ttl, heartbeat_interval)?;
        let heartbeater = Heartbeater::new(Arc::clone(&backend));
        let opts = LockOptions::default()
            .with_ttl(ttl)
            .with_heartbeat_interval(heartbeat_interval);
        Ok(Self::with_heartbeater(&heartbeater, backend, lease, &opts))
    }

    /// Starts guarding `lease`, acquired just now with `opts`, with `heartbeater` renewing
    /// it.
    pub(crate) fn with_heartbeater(
        heartbeater: &Heartbeater,
        backend: Arc<dyn LockBackend>,
        lease: Lease,
        opts: &LockOptions,
    ) -> Self {
        let (state, _) = watch::channel(State::Held);
        let acquired = monotonic_now();
        let labels = Labels::new(
            backend.backend_name(),
            &lease.name,
            opts.lock_name_in_metrics,
        );
        let shared = Arc::new(Shared {
            backend,
            lease: Mutex::new(lease),
            state,
            ttl: opts.ttl,
            acquired,
            hold: opts
                .hold_at_least
                .map(|d| MinHold::new(acquired, d, opts.ttl)),
            labels,
        });
        heartbeater.track(&shared, opts.effective_heartbeat_interval());
        Self {
            shared,
            _heartbeater: heartbeater.clone(),
            released: false,
        }
    }

    /// The fencing token of this lease. Pass it to the resource you protect.
    pub fn fence(&self) -> u64 {
        self.shared.with_lease(|l| l.fence)
    }

    /// The lock name.
    pub fn name(&self) -> LockName {
        self.shared.name()
    }

    /// The holder, including the owner token.
    pub fn holder(&self) -> Holder {
        self.shared.with_lease(|l| l.holder.clone())
    }

    /// A snapshot of the lease as last renewed.
    pub fn lease(&self) -> Lease {
        self.shared.lease()
    }

    /// When the store will expire the lease unless it is heartbeated again.
    pub fn expires_at(&self) -> SystemTime {
        self.shared.with_lease(|l| l.expires_at)
    }

    /// The local deadline past which this holder stops trusting the lease.
    pub fn deadline(&self) -> Instant {
        self.shared.deadline()
    }

    /// True while the lease has not been lost and its local deadline has not passed.
    pub fn is_held(&self) -> bool {
        self.shared.is_held()
    }

    /// Why the lease ended, if it has.
    pub fn loss_reason(&self) -> Option<LossReason> {
        self.shared.ended()
    }

    /// A future that resolves when the lease is lost. It owns what it needs, so it can be
    /// moved into `tokio::select!` or a spawned task.
    pub fn lost(&self) -> impl Future<Output = LossReason> + Send + 'static {
        self.shared.lost()
    }

    /// A cloneable handle to watch this lease from other tasks.
    pub fn watch(&self) -> LeaseWatch {
        LeaseWatch {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs `work` while the lease is held. If the lease is lost first, `work` is dropped
    /// (cancelled) and the result is [`LockError::LeaseLost`]. The deadline is checked before
    /// every poll of `work`, so a process resumed after a pause longer than the TTL does no
    /// further work under the lock.
    ///
    /// # Errors
    ///
    /// [`LockError::LeaseLost`] if the lease was lost before `work` finished.
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output> {
        let shared = &self.shared;
        let lost = shared.lost();
        let mut work = std::pin::pin!(work);
        let while_held = std::future::poll_fn(|cx| {
            if !shared.is_held() {
                return Poll::Ready(Err(shared.lease_lost()));
            }
            work.as_mut().poll(cx).map(Ok)
        });
        tokio::select! {
            biased;
            _ = lost => Err(shared.lease_lost()),
            out = while_held => out,
        }
    }

    /// Stops renewing the lease and frees it in the store. Returns `true` if it was still
    /// held, `false` if it had already been lost.
    ///
    /// Under a minimum hold ([`LockOptions::with_hold_at_least`]) that has not ended yet, it
    /// returns at once all the same: the lease is renewed one last time, to outlive the
    /// hold, and released in the background when the hold ends (waiters wake then). `true`
    /// then means the store keeps it until then. If this process ends first, the store's
    /// TTL frees it a little after the hold ends (a tenth of the TTL, at most a second).
    ///
    /// # Errors
    ///
    /// [`LockError::Unavailable`] when the store cannot be reached; the TTL then frees the
    /// lease.
    ///
    /// Cancel-safe: the store call runs in this future and, if the future is dropped first
    /// (in a `select!` or a timeout), finishes in a task of its own, so the lease is still
    /// freed.
    pub async fn release(mut self) -> Result<bool> {
        self.released = true;
        // Ended first, so the scheduler starts no renewal that would race the release (one
        // already in flight is harmless: the store renews only a lease it still holds).
        self.shared.end(LossReason::Released);
        release::answer(self.shared.release()).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let revoked = self.shared.ended() == Some(LossReason::Revoked);
        self.shared.end(LossReason::Released);
        if revoked {
            return; // nothing of ours left in the store
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let _ = runtime;
            // Nobody waits for the answer: a failure is logged by the release task.
            drop(self.shared.release());
        }
    }
}

/// A cloneable view of a [`LockGuard`]'s lease for other tasks: is it still held, and a
/// future that resolves when it is lost or released.
#[derive(Clone, Debug)]
pub struct LeaseWatch {
    shared: Arc<Shared>,
}

impl LeaseWatch {
    /// True while the lease has not been lost or released and its deadline has not passed.
    pub fn is_held(&self) -> bool {
        self.shared.is_held()
    }

    /// The fencing token.
    pub fn fence(&self) -> u64 {
        self.shared.with_lease(|l| l.fence)
    }

    /// The lock name.
    pub fn name(&self) -> LockName {
        self.shared.name()
    }

    /// Why the lease ended, if it has: lost, or [`LossReason::Released`] once the guard was
    /// released or dropped.
    pub fn loss_reason(&self) -> Option<LossReason> {
        self.shared.ended()
    }

    /// Resolves when the lease is lost, or with [`LossReason::Released`] when the guard is
    /// released or dropped.
    pub fn lost(&self) -> impl Future<Output = LossReason> + Send + 'static {
        self.shared.lost()
    }
}
