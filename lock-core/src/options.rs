//! [`LockOptions`]: how long a lease lasts, how long to wait for it, and how to label it.

use std::time::Duration;

use crate::backend_kit::time::{safety_margin, validate_ttl};
use crate::error::{LockError, Result};

/// Options for [`Locker`](crate::Locker) calls.
///
/// Build from [`Default`] and the `with_*` methods, or set the public fields:
///
/// ```
/// use std::time::Duration;
/// use lock_core::LockOptions;
///
/// let opts = LockOptions::default()
///     .with_ttl(Duration::from_secs(10))
///     .with_wait(Duration::from_secs(60))
///     .with_label("nightly-report");
/// assert_eq!(opts.wait, Some(Duration::from_secs(60)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOptions {
    /// Lease time to live. The guard heartbeats every `ttl / 3`. Default 30 s.
    pub ttl: Duration,
    /// How long [`lock`](crate::Locker::lock) waits for a held lock before
    /// [`LockError::Timeout`]; `None` waits as long as it takes. Default `None`.
    pub wait: Option<Duration>,
    /// Free text stored with the lease for humans (`lockctl status`). Default: the program name.
    pub label: String,
    /// Heartbeat period; `None` means `ttl / 3`.
    pub heartbeat_interval: Option<Duration>,
    /// First delay between attempts while waiting. Default 1 ms.
    pub min_backoff: Duration,
    /// Longest delay between attempts while waiting. Default 100 ms.
    pub max_backoff: Duration,
    /// How many holders a name may have at once: 1 (the default) for a lock, `n` for a
    /// counting semaphore. Every caller of one name must use the same limit.
    pub limit: u32,
    /// The least time a lease is held: [`release`](crate::LockGuard::release) (or dropping
    /// the guard) before this much time has passed since acquisition leaves the lease in
    /// the store until then. Default `None`. At most [`MAX_TTL`](crate::MAX_TTL).
    pub hold_at_least: Option<Duration>,
    /// Label this call's metrics with the lock name (feature `metrics`). Default `false`:
    /// names can be unbounded (one per user, per request), and every distinct label value is
    /// a time series an exporter keeps.
    pub lock_name_in_metrics: bool,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            wait: None,
            label: program_name(),
            heartbeat_interval: None,
            min_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(100),
            limit: 1,
            hold_at_least: None,
            lock_name_in_metrics: false,
        }
    }
}

impl LockOptions {
    /// With lease TTL `ttl`.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Waits at most `wait` in [`lock`](crate::Locker::lock).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Waits as long as it takes in [`lock`](crate::Locker::lock).
    pub fn with_wait_forever(mut self) -> Self {
        self.wait = None;
        self
    }

    /// With `label` stored in the lease.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Heartbeats every `interval` instead of every `ttl / 3`.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// With backoff between attempts growing from `min` to `max` while waiting.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }

    /// Allows up to `n` holders at once: a counting semaphore of `n` permits, each a lease
    /// of its own (token, heartbeat, loss signal, fence). `lock`, `try_lock` and
    /// `with_lock` work unchanged. 1 (the default) is a lock.
    ///
    /// ```
    /// use lock_core::LockOptions;
    ///
    /// let three_builds_at_once = LockOptions::default().with_limit(3);
    /// assert_eq!(three_builds_at_once.limit, 3);
    /// ```
    pub fn with_limit(mut self, n: u32) -> Self {
        self.limit = n;
        self
    }

    /// Holds every lease at least `d` after it was acquired: a release before then leaves
    /// the lease in place until `d` has passed (ShedLock's `lockAtLeastFor`: a fast scheduled
    /// job does not run again on another instance whose clock is a little behind).
    ///
    /// [`LockGuard::release`](crate::LockGuard::release), dropping the guard, and
    /// [`with_lock`](crate::Locker::with_lock) finishing early all return at once; the lease
    /// is renewed one last time to outlive the hold, and released in the background when
    /// it ends, which wakes waiters. `d` may be longer than the TTL. If the process is gone
    /// before then, the store's TTL frees the lease a tenth of the TTL (at most a second)
    /// after the hold ends. A release after `d` frees the lease at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lock_core::LockOptions;
    ///
    /// // A job scheduled every minute on several instances runs once per minute, even when
    /// // it takes a second and the instances' clocks differ by a few seconds.
    /// let opts = LockOptions::default().with_hold_at_least(Duration::from_secs(30));
    /// assert_eq!(opts.hold_at_least, Some(Duration::from_secs(30)));
    /// ```
    pub fn with_hold_at_least(mut self, d: Duration) -> Self {
        self.hold_at_least = Some(d);
        self
    }

    /// Labels this call's metrics with the lock name (feature `metrics`; see
    /// [`telemetry`](crate::telemetry)). Only for names from a small fixed set: each name is
    /// a time series of its own in the exporter.
    pub fn with_lock_name_in_metrics(mut self, yes: bool) -> Self {
        self.lock_name_in_metrics = yes;
        self
    }

    /// The heartbeat period these options give.
    pub fn effective_heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(self.ttl / 3)
    }

    /// Checks the TTL, the heartbeat period and the backoff.
    ///
    /// The heartbeat period must be at least [`MIN_HEARTBEAT_INTERVAL`] and at most half of
    /// the time the holder trusts a lease (`ttl` minus its [`safety_margin`]), so that a
    /// failed heartbeat is retried before the lease runs out. The default, `ttl / 3`,
    /// always is.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`] when the TTL is out of bounds or the heartbeat period does
    /// not fit it; [`LockError::Config`] when `min_backoff` is zero or above `max_backoff`,
    /// the limit is 0 or above [`MAX_PERMITS`](crate::MAX_PERMITS), or the minimum hold is
    /// longer than [`MAX_TTL`](crate::MAX_TTL).
    pub fn validate(&self) -> Result<()> {
        validate_heartbeat(self.ttl, self.effective_heartbeat_interval())?;
        crate::backend_kit::permits::validate_limit(self.limit)?;
        if let Some(d) = self.hold_at_least.filter(|d| *d > crate::MAX_TTL) {
            return Err(LockError::config(
                "leaselock",
                format!(
                    "a minimum hold of {d:?} is longer than the longest lease ({:?}): pass \
                     LockOptions::with_hold_at_least a shorter duration",
                    crate::MAX_TTL
                ),
            ));
        }
        if self.min_backoff.is_zero() || self.min_backoff > self.max_backoff {
            return Err(LockError::config(
                "leaselock",
                format!(
                    "backoff from {:?} to {:?}: the first delay must be above zero (or waiters \
                     spin) and not above the longest; the defaults are 1 ms and 100 ms",
                    self.min_backoff, self.max_backoff
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a TTL and the heartbeat period that keeps a lease of that TTL alive, as
/// [`LockOptions::validate`] describes.
pub(crate) fn validate_heartbeat(ttl: Duration, interval: Duration) -> Result<()> {
    validate_ttl(ttl)?;
    let trusted = ttl - safety_margin(ttl);
    if interval < MIN_HEARTBEAT_INTERVAL || interval > trusted / 2 {
        return Err(LockError::InvalidTtl {
            ttl,
            reason: "the heartbeat interval must be at least 1 ms and at most half the TTL \
                     less its safety margin, so that a failed heartbeat can be retried in time \
                     (leave it unset for TTL / 3)",
        });
    }
    Ok(())
}

/// The shortest heartbeat period [`LockOptions::validate`] accepts.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1);

fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_heartbeat_is_a_third() {
        let opts = LockOptions::default();
        opts.validate().unwrap();
        assert_eq!(opts.effective_heartbeat_interval(), Duration::from_secs(10));
    }

    #[test]
    fn heartbeat_must_leave_room_for_a_retry() {
        let ttl = Duration::from_secs(1);
        // Trusted for 0.9 s: a heartbeat every 0.45 s still has a retry before the deadline.
        for (interval, ok) in [
            (Duration::from_millis(450), true),
            (Duration::from_millis(451), false),
            (Duration::from_millis(899), false),
            (ttl, false),
            (Duration::MAX, false),
            (Duration::from_millis(1), true),
            (Duration::from_micros(999), false),
            (Duration::ZERO, false),
        ] {
            let opts = LockOptions::default()
                .with_ttl(ttl)
                .with_heartbeat_interval(interval);
            match opts.validate() {
                Ok(()) => assert!(ok, "{interval:?} accepted"),
                Err(LockError::InvalidTtl { reason, .. }) => {
                    assert!(!ok, "{interval:?} refused");
                    assert!(reason.contains("half the TTL"), "{reason}");
                }
                Err(other) => panic!("{interval:?}: {other}"),
            }
        }
        for ttl in [crate::MIN_TTL, Duration::from_secs(1), crate::MAX_TTL] {
            LockOptions::default().with_ttl(ttl).validate().unwrap();
        }
        let zero_ttl = LockOptions::default().with_ttl(Duration::ZERO);
        assert!(matches!(
            zero_ttl.validate(),
            Err(LockError::InvalidTtl { .. })
        ));
    }

    #[test]
    fn a_minimum_hold_is_at_most_the_longest_lease() {
        for (d, ok) in [
            (Duration::ZERO, true),
            (Duration::from_secs(3600), true),
            (crate::MAX_TTL, true),
            (crate::MAX_TTL + Duration::from_millis(1), false),
            (Duration::MAX, false),
        ] {
            match LockOptions::default().with_hold_at_least(d).validate() {
                Ok(()) => assert!(ok, "{d:?} accepted"),
                Err(LockError::Config { detail, .. }) => {
                    assert!(!ok, "{d:?} refused: {detail}");
                    assert!(detail.contains("with_hold_at_least"), "{detail}");
                }
                Err(other) => panic!("{d:?}: {other}"),
            }
        }
    }

    #[test]
    fn backoff_must_start_above_zero_and_not_above_its_max() {
        let ms = Duration::from_millis;
        for (min, max, ok) in [
            (ms(1), ms(100), true),
            (ms(5), ms(5), true),
            (Duration::ZERO, ms(100), false),
            (ms(200), ms(100), false),
            (ms(1), Duration::MAX, true),
        ] {
            let result = LockOptions::default().with_backoff(min, max).validate();
            match result {
                Ok(()) => assert!(ok, "{min:?}..{max:?} accepted"),
                Err(LockError::Config { detail, .. }) => {
                    assert!(!ok, "{min:?}..{max:?} refused: {detail}");
                    assert!(detail.contains("defaults are 1 ms and 100 ms"), "{detail}");
                }
                Err(other) => panic!("{other}"),
            }
        }
    }
}
