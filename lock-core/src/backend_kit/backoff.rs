//! Jittered exponential backoff, shared by the [`Locker`](crate::Locker)'s wait loop and by
//! backends that retry a busy store.

use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is uniformly random in
/// `[base/2, base]`, and `base` doubles up to `max`. The jitter keeps many waiters from
/// retrying in lockstep.
///
/// ```
/// use std::time::Duration;
/// use lock_core::backend_kit::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(100));
/// let first = backoff.next_delay();
/// assert!(first >= Duration::from_millis(1) && first <= Duration::from_millis(2));
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`, doubling up to `max` (`max` is raised to `min` if smaller).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            base: min,
            max: max.max(min),
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base;
        self.base = base.saturating_mul(2).min(self.max);
        jitter(base)
    }
}

/// A uniformly random duration in `[d/2, d]`.
pub fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let spread = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_max_within_jitter_bounds() {
        let mut b = Backoff::new(Duration::from_millis(4), Duration::from_millis(20));
        let expected_bases = [4, 8, 16, 20, 20];
        for base in expected_bases {
            let d = b.next_delay();
            let base = Duration::from_millis(base);
            assert!(
                d >= base / 2 && d <= base,
                "{d:?} outside [{:?}, {base:?}]",
                base / 2
            );
        }
    }

    #[test]
    fn absurd_bounds_saturate_instead_of_panicking() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            assert!(b.next_delay() >= Duration::MAX / 2);
        }
        let mut b = Backoff::new(Duration::from_millis(1), Duration::MAX);
        for _ in 0..200 {
            b.next_delay();
        }
    }

    #[test]
    fn zero_is_fine() {
        assert_eq!(
            Backoff::new(Duration::ZERO, Duration::ZERO).next_delay(),
            Duration::ZERO
        );
    }
}
