//! What an operation knows about where and when it runs: the database (for messages), the
//! host's clocks, and the schema layout the engine found at open.
//!
//! Expiry is judged on the host's boot clock (`CLOCK_BOOTTIME`), stored in whole
//! milliseconds with the host's boot id: a lease is live if it was recorded under this boot
//! and its boot-clock expiry is after the boot clock now. A wall-clock step (NTP, a VM
//! resume, `faketime`) does not move the boot clock, so it never ends a live lease early
//! nor keeps a dead holder's lease past its TTL; a lease recorded under another boot id
//! belongs to a holder that died with that boot, and is free. The wall clock is read for
//! hybrid fences, for `acquired_at`, and to show expiries to people
//! ([`HostClock::wall_at`]).

use std::time::{Duration, SystemTime};

use lock_core::LockError;
use lock_core::backend_kit::clock::{BootId, ClockReading, HostClock};
use lock_core::backend_kit::fence::MAX_FENCE;

use crate::BACKEND;
use crate::value::Value;

/// How the lease table is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// The current schema version.
    Current,
    /// An older schema version, read as it is by a client that cannot write (and so cannot
    /// migrate it): reads only; versions 1 and 2 with expiry as they judged it (the wall
    /// clock), version 3 as version 4 without its holds.
    Legacy {
        /// The version found.
        version: i64,
    },
}

impl Layout {
    /// Whether lease rows have the version 3 columns (versions 3 and 4).
    pub(crate) fn has_permit_rows(self) -> bool {
        match self {
            Self::Current => true,
            Self::Legacy { version } => version >= 3,
        }
    }
}

/// The context of one operation.
pub(crate) struct Cx<'a> {
    /// The database, as named in messages.
    pub(crate) db: &'a str,
    pub(crate) clock: &'a dyn HostClock,
    pub(crate) layout: Layout,
}

impl Cx<'_> {
    /// The clocks now. Operations read them inside their transaction, once it holds the
    /// locks it needs, so a wait for a busy database never makes them stale.
    pub(crate) fn now(&self) -> Now {
        let reading = ClockReading::read(self.clock);
        Now {
            boot_ms: to_sql(reading.boot_ms()),
            boot_id: reading.boot().clone(),
            reading,
        }
    }

    /// The wall-clock time at which the boot clock reads (or read) `boot_ms`: an expiry
    /// as people read it.
    pub(crate) fn shown(&self, boot_ms: i64) -> SystemTime {
        let at = Duration::from_millis(u64::try_from(boot_ms).unwrap_or(0));
        self.clock.wall_at(at)
    }

    /// `Ok` unless the lease table can only be read (a read-only client of an older schema
    /// version), which is said as a read-only database is.
    pub(crate) fn writable(&self) -> Result<(), LockError> {
        match self.layout {
            Layout::Current => Ok(()),
            Layout::Legacy { version } => Err(LockError::config(
                BACKEND,
                format!(
                    "database {} is read-only for this client: it holds lock schema version \
                     {version}, which a read-only client reads as it is; taking, renewing and \
                     releasing locks needs write access (open it read-write once, which \
                     migrates it)",
                    self.db
                ),
            )),
        }
    }
}

/// The host's clocks at one moment (a [`ClockReading`], which does the arithmetic every
/// single-host store shares), with its values as SQLite binds them.
#[derive(Debug)]
pub(crate) struct Now {
    reading: ClockReading,
    /// The boot clock in whole milliseconds (rounded down).
    pub(crate) boot_ms: i64,
    pub(crate) boot_id: BootId,
}

/// A millisecond count as SQLite stores it (saturating at the largest integer).
fn to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl Now {
    /// The boot-clock expiry of a lease granted or renewed now for `ttl`, in whole
    /// milliseconds rounded up: compared with [`boot_ms`](Self::boot_ms) (rounded down),
    /// it is never judged expired before `ttl` has passed.
    pub(crate) fn expiry(&self, ttl: Duration) -> i64 {
        to_sql(self.reading.expiry_ms(ttl))
    }

    /// True for a lease recorded under `boot_id` that expires at `expires_boot_ms`.
    pub(crate) fn sees_live(&self, boot_id: &str, expires_boot_ms: i64) -> bool {
        u64::try_from(expires_boot_ms).is_ok_and(|ms| self.reading.is_live(boot_id, ms))
    }

    /// This boot's id, to bind.
    pub(crate) fn boot_id_value(&self) -> Value {
        Value::from(self.boot_id.as_str())
    }

    /// The wall clock in milliseconds since the Unix epoch (for `acquired_at`).
    pub(crate) fn wall_ms(&self) -> i64 {
        self.reading.wall_ms()
    }

    /// The wall clock in microseconds since the Unix epoch: the clock half of a hybrid
    /// fence.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] when the wall clock is so far ahead (past the year 2255) that
    /// it would pass the largest fence.
    pub(crate) fn fence_clock(&self) -> Result<i64, LockError> {
        let micros = self.reading.fence_clock();
        if micros > MAX_FENCE {
            return Err(LockError::config(
                BACKEND,
                format!(
                    "this host's wall clock reads {micros} microseconds since 1970, past the \
                     largest fence (2^53 - 1, in the year 2255): fences follow the wall clock, \
                     so none can be issued; set the clock right"
                ),
            ));
        }
        Ok(to_sql(micros))
    }

    /// A wall-clock expiry of schema versions 1 and 2 (`expires_at_ms`) on this boot's
    /// clock: as far ahead of the boot clock now as it is of the wall clock now; 0 (free)
    /// when it has passed. The migration computes the same in SQL
    /// ([`COPY_LEGACY_LEASES`](crate::sql::COPY_LEGACY_LEASES)).
    pub(crate) fn legacy_expiry(&self, expires_at_ms: i64) -> i64 {
        to_sql(self.reading.boot_ms_of_wall_expiry(expires_at_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lock_core::backend_kit::clock::SteppedClock;

    fn cx(clock: &SteppedClock) -> Cx<'_> {
        Cx {
            db: "t.db",
            clock,
            layout: Layout::Current,
        }
    }

    #[test]
    fn expiry_is_rounded_up_and_judged_on_this_boot_only() {
        let clock = SteppedClock::new();
        let now = cx(&clock).now();
        let expires = now.expiry(Duration::from_micros(10_001));
        assert!(expires >= now.boot_ms + 11, "{expires} vs {}", now.boot_ms);
        assert!(now.sees_live(now.boot_id.as_str(), now.boot_ms + 1));
        assert!(!now.sees_live(now.boot_id.as_str(), now.boot_ms));
        assert!(!now.sees_live("another-boot", now.boot_ms + 1_000));
        assert_eq!(now.expiry(Duration::MAX), i64::MAX);
    }

    #[test]
    fn a_wall_clock_step_moves_fences_and_shown_times_not_expiry() {
        let clock = SteppedClock::new();
        let before = cx(&clock).now();
        clock.step_wall(Duration::from_secs(3600), false);
        let after = cx(&clock).now();
        assert!(after.boot_ms >= before.boot_ms);
        assert!(after.fence_clock().unwrap() < before.fence_clock().unwrap());
        let shown = cx(&clock).shown(after.boot_ms + 60_000);
        let expected = SystemTime::now() - Duration::from_secs(3600 - 60);
        let diff = shown
            .duration_since(expected)
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(2), "{diff:?}");
        clock.step_wall(Duration::from_secs(300 * 365 * 24 * 3600), true);
        match cx(&clock).now().fence_clock() {
            Err(LockError::Config { detail, .. }) => assert!(detail.contains("2255"), "{detail}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn legacy_expiries_keep_their_time_left() {
        let clock = SteppedClock::new();
        let now = cx(&clock).now();
        let wall = now.wall_ms();
        assert_eq!(now.legacy_expiry(wall + 5_000), now.boot_ms + 5_000);
        assert_eq!(now.legacy_expiry(wall), 0);
        assert_eq!(now.legacy_expiry(0), 0);
        assert!(
            now.legacy_expiry(i64::MAX) > now.boot_ms,
            "saturates, never wraps"
        );
    }

    #[test]
    fn legacy_layouts_refuse_writes_saying_how_to_migrate() {
        let clock = SteppedClock::new();
        let cx = Cx {
            layout: Layout::Legacy { version: 2 },
            ..cx(&clock)
        };
        let e = cx.writable().unwrap_err().to_string();
        assert!(e.contains("read-only") && e.contains("version 2"), "{e}");
        assert!(e.contains("migrates"), "{e}");
    }
}
