//! [`LockOptions`]: how long a lease lasts, how long to wait for it, and how to label it.

use std::time::Duration;

use crate::error::{LockError, Result};
use crate::time::validate_ttl;

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

    /// The heartbeat period these options give.
    pub fn effective_heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval.unwrap_or(self.ttl / 3)
    }

    /// Checks the TTL and heartbeat period.
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidTtl`] when the TTL is out of bounds or the heartbeat period is
    /// zero or not shorter than the TTL.
    pub fn validate(&self) -> Result<()> {
        validate_ttl(self.ttl)?;
        let interval = self.effective_heartbeat_interval();
        if interval.is_zero() || interval >= self.ttl {
            return Err(LockError::InvalidTtl {
                ttl: self.ttl,
                reason: "the heartbeat interval must be above zero and shorter than the TTL",
            });
        }
        Ok(())
    }
}

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
    fn heartbeat_must_be_shorter_than_ttl() {
        let opts = LockOptions::default()
            .with_ttl(Duration::from_secs(1))
            .with_heartbeat_interval(Duration::from_secs(1));
        assert!(matches!(opts.validate(), Err(LockError::InvalidTtl { .. })));
        let zero_ttl = LockOptions::default().with_ttl(Duration::ZERO);
        assert!(matches!(
            zero_ttl.validate(),
            Err(LockError::InvalidTtl { .. })
        ));
    }
}
