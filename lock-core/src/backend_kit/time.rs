//! Time rules shared by every backend: TTL bounds, the holder's local deadline, and
//! conversions between wall-clock times and the integer milliseconds stores keep.
//!
//! The store's clock decides when a lease expires. The holder never trusts its lease past
//! its own [`local_deadline`]: the moment it sent the request, plus the TTL, minus a safety
//! margin. The lease cannot have started before the request was sent, so a holder that
//! respects its deadline stops believing it holds the lock before the store lets anyone else
//! take it, however long it was paused or however slow the reply was.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{LockError, Result};

/// The shortest TTL accepted. Shorter leases cannot be heartbeated reliably.
pub const MIN_TTL: Duration = Duration::from_millis(10);

/// The longest TTL accepted (30 days). Longer is almost certainly a unit mistake.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Checks a TTL against [`MIN_TTL`] and [`MAX_TTL`]. Every backend calls this before
/// touching its store.
///
/// # Errors
///
/// [`LockError::InvalidTtl`] when the TTL is zero or out of bounds.
pub fn validate_ttl(ttl: Duration) -> Result<Duration> {
    let reason = if ttl.is_zero() {
        "it is zero"
    } else if ttl < MIN_TTL {
        "it is too short to heartbeat"
    } else if ttl > MAX_TTL {
        "it is longer than 30 days"
    } else {
        return Ok(ttl);
    };
    Err(LockError::InvalidTtl { ttl, reason })
}

/// The safety margin subtracted from the TTL for the local deadline: a tenth of the TTL,
/// at most one second.
pub fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_secs(1))
}

/// Now, on the monotonic clock. Inside a Tokio runtime with paused time this follows the
/// runtime's clock, so tests that advance time see deadlines move with it.
pub fn monotonic_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The holder's deadline for a lease whose request was sent at `sent`:
/// `sent + ttl - safety_margin(ttl)` (saturating: an absurd `ttl` gives a far-off deadline,
/// never a panic).
pub fn local_deadline(sent: Instant, ttl: Duration) -> Instant {
    instant_after(sent, ttl - safety_margin(ttl))
}

/// How far ahead [`instant_after`] looks when `start + d` would overflow the clock: about
/// thirty years, as Tokio does for its own far-off timers.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `start + d`, or a moment about thirty years after `start` when `d` is so long that the
/// sum would overflow the clock (say, `Duration::MAX` passed as "wait forever"). Every
/// deadline a caller's duration feeds goes through this, so no duration panics.
pub fn instant_after(start: Instant, d: Duration) -> Instant {
    start
        .checked_add(d.min(FAR_FUTURE))
        .or_else(|| start.checked_add(Duration::from_secs(24 * 60 * 60)))
        .unwrap_or(start)
}

/// [`instant_after`] from [`monotonic_now`].
pub fn deadline_in(d: Duration) -> Instant {
    instant_after(monotonic_now(), d)
}

/// Milliseconds since the Unix epoch (negative before 1970), saturating.
pub fn to_unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The inverse of [`to_unix_millis`].
pub fn from_unix_millis(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Microseconds since the Unix epoch on this host's wall clock.
///
/// Stores that lose their fence counter (a Redis restart without persistence, a deleted
/// lease file) seed the next fence from this, so it is higher than any fence they issued
/// before, as long as fewer than a million fences per second were issued on average.
pub fn fence_seed_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds() {
        assert!(validate_ttl(Duration::ZERO).is_err());
        assert!(validate_ttl(Duration::from_millis(9)).is_err());
        assert!(validate_ttl(MIN_TTL).is_ok());
        assert!(validate_ttl(MAX_TTL).is_ok());
        assert!(validate_ttl(MAX_TTL + Duration::from_millis(1)).is_err());
        assert!(validate_ttl(Duration::MAX).is_err());
    }

    #[test]
    fn deadline_is_before_expiry() {
        let now = Instant::now();
        for ttl in [
            MIN_TTL,
            Duration::from_secs(1),
            Duration::from_secs(60),
            MAX_TTL,
        ] {
            let deadline = local_deadline(now, ttl);
            assert!(deadline < now + ttl);
            assert!(deadline > now);
        }
    }

    #[test]
    fn absurd_durations_give_far_deadlines_not_panics() {
        let now = Instant::now();
        for d in [
            Duration::MAX,
            Duration::from_secs(u64::MAX / 2),
            FAR_FUTURE * 2,
        ] {
            let at = instant_after(now, d);
            assert_eq!(at, now + FAR_FUTURE, "{d:?}");
            assert!(local_deadline(now, d) > now + Duration::from_secs(365 * 24 * 3600));
        }
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(deadline_in(Duration::MAX) > now);
    }

    #[test]
    fn millis_round_trip() {
        for ms in [0, 1, 1_700_000_000_123, -5] {
            assert_eq!(to_unix_millis(from_unix_millis(ms)), ms);
        }
    }
}
