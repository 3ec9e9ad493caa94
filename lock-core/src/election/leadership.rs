//! [`Leadership`]: this process leads, until it resigns or loses the lease.

use std::future::Future;

use crate::error::Result;
use crate::guard::{LeaseWatch, LockGuard, LossReason};
use crate::name::LockName;

/// This process leads the election it [campaigned](super::Election::campaign) in, for as long
/// as it holds the election's lease. Its lease heartbeats in the background like any
/// [`LockGuard`]; [`lost`](Self::lost) resolves if it is lost.
///
/// Dropping it resigns in the background (when a Tokio runtime is running; otherwise the TTL
/// ends the term).
#[must_use = "leadership ends as soon as it is dropped; bind it to a variable, or resign()"]
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
}

impl Leadership {
    pub(crate) fn new(guard: LockGuard) -> Self {
        Self { guard }
    }

    /// The fencing token of this term: strictly higher than every earlier term's. Pass it to
    /// what the leader writes, so a deposed leader's late writes are rejected.
    pub fn fence(&self) -> u64 {
        self.guard.fence()
    }

    /// The election's lock name.
    pub fn name(&self) -> LockName {
        self.guard.name()
    }

    /// True while this process still leads: the lease was not lost and its local deadline
    /// has not passed.
    pub fn is_leading(&self) -> bool {
        self.guard.is_held()
    }

    /// A future that resolves when this term ends without a resignation: the lease was
    /// revoked (force-released, taken over) or could not be renewed in time. It owns what
    /// it needs, so it can go into `tokio::select!` or a spawned task.
    pub fn lost(&self) -> impl Future<Output = LossReason> + Send + 'static {
        self.guard.lost()
    }

    /// A cloneable handle to watch this term from other tasks.
    pub fn watch(&self) -> LeaseWatch {
        self.guard.watch()
    }

    /// The lease behind this term.
    pub fn guard(&self) -> &LockGuard {
        &self.guard
    }

    /// Steps down: frees the election's lease, so that another campaigner takes over at
    /// once. Returns `true` if this process was still leading, `false` if it had already
    /// lost the lease. Under a minimum hold
    /// ([`LockOptions::with_hold_at_least`](crate::LockOptions::with_hold_at_least)) the
    /// lease stays until the hold ends, as for [`LockGuard::release`].
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`]: the store could not be reached, and the TTL ends the term.
    pub async fn resign(self) -> Result<bool> {
        let name = self.name();
        let span = tracing::debug_span!("resign", lock = %name);
        tracing::Instrument::instrument(self.guard.release(), span).await
    }
}
