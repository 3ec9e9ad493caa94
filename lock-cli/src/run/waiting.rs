//! The line `lockctl run` prints when it has to wait for the lock: who holds it, and for how
//! long lockctl will wait (as cargo's "Blocking waiting for file lock" does), so that a
//! job that seems to hang says why, and the operator knows whom to look at (`lockctl
//! status`, `lockctl release --force`). `--quiet` leaves it out.

use std::time::{Duration, SystemTime};

use leaselock::{LeaseInfo, LockName};

use crate::status::describe_holder;

/// At most this many holders of a semaphore are named; the rest are counted.
const NAMED_AT_MOST: usize = 3;

/// The line (without the `lockctl: ` prefix) for a wait on `name`, which `holders` held
/// when lockctl looked (none if it could not see, or the lock was freed meanwhile), with
/// `--wait` `wait`.
pub(crate) fn waiting_line(
    name: &LockName,
    holders: &[LeaseInfo],
    wait: Option<Duration>,
    now: SystemTime,
) -> String {
    let held = match holders {
        [] => format!("lock \"{name}\" is held"),
        [one] if one.limit <= 1 => {
            format!("lock \"{name}\" is held by {}", describe_holder(one, now))
        }
        many => {
            let named: Vec<String> = many
                .iter()
                .take(NAMED_AT_MOST)
                .map(|info| describe_holder(info, now))
                .collect();
            let more = match many.len().saturating_sub(NAMED_AT_MOST) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            let limit = many.iter().map(|info| info.limit).max().unwrap_or(1);
            format!(
                "all {limit} permits of lock \"{name}\" are held, by {}{more}",
                named.join(", ")
            )
        }
    };
    match wait {
        Some(wait) => format!(
            "{held}; waiting for it (at most {})",
            humantime::format_duration(wait)
        ),
        None => format!("{held}; waiting for it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> LockName {
        LockName::new("nightly").unwrap()
    }

    fn holder(label: &str, pid: u32, fence: u64, limit: u32, now: SystemTime) -> LeaseInfo {
        LeaseInfo::new(
            name(),
            label,
            pid,
            "web1",
            fence,
            now - Duration::from_secs(192),
            // Half a second over, so that the time left, read later, still rounds to 20 s.
            now + Duration::from_millis(20_500),
        )
        .with_limit(limit)
    }

    #[test]
    fn one_holder_is_named_with_how_long_it_has_held_the_lock() {
        let now = SystemTime::now();
        let line = waiting_line(&name(), &[holder("make image", 42, 7, 1, now)], None, now);
        assert_eq!(
            line,
            "lock \"nightly\" is held by \"make image\" (pid 42 on web1, fence 7, held for 3m 12s, 20s left); waiting for it"
        );
    }

    #[test]
    fn the_wait_is_said_when_there_is_one() {
        let now = SystemTime::now();
        let line = waiting_line(&name(), &[], Some(Duration::from_secs(90)), now);
        assert_eq!(
            line,
            "lock \"nightly\" is held; waiting for it (at most 1m 30s)"
        );
    }

    #[test]
    fn a_full_semaphore_names_its_first_holders_and_counts_the_rest() {
        let now = SystemTime::now();
        let holders: Vec<LeaseInfo> = (1..=5)
            .map(|i| holder(&format!("job {i}"), 100 + i, u64::from(i), 5, now))
            .collect();
        let line = waiting_line(&name(), &holders, None, now);
        assert!(
            line.starts_with("all 5 permits of lock \"nightly\" are held, by \"job 1\" (pid 101 on web1, fence 1, "),
            "{line}"
        );
        assert!(line.contains("\"job 3\" (pid 103"), "{line}");
        assert!(!line.contains("job 4"), "{line}");
        assert!(line.ends_with(" and 2 more; waiting for it"), "{line}");
    }

    #[test]
    fn a_holder_whose_clock_is_ahead_is_not_given_a_time_held() {
        let now = SystemTime::now();
        let mut ahead = holder("other host", 9, 3, 1, now);
        ahead.acquired_at = now + Duration::from_secs(5);
        let line = waiting_line(&name(), &[ahead], None, now);
        assert!(
            line.contains("(pid 9 on web1, fence 3, 20s left)"),
            "{line}"
        );
    }
}
