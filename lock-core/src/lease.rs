//! Leases: what a holder gets back from the store, and what `inspect` shows others.

use std::time::{Duration, Instant, SystemTime};

use crate::backend_kit::time::{local_deadline, monotonic_now};
use crate::holder::Holder;
use crate::name::LockName;

/// A lease this process holds.
///
/// Backends build it; [`LockGuard`](crate::LockGuard) keeps it fresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The lock.
    pub name: LockName,
    /// Who holds it, including the owner token that proves it.
    pub holder: Holder,
    /// The fencing token: strictly higher than that of every earlier acquisition of this
    /// name in this store. Hand it to the resource you protect so it can reject stale holders.
    pub fence: u64,
    /// When the store will consider the lease expired, as the store decided it.
    pub expires_at: SystemTime,
    /// This holder's own conservative deadline on the monotonic clock: after it, do not
    /// assume the lease is still held, whatever the store says.
    pub deadline: Instant,
}

impl Lease {
    /// Builds a lease for a request sent at `sent` (from [`monotonic_now`]) with `ttl`;
    /// the local deadline follows [`local_deadline`].
    pub fn new(
        name: LockName,
        holder: Holder,
        fence: u64,
        expires_at: SystemTime,
        sent: Instant,
        ttl: Duration,
    ) -> Self {
        Self {
            name,
            holder,
            fence,
            expires_at,
            deadline: local_deadline(sent, ttl),
        }
    }

    /// The same lease extended by a heartbeat sent at `sent`.
    pub fn renewed(&self, expires_at: SystemTime, sent: Instant, ttl: Duration) -> Self {
        Self {
            expires_at,
            deadline: local_deadline(sent, ttl),
            ..self.clone()
        }
    }

    /// True while the local deadline has not passed.
    pub fn is_within_deadline(&self) -> bool {
        monotonic_now() < self.deadline
    }

    /// Time left before the local deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(monotonic_now())
    }
}

/// A live lease as anyone can see it with [`inspect`](crate::LockBackend::inspect).
///
/// It never contains the owner token.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// The lock.
    pub name: LockName,
    /// The holder's label.
    pub label: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// The lease's fencing token.
    pub fence: u64,
    /// When the holder acquired it.
    pub acquired_at: SystemTime,
    /// When the store will consider it expired unless it is heartbeated.
    pub expires_at: SystemTime,
    /// The limit the holder asked for: 1 for a lock, `n` for one permit of a semaphore of
    /// `n` ([`LockOptions::with_limit`](crate::LockOptions::with_limit)).
    pub limit: u32,
}

impl LeaseInfo {
    /// Builds the public view of a lease.
    pub fn new(
        name: LockName,
        label: impl Into<String>,
        pid: u32,
        host: impl Into<String>,
        fence: u64,
        acquired_at: SystemTime,
        expires_at: SystemTime,
    ) -> Self {
        Self {
            name,
            label: label.into(),
            pid,
            host: host.into(),
            fence,
            acquired_at,
            expires_at,
            limit: 1,
        }
    }

    /// The same lease, held as one permit of a semaphore of `limit`.
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Time until the store considers the lease expired (zero if it already is).
    pub fn time_left(&self) -> Duration {
        self.expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }
}
