//! [`HostClock`]: the clocks a single-host store (SQLite, a lock directory) judges leases by.
//!
//! Every process using such a store runs on one host, so expiry is judged on a clock every
//! process of the host shares and that wall-clock steps do not move: the boot clock
//! (`CLOCK_BOOTTIME` on Linux: time since boot, counting suspend). A value of it only means
//! something within one boot, so it is stored with the host's boot id
//! (`/proc/sys/kernel/random/boot_id`): a lease recorded under another boot id belongs to
//! a holder that died with that boot, and is free.
//!
//! An NTP or chrony step, a VM resumed from a snapshot, or a process started under
//! `faketime` moves the wall clock, not the boot clock, so none of them ends a live lease
//! early or keeps a dead holder's lease past its TTL. The wall clock is still used for what
//! people read (times in `inspect` and `lockctl status`, derived from the stored boot-clock
//! value) and for [hybrid fences](super::fence), which must keep rising across reboots.
//!
//! Backends take an `Arc<dyn HostClock>` ([`system`] in production); tests use a
//! [`SteppedClock`] to step the wall clock, or to pretend the host rebooted, without
//! touching the system clock.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

/// The id of one boot of this host (on Linux, the UUID in
/// `/proc/sys/kernel/random/boot_id`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BootId(Arc<str>);

impl BootId {
    /// A boot id read back from a store.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as text, to store.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The clocks of this host, as a single-host store uses them.
pub trait HostClock: fmt::Debug + Send + Sync + 'static {
    /// The wall clock: for fences and for times shown to people, never for expiry.
    fn wall(&self) -> SystemTime;

    /// Time since this boot began, on a clock every process of the host shares and that
    /// wall-clock steps do not move.
    fn since_boot(&self) -> Duration;

    /// The id of this boot.
    fn boot_id(&self) -> BootId;

    /// The wall-clock time at which the boot clock will read (or read) `since_boot`: for
    /// showing a stored expiry to people.
    fn wall_at(&self, since_boot: Duration) -> SystemTime {
        let now_boot = self.since_boot();
        let now_wall = self.wall();
        if since_boot >= now_boot {
            now_wall
                .checked_add(since_boot - now_boot)
                .unwrap_or(now_wall)
        } else {
            now_wall
                .checked_sub(now_boot - since_boot)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }
}

/// The system's clocks: the real wall clock, `CLOCK_BOOTTIME`, the kernel's boot id.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl HostClock for SystemClock {
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn since_boot(&self) -> Duration {
        boot_clock::now()
    }

    fn boot_id(&self) -> BootId {
        static ID: OnceLock<BootId> = OnceLock::new();
        ID.get_or_init(read_boot_id).clone()
    }
}

/// The system's clocks, shared.
pub fn system() -> Arc<dyn HostClock> {
    static SYSTEM: OnceLock<Arc<dyn HostClock>> = OnceLock::new();
    Arc::clone(SYSTEM.get_or_init(|| Arc::new(SystemClock)))
}

#[cfg(target_os = "linux")]
fn read_boot_id() -> BootId {
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(id) if !id.trim().is_empty() => BootId::new(id.trim()),
        // Without procfs (a locked-down container) every process of the host reads the
        // same fallback, so leases are still compared on one boot clock; only the
        // "another boot's lease is free at once" shortcut is lost (the TTL decides).
        _ => BootId::new("unknown-boot"),
    }
}

#[cfg(not(target_os = "linux"))]
fn read_boot_id() -> BootId {
    BootId::new("unknown-boot")
}

#[allow(unsafe_code)]
mod boot_clock {
    use std::time::Duration;

    #[cfg(target_os = "linux")]
    const CLOCK: libc::clockid_t = libc::CLOCK_BOOTTIME;
    #[cfg(not(target_os = "linux"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;

    /// The boot clock now.
    pub(super) fn now() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec and CLOCK is a clock every supported
        // kernel has; clock_gettime writes only `ts`.
        let rc = unsafe { libc::clock_gettime(CLOCK, &raw mut ts) };
        assert_eq!(
            rc, 0,
            "clock_gettime({CLOCK}) failed: the kernel lacks a boot clock"
        );
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    }
}

/// One reading of the host's clocks, taken once per operation (inside its critical section
/// or transaction, once it holds what it needs), so that every decision of the operation is
/// made at one moment; the arithmetic every single-host store does with it, in one place.
///
/// Expiries are stored as whole milliseconds of the boot clock with the boot id: a lease is
/// live if it was recorded under this boot and its expiry is after
/// [`boot_ms`](Self::boot_ms). It is itself a [`HostClock`] that stands still, so the
/// wall-clock times it shows ([`HostClock::wall_at`]) are of that moment.
///
/// ```
/// use std::time::Duration;
/// use lock_core::backend_kit::clock::{ClockReading, SystemClock};
///
/// let now = ClockReading::read(&SystemClock);
/// let expires = now.expiry_ms(Duration::from_secs(30));
/// assert!(now.is_live(now.boot().as_str(), expires));
/// assert!(!now.is_live("another-boot", expires));
/// ```
#[derive(Clone, Debug)]
pub struct ClockReading {
    boot: BootId,
    since_boot: Duration,
    wall: SystemTime,
}

impl ClockReading {
    /// Reads `clock`.
    pub fn read(clock: &dyn HostClock) -> Self {
        Self {
            boot: clock.boot_id(),
            since_boot: clock.since_boot(),
            wall: clock.wall(),
        }
    }

    /// A reading with every value given (for tests of code that uses one).
    pub fn at(boot: BootId, since_boot: Duration, wall: SystemTime) -> Self {
        Self {
            boot,
            since_boot,
            wall,
        }
    }

    /// The id of the boot this reading was taken in.
    pub fn boot(&self) -> &BootId {
        &self.boot
    }

    /// Whole milliseconds since boot, rounded down: a lease is live while this is below its
    /// stored expiry.
    pub fn boot_ms(&self) -> u64 {
        u64::try_from(self.since_boot.as_millis()).unwrap_or(u64::MAX)
    }

    /// The boot-clock millisecond at which a lease granted or renewed now for `ttl`
    /// expires, rounded up, so that compared with [`boot_ms`](Self::boot_ms) (rounded down)
    /// it never lasts less than `ttl`. Saturates instead of overflowing.
    pub fn expiry_ms(&self, ttl: Duration) -> u64 {
        let at = self.since_boot.saturating_add(ttl);
        u64::try_from(at.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    /// True for a lease recorded under `boot_id` whose boot-clock expiry is `expires_ms`.
    pub fn is_live(&self, boot_id: &str, expires_ms: u64) -> bool {
        boot_id == self.boot.as_str() && expires_ms > self.boot_ms()
    }

    /// The wall clock in microseconds since the Unix epoch: the clock half of a hybrid
    /// fence ([`next_fence`](super::fence::next_fence)).
    pub fn fence_clock(&self) -> u64 {
        super::fence::micros_since_epoch(self.wall)
    }

    /// The wall clock in milliseconds since the Unix epoch (for `acquired_at`).
    pub fn wall_ms(&self) -> i64 {
        super::time::to_unix_millis(self.wall)
    }

    /// A wall-clock expiry written by an older format (milliseconds since the epoch) moved
    /// onto this boot's clock: as far ahead of the boot clock now as it is of the wall clock
    /// now; 0 (expired) when it has passed. A live lease of an older format thus keeps the
    /// time it had left, judged once on this reading's wall clock.
    pub fn boot_ms_of_wall_expiry(&self, expires_at_ms: i64) -> u64 {
        let left = expires_at_ms.saturating_sub(self.wall_ms());
        match u64::try_from(left) {
            Ok(left) if left > 0 => self.boot_ms().saturating_add(left),
            _ => 0,
        }
    }
}

impl HostClock for ClockReading {
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

/// A test hook: the system's boot clock with a wall clock the test steps, and optionally
/// another boot id, so tests can play an NTP step, a clock far ahead, or a reboot without
/// touching the system clock.
///
/// ```
/// use std::time::Duration;
/// use lock_core::backend_kit::clock::{HostClock, SteppedClock, SystemClock};
///
/// let clock = SteppedClock::new();
/// clock.step_wall(Duration::from_secs(120), true); // the wall clock jumps 2 minutes ahead
/// assert!(clock.wall() > SystemClock.wall() + Duration::from_secs(119));
/// let boot = SystemClock.since_boot();
/// assert!(clock.since_boot() >= boot); // the boot clock did not move
/// ```
#[derive(Debug, Default)]
pub struct SteppedClock {
    wall_offset_nanos: AtomicI64,
    boot_id: Mutex<Option<BootId>>,
}

impl SteppedClock {
    /// The system's clocks, not yet stepped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Steps the wall clock by `by`, forward or (with `forward` false) backward.
    pub fn step_wall(&self, by: Duration, forward: bool) {
        let nanos = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        let delta = if forward { nanos } else { -nanos };
        self.wall_offset_nanos.fetch_add(delta, Ordering::SeqCst);
    }

    /// Pretends the host booted again (or, for a record written by another process,
    /// that this process runs in another boot than the record's).
    pub fn set_boot_id(&self, id: BootId) {
        *self.boot_id.lock().unwrap_or_else(PoisonError::into_inner) = Some(id);
    }
}

impl HostClock for SteppedClock {
    fn wall(&self) -> SystemTime {
        let offset = self.wall_offset_nanos.load(Ordering::SeqCst);
        let now = SystemTime::now();
        let step = Duration::from_nanos(offset.unsigned_abs());
        if offset >= 0 {
            now.checked_add(step).unwrap_or(now)
        } else {
            now.checked_sub(step).unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }

    fn since_boot(&self) -> Duration {
        boot_clock::now()
    }

    fn boot_id(&self) -> BootId {
        self.boot_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| SystemClock.boot_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_clock_moves_forward_and_the_boot_id_is_stable() {
        let a = SystemClock.since_boot();
        std::thread::sleep(Duration::from_millis(2));
        let b = SystemClock.since_boot();
        assert!(b > a, "{a:?} then {b:?}");
        assert_eq!(SystemClock.boot_id(), SystemClock.boot_id());
        #[cfg(target_os = "linux")]
        assert_eq!(SystemClock.boot_id().as_str().len(), 36, "a UUID");
    }

    #[test]
    fn stepping_moves_the_wall_clock_only() {
        let clock = SteppedClock::new();
        clock.step_wall(Duration::from_secs(3600), false);
        let wall = clock.wall();
        assert!(wall < SystemTime::now() - Duration::from_secs(3599));
        let boot = clock.since_boot();
        assert!(boot.abs_diff(SystemClock.since_boot()) < Duration::from_secs(1));
        clock.set_boot_id(BootId::new("another-boot"));
        assert_eq!(clock.boot_id().as_str(), "another-boot");
    }

    fn reading(since_boot: Duration) -> ClockReading {
        ClockReading::at(
            BootId::new("test-boot"),
            since_boot,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
    }

    #[test]
    fn expiry_rounds_up_and_is_judged_on_this_boot_only() {
        let now = reading(Duration::new(100, 250_000));
        assert_eq!(now.boot_ms(), 100_000);
        assert_eq!(now.expiry_ms(Duration::from_millis(10)), 100_011);
        let whole = reading(Duration::from_millis(100_000));
        assert_eq!(whole.expiry_ms(Duration::from_millis(10)), 100_010);
        assert_eq!(whole.expiry_ms(Duration::MAX), u64::MAX);
        assert!(whole.is_live("test-boot", 100_001));
        assert!(!whole.is_live("test-boot", 100_000));
        assert!(!whole.is_live("another-boot", 200_000));
        assert_eq!(whole.fence_clock(), 1_700_000_000_000_000);
        assert_eq!(whole.wall_ms(), 1_700_000_000_000);
    }

    #[test]
    fn an_older_wall_clock_expiry_keeps_its_time_left() {
        let now = reading(Duration::from_secs(100));
        assert_eq!(now.boot_ms_of_wall_expiry(now.wall_ms() + 2_500), 102_500);
        assert_eq!(now.boot_ms_of_wall_expiry(now.wall_ms()), 0);
        assert_eq!(now.boot_ms_of_wall_expiry(i64::MIN), 0);
        assert_eq!(
            now.boot_ms_of_wall_expiry(i64::MAX),
            u64::try_from(i64::MAX).unwrap() - 1_700_000_000_000 + 100_000
        );
    }

    #[test]
    fn a_reading_shows_boot_clock_moments_on_its_own_wall_clock() {
        let now = reading(Duration::from_secs(100));
        assert_eq!(
            now.wall_at(Duration::from_secs(160)),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_060)
        );
        assert_eq!(
            now.wall_at(Duration::from_secs(40)),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_699_999_940)
        );
    }

    #[test]
    fn wall_at_converts_a_boot_clock_moment() {
        let clock = SystemClock;
        let in_a_minute = clock.since_boot() + Duration::from_secs(60);
        let shown = clock.wall_at(in_a_minute);
        let expected = SystemTime::now() + Duration::from_secs(60);
        let diff = shown
            .duration_since(expected)
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(1), "{diff:?}");
    }
}
