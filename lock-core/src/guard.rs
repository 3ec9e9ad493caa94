//! [`LockGuard`]: a held lease that heartbeats itself in the background and reports loss.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::LockBackend;
use crate::backoff::Backoff;
use crate::error::{LockError, Result};
use crate::holder::Holder;
use crate::lease::Lease;
use crate::name::LockName;
use crate::time::{local_deadline, monotonic_now};

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

/// State shared by a guard, its heartbeat task and its watches.
#[derive(Debug)]
struct Shared {
    backend: Arc<dyn LockBackend>,
    lease: Mutex<Lease>,
    state: watch::Sender<State>,
    ttl: Duration,
}

impl Shared {
    fn lease(&self) -> Lease {
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn deadline(&self) -> Instant {
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deadline
    }

    fn is_held(&self) -> bool {
        *self.state.borrow() == State::Held && monotonic_now() < self.deadline()
    }

    /// Ends the lease with `reason` unless it already ended.
    fn end(&self, reason: LossReason) {
        self.state.send_if_modified(|state| {
            if *state == State::Held {
                *state = State::Ended(reason);
                true
            } else {
                false
            }
        });
    }

    fn ended(&self) -> Option<LossReason> {
        match *self.state.borrow() {
            State::Held => None,
            State::Ended(reason) => Some(reason),
        }
    }

    /// Resolves when the lease ends.
    fn lost(self: &Arc<Self>) -> impl Future<Output = LossReason> + Send + 'static {
        let mut rx = self.state.subscribe();
        // The future owns a handle on the sender, so `changed` can never see it closed.
        let keep_alive = Arc::clone(self);
        async move {
            let _keep_alive = keep_alive;
            loop {
                if let State::Ended(reason) = *rx.borrow_and_update() {
                    return reason;
                }
                if rx.changed().await.is_err() {
                    return LossReason::Released;
                }
            }
        }
    }

    fn lease_lost(&self) -> LockError {
        LockError::LeaseLost {
            name: self
                .lease
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .name
                .clone(),
        }
    }
}

/// A held lease. It heartbeats in the background every `ttl / 3` (or the configured
/// interval); a failed heartbeat is retried until the local deadline, after which the guard
/// reports the lease lost. A `LeaseLost` answer from the store ends it at once.
///
/// Release it with [`release`](Self::release). Dropping it without releasing releases in the
/// background when a Tokio runtime is running; otherwise the TTL frees it.
#[must_use = "the lock is released as soon as the guard is dropped; bind it to a variable"]
#[derive(Debug)]
pub struct LockGuard {
    shared: Arc<Shared>,
    heartbeat: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Starts guarding `lease`: spawns the heartbeat task on the current Tokio runtime.
    ///
    /// [`Locker`](crate::Locker) calls this for you; use it directly only with a lease you
    /// acquired from a backend yourself.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn start(
        backend: Arc<dyn LockBackend>,
        lease: Lease,
        ttl: Duration,
        heartbeat_interval: Duration,
    ) -> Self {
        let (state, _) = watch::channel(State::Held);
        let shared = Arc::new(Shared {
            backend,
            lease: Mutex::new(lease),
            state,
            ttl,
        });
        let task = tokio::spawn(heartbeat_loop(Arc::clone(&shared), heartbeat_interval));
        Self {
            shared,
            heartbeat: Some(task),
        }
    }

    /// The fencing token of this lease. Pass it to the resource you protect.
    pub fn fence(&self) -> u64 {
        self.shared
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fence
    }

    /// The lock name.
    pub fn name(&self) -> LockName {
        self.shared
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .name
            .clone()
    }

    /// The holder, including the owner token.
    pub fn holder(&self) -> Holder {
        self.shared
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .holder
            .clone()
    }

    /// A snapshot of the lease as last renewed.
    pub fn lease(&self) -> Lease {
        self.shared.lease()
    }

    /// When the store will expire the lease unless it is heartbeated again.
    pub fn expires_at(&self) -> SystemTime {
        self.shared
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .expires_at
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

    /// Stops heartbeating and frees the lease in the store. Returns `true` if it was still
    /// held, `false` if it had already been lost.
    ///
    /// # Errors
    ///
    /// [`LockError::Unavailable`] when the store cannot be reached; the TTL then frees the
    /// lease.
    pub async fn release(mut self) -> Result<bool> {
        self.stop_heartbeat();
        let lease = self.shared.lease();
        let result = self.shared.backend.release(&lease).await;
        self.shared.end(LossReason::Released);
        result
    }

    fn stop_heartbeat(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(task) = self.heartbeat.take() else {
            return; // released explicitly
        };
        task.abort();
        let revoked = self.shared.ended() == Some(LossReason::Revoked);
        self.shared.end(LossReason::Released);
        if revoked {
            return; // nothing of ours left in the store
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let backend = Arc::clone(&self.shared.backend);
            let lease = self.shared.lease();
            runtime.spawn(async move {
                if let Err(error) = backend.release(&lease).await {
                    tracing::warn!(lock = %lease.name, %error, "releasing a dropped lock guard failed; the TTL will free it");
                }
            });
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
        self.shared
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fence
    }

    /// The lock name.
    pub fn name(&self) -> LockName {
        self.shared
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .name
            .clone()
    }

    /// Resolves when the lease is lost, or with [`LossReason::Released`] when the guard is
    /// released or dropped.
    pub fn lost(&self) -> impl Future<Output = LossReason> + Send + 'static {
        self.shared.lost()
    }
}

/// Heartbeats every `interval` until the lease is lost; failed heartbeats are retried with
/// backoff until the local deadline.
async fn heartbeat_loop(shared: Arc<Shared>, interval: Duration) {
    let ttl = shared.ttl;
    let name = shared.lease().name;
    let mut retry = Backoff::new((interval / 10).max(Duration::from_millis(1)), interval);
    let mut next = monotonic_now() + interval;
    loop {
        let deadline = shared.deadline();
        tokio::time::sleep_until(next.min(deadline).into()).await;
        if monotonic_now() >= deadline {
            tracing::warn!(lock = %name, "lease deadline passed without a successful heartbeat; reporting it lost");
            shared.end(LossReason::DeadlinePassed);
            return;
        }
        let lease = shared.lease();
        let sent = monotonic_now();
        let beat = tokio::time::timeout_at(deadline.into(), shared.backend.heartbeat(&lease, ttl));
        match beat.await {
            Ok(Ok(mut renewed)) => {
                // Never trust a deadline later than our own rule allows.
                renewed.deadline = renewed.deadline.min(local_deadline(sent, ttl));
                *shared.lease.lock().unwrap_or_else(PoisonError::into_inner) = renewed;
                retry = Backoff::new((interval / 10).max(Duration::from_millis(1)), interval);
                next = sent + interval;
                tracing::trace!(lock = %name, "heartbeat");
            }
            Ok(Err(LockError::LeaseLost { .. })) => {
                tracing::warn!(lock = %name, "the store says the lease was lost");
                shared.end(LossReason::Revoked);
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(lock = %name, %error, "heartbeat failed; retrying until the lease deadline");
                next = monotonic_now() + retry.next_delay();
            }
            Err(_) => {
                tracing::warn!(lock = %name, "heartbeat still unanswered at the lease deadline; reporting it lost");
                shared.end(LossReason::DeadlinePassed);
                return;
            }
        }
    }
}
