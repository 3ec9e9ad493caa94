//! Hybrid fences: each grant gives `max(counter + 1, store clock in microseconds)`, so a
//! fence is never reissued even when the store lost its latest writes (its counter went
//! back): the clock has moved past every fence it handed out.
//!
//! Every backend computes the same thing in its own atomic step (a Lua script, a SQL
//! statement, a critical section); this module is the reference, and what backends that
//! compute in Rust call.
//!
//! The guarantee: fences strictly increase for the life of the store, also after it lost
//! writes, as long as the store's clock does not go back past the lost fences and fewer
//! than a million grants a second are made per name. When the clock steps back, fences
//! still rise by the counter; protection against lost writes then waits for the clock to
//! catch up.

use std::time::{SystemTime, UNIX_EPOCH};

/// The largest fence: 2^53 - 1, so that a fence is exact in a double (Lua numbers, JSON).
pub const MAX_FENCE: u64 = (1 << 53) - 1;

/// The fence of the next grant after `counter` at `clock_micros`, or `None` if it would pass
/// [`MAX_FENCE`] (a store that holds such a counter is corrupt: nothing here writes one).
///
/// ```
/// use lock_core::backend_kit::fence::next_fence;
///
/// assert_eq!(next_fence(10, 5), Some(11));            // the counter leads
/// assert_eq!(next_fence(10, 1_000_000), Some(1_000_000)); // the clock overtakes it
/// assert_eq!(next_fence(u64::MAX, 0), None);
/// ```
pub fn next_fence(counter: u64, clock_micros: u64) -> Option<u64> {
    let next = counter.checked_add(1)?.max(clock_micros);
    (next <= MAX_FENCE).then_some(next)
}

/// `t` in microseconds since the Unix epoch (0 before it, saturating far after it).
pub fn micros_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_larger_of_the_counter_and_the_clock() {
        assert_eq!(next_fence(0, 0), Some(1));
        assert_eq!(next_fence(41, 41), Some(42));
        assert_eq!(next_fence(41, 43), Some(43));
        assert_eq!(next_fence(MAX_FENCE - 1, 0), Some(MAX_FENCE));
        assert_eq!(next_fence(MAX_FENCE, 0), None);
        assert_eq!(next_fence(0, MAX_FENCE + 1), None);
    }

    #[test]
    fn clock_conversion() {
        assert_eq!(micros_since_epoch(UNIX_EPOCH), 0);
        assert_eq!(
            micros_since_epoch(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456)),
            1_700_000_000_123_456
        );
        assert_eq!(micros_since_epoch(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
