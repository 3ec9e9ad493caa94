//! Releasing a guard's lease: at once, or when its minimum hold ends.
//!
//! Minimum hold ([`LockOptions::with_hold_at_least`](crate::LockOptions::with_hold_at_least)):
//! a lease released (or dropped) before `d` has passed since its acquisition stays in the
//! store until then, ShedLock's `lockAtLeastFor`.
//!
//! How: the release renews the lease once, to expire a little after the hold ends (the
//! remaining hold plus the TTL's safety margin, within `MIN_TTL..=MAX_TTL`), answers the
//! caller, then truly releases the lease when the hold ends, so that waiters are woken as by
//! any release. Heartbeats stop at the release: one renewal covers the rest of the hold
//! however it compares with the TTL. If the process is gone before the hold ends, the
//! store's TTL frees the lease at most that margin after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::LockBackend;
use crate::backend_kit::time::{MAX_TTL, MIN_TTL, instant_after, monotonic_now, safety_margin};
use crate::error::{LockError, Result};
use crate::in_place::InPlace;
use crate::lease::Lease;
use crate::telemetry::Labels;

/// When a lease may be freed, at the earliest.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MinHold {
    /// The end of the hold: `d` after the lease was acquired.
    until: Instant,
    /// How long the store keeps the lease past `until` if nobody releases it then.
    margin: Duration,
}

impl MinHold {
    /// The hold of a lease of `ttl` acquired at `acquired`, held at least `d`.
    pub(crate) fn new(acquired: Instant, d: Duration, ttl: Duration) -> Self {
        Self {
            until: instant_after(acquired, d),
            margin: safety_margin(ttl),
        }
    }

    /// The TTL that keeps a lease in the store until the hold ends (plus the margin), from
    /// now; `None` once the hold has ended.
    fn ttl_from(&self, now: Instant) -> Option<Duration> {
        let left = self.until.saturating_duration_since(now);
        (!left.is_zero()).then(|| (left + self.margin).clamp(MIN_TTL, MAX_TTL))
    }
}

/// A release under way: the caller awaits it (see [`answer`]); dropped, it finishes in a
/// task of its own, which logs an error nobody is waiting for.
pub(crate) type Answer = InPlace<Result<bool>>;

/// Releases `lease`, at once or when `hold` ends, in a future that frees it even if the
/// caller's future is dropped (a `select!`, a timeout) or never awaited (a dropped guard):
/// see [`InPlace`].
///
/// The answer is the store's: `true` if the lease was ours (and, under a hold, now kept until
/// the hold ends), `false` if it was already lost.
pub(crate) fn release(
    backend: Arc<dyn LockBackend>,
    lease: Lease,
    hold: Option<MinHold>,
    labels: Labels,
) -> Answer {
    let name = lease.name.clone();
    let releasing = async move {
        let held = hold.and_then(|h| h.ttl_from(monotonic_now()).map(|ttl| (h, ttl)));
        let Some((hold, ttl)) = held else {
            return release_now(&backend, &lease, &labels).await;
        };
        let kept = labels
            .store_call("heartbeat", backend.heartbeat(&lease, ttl))
            .await;
        let kept = match kept {
            Ok(kept) => kept,
            Err(LockError::LeaseLost { .. }) => return Ok(false),
            Err(error) => return Err(error),
        };
        // The caller's release is done; the lease is the store's to keep until the hold ends.
        tracing::debug!(lock = %lease.name, "released early; held until its minimum hold ends");
        tokio::spawn(async move {
            tokio::time::sleep_until(hold.until.into()).await;
            match release_now(&backend, &kept, &labels).await {
                Ok(true) => tracing::debug!(lock = %kept.name, "minimum hold over; released"),
                Ok(false) => {
                    tracing::debug!(lock = %kept.name, "the lease was lost during its minimum hold");
                }
                Err(error) => tracing::warn!(
                    lock = %kept.name, %error,
                    "releasing after the minimum hold failed; the TTL will free the lock"
                ),
            }
        });
        Ok(true)
    };
    InPlace::new(releasing, move |answer| async move {
        // Nobody waits for this answer (a dropped guard, a cancelled release): log a failure.
        if let Err(error) = answer {
            tracing::warn!(lock = %name, %error, "releasing a lock guard failed; the TTL will free it");
        }
    })
}

async fn release_now(
    backend: &Arc<dyn LockBackend>,
    lease: &Lease,
    labels: &Labels,
) -> Result<bool> {
    labels.store_call("release", backend.release(lease)).await
}

/// Waits for a release's answer.
///
/// # Errors
///
/// The store's error, or [`LockError::Backend`] if the backend panicked.
pub(crate) async fn answer(release: Answer) -> Result<bool> {
    release.await.unwrap_or_else(|()| {
        Err(LockError::backend(
            "leaselock",
            "the backend panicked while releasing; this is a bug in the backend \
             (the TTL will free the lease)",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_the_lease_until_the_hold_ends_plus_the_margin() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let hold = MinHold::new(start, ms(5000), ms(1000));
        // A 1 s TTL has a 100 ms margin.
        assert_eq!(hold.ttl_from(start), Some(ms(5100)));
        assert_eq!(hold.ttl_from(start + ms(4000)), Some(ms(1100)));
        // Never below MIN_TTL, even at the very end.
        assert_eq!(hold.ttl_from(start + ms(4999)), Some(ms(101)));
        let tiny = MinHold::new(start, ms(5), MIN_TTL);
        assert_eq!(tiny.ttl_from(start), Some(MIN_TTL));
        // Over: nothing to keep.
        assert_eq!(hold.ttl_from(start + ms(5000)), None);
        assert_eq!(hold.ttl_from(start + ms(9000)), None);
        // Never above MAX_TTL.
        let long = MinHold::new(start, MAX_TTL, Duration::from_secs(60));
        assert_eq!(long.ttl_from(start), Some(MAX_TTL));
    }
}
