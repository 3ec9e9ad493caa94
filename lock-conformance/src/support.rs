//! Small helpers the cases share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lock_core::{Holder, Lease, LockBackend, LockName};

/// A lease that must not expire during a case.
pub const LONG_TTL: Duration = Duration::from_secs(60);

/// The TTL of leases a case lets expire. Long enough that a loaded machine cannot stall a
/// case past it by accident, short enough that the suite stays quick.
pub const SHORT_TTL: Duration = Duration::from_millis(1000);

/// Slack added to every "this must have happened by now" wait. Generous relative to
/// [`SHORT_TTL`]: timing cases must never be flaky.
pub const SLACK: Duration = Duration::from_millis(1000);

/// A fresh holder (fresh owner token) labelled `label`.
pub fn holder(label: &str) -> Holder {
    Holder::current(label)
}

/// Acquires `name`, panicking with context if the store refuses or fails.
pub async fn acquire(
    backend: &Arc<dyn LockBackend>,
    name: &LockName,
    who: &Holder,
    ttl: Duration,
) -> Lease {
    match backend.try_acquire(name, who, ttl).await {
        Ok(Some(lease)) => {
            assert_eq!(&lease.name, name, "the lease is for another name");
            assert_eq!(
                lease.holder.token, who.token,
                "the lease carries another token"
            );
            lease
        }
        Ok(None) => panic!("{name:?} should have been free for {}", who.label),
        Err(e) => panic!("acquiring {name:?} failed: {e}"),
    }
}

/// Asserts that `name` is held by someone else right now.
pub async fn assert_held(backend: &Arc<dyn LockBackend>, name: &LockName, why: &str) {
    let intruder = holder("intruder");
    match backend.try_acquire(name, &intruder, LONG_TTL).await {
        Ok(None) => {}
        Ok(Some(lease)) => {
            let _ = backend.release(&lease).await;
            panic!("{name:?} was free but should be held: {why}");
        }
        Err(e) => panic!("probing {name:?} failed: {e}"),
    }
}

/// Waits until `inspect(name)` is `None`, for at most `within`. Returns how long it took.
pub async fn until_free(
    backend: &Arc<dyn LockBackend>,
    name: &LockName,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        match backend.inspect(name).await {
            Ok(None) => return start.elapsed(),
            Ok(Some(info)) if start.elapsed() < within => {
                let _ = info;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Some(info)) => panic!("{name:?} still held after {within:?}: {info:?}"),
            Err(e) => panic!("inspecting {name:?} failed: {e}"),
        }
    }
}

/// Sleeps until `at` (returns at once if it passed).
pub async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}
