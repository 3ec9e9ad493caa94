//! [`Now`]: one reading of the host's clocks, taken inside a critical section.

use std::time::{Duration, SystemTime};

use lock_core::backend_kit::clock::{BootId, HostClock};
use lock_core::backend_kit::fence::micros_since_epoch;

/// The host's clocks at one moment: the boot clock (which decides expiry), this boot's id
/// (a boot-clock value means something only within its boot) and the wall clock (for
/// fences and `acquired_at`).
///
/// A critical section reads it once, once it has the lease file's lock, so every decision
/// it makes is on one moment, and the sections of all processes are ordered on the boot
/// clock as they are on the file's lock. It is itself a [`HostClock`] whose time stands
/// still, so the wall-clock times it shows ([`HostClock::wall_at`]) are of that moment too.
#[derive(Debug)]
pub(crate) struct Now {
    /// The id of this boot.
    pub(crate) boot: BootId,
    /// Time since this boot began.
    pub(crate) since_boot: Duration,
    /// The wall clock.
    pub(crate) wall: SystemTime,
}

impl Now {
    /// Reads `clock`.
    pub(crate) fn read(clock: &dyn HostClock) -> Self {
        Self {
            boot: clock.boot_id(),
            since_boot: clock.since_boot(),
            wall: clock.wall(),
        }
    }

    /// Whole milliseconds since boot (rounded down): a lease is live while this is below
    /// its stored expiry.
    pub(crate) fn boot_ms(&self) -> u64 {
        u64::try_from(self.since_boot.as_millis()).unwrap_or(u64::MAX)
    }

    /// The boot-clock millisecond at which a lease granted or renewed now for `ttl`
    /// expires, rounded up so that it never lasts less than `ttl`.
    pub(crate) fn expiry_ms(&self, ttl: Duration) -> u64 {
        let at = self.since_boot.saturating_add(ttl);
        let ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
        if at.subsec_nanos().is_multiple_of(1_000_000) {
            ms
        } else {
            ms.saturating_add(1)
        }
    }

    /// The wall clock in microseconds since the Unix epoch: the clock half of a hybrid
    /// fence.
    pub(crate) fn fence_clock(&self) -> u64 {
        micros_since_epoch(self.wall)
    }
}

impl HostClock for Now {
    fn wall(&self) -> SystemTime {
        self.wall
    }

    fn since_boot(&self) -> Duration {
        self.since_boot
    }

    fn boot_id(&self) -> BootId {
        self.boot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(since_boot: Duration) -> Now {
        Now {
            boot: BootId::new("test-boot"),
            since_boot,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn expiry_rounds_up_to_the_next_millisecond() {
        let now = at(Duration::new(100, 250_000));
        assert_eq!(now.boot_ms(), 100_000);
        assert_eq!(now.expiry_ms(Duration::from_millis(10)), 100_011);
        let whole = at(Duration::from_millis(100_000));
        assert_eq!(whole.expiry_ms(Duration::from_millis(10)), 100_010);
        assert_eq!(whole.fence_clock(), 1_700_000_000_000_000);
    }

    #[test]
    fn shows_boot_clock_moments_on_its_own_wall_clock() {
        let now = at(Duration::from_secs(100));
        assert_eq!(
            now.wall_at(Duration::from_millis(100_250)),
            now.wall + Duration::from_millis(250)
        );
        assert_eq!(
            now.wall_at(Duration::from_secs(40)),
            now.wall - Duration::from_secs(60)
        );
    }
}
