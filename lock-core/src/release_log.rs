//! [`ReleaseLog`]: releases this process has seen, for backends that wake waiters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::name::LockName;
use crate::time::monotonic_now;

/// How long a release is remembered: far longer than any gap between a waiter's failed
/// attempt and its wait.
const REMEMBER: Duration = Duration::from_secs(10);
/// Above this many remembered names, old entries are dropped.
const PRUNE_ABOVE: usize = 4096;

/// Releases seen by this process (its own, or notifications from the store), and the waiters
/// to wake for them.
///
/// A waiter that failed to acquire at `since` and then waits must not miss a release that
/// happened between its attempt and its wait: [`wait`](Self::wait) returns at once if the
/// name was released after `since`. Backends record releases with [`record`](Self::record)
/// and implement [`LockBackend::wait_for_change_since`](crate::LockBackend::wait_for_change_since)
/// with `wait`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use lock_core::{LockName, ReleaseLog, time::monotonic_now};
///
/// let log = ReleaseLog::new();
/// let name = LockName::new("job").unwrap();
/// let since = monotonic_now();
/// log.record(&name); // released before the waiter got to wait
/// let start = monotonic_now();
/// log.wait(&name, since, Duration::from_secs(5)).await;
/// assert!(start.elapsed() < Duration::from_secs(1));
/// # }
/// ```
#[derive(Debug, Default)]
pub struct ReleaseLog {
    recent: Mutex<HashMap<String, Instant>>,
    notify: Notify,
}

impl ReleaseLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The log of the store identified by `store` (for example a canonical file path),
    /// shared by every backend value of this process that uses that store, so that a
    /// release through one wakes waiters on another. Kept while any holder of it lives.
    pub fn shared(store: &str) -> Arc<Self> {
        static LOGS: OnceLock<Mutex<HashMap<String, Weak<ReleaseLog>>>> = OnceLock::new();
        let mut logs = LOGS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = logs.get(store).and_then(Weak::upgrade) {
            return log;
        }
        logs.retain(|_, log| log.strong_count() > 0);
        let log = Arc::new(Self::new());
        logs.insert(store.to_owned(), Arc::downgrade(&log));
        log
    }

    /// Records that `name` was released just now and wakes its waiters.
    pub fn record(&self, name: &LockName) {
        self.record_str(name.as_str());
    }

    /// As [`record`](Self::record), for a name received as text (a store notification).
    pub fn record_str(&self, name: &str) {
        let now = monotonic_now();
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() >= PRUNE_ABOVE {
                recent.retain(|_, at| now.saturating_duration_since(*at) < REMEMBER);
            }
            recent.insert(name.to_owned(), now);
        }
        self.notify.notify_waiters();
    }

    /// Whether `name` was released at or after `since`.
    pub fn released_since(&self, name: &LockName, since: Instant) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name.as_str())
            .is_some_and(|at| *at >= since)
    }

    /// Waits until `name` is released after `since` (returning at once if it already was),
    /// or `max` passes.
    pub async fn wait(&self, name: &LockName, since: Instant, max: Duration) {
        let deadline = tokio::time::Instant::from_std(monotonic_now()) + max;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.released_since(name, since) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_release_before_the_wait_is_not_missed() {
        let log = ReleaseLog::new();
        let name = LockName::new("a").unwrap();
        let since = monotonic_now();
        log.record(&name);
        let start = monotonic_now();
        log.wait(&name, since, Duration::from_secs(5)).await;
        assert_eq!(monotonic_now(), start, "returned at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_of_another_name_or_before_since_does_not_wake() {
        let log = std::sync::Arc::new(ReleaseLog::new());
        let (a, b) = (LockName::new("a").unwrap(), LockName::new("b").unwrap());
        log.record(&a);
        tokio::time::advance(Duration::from_millis(1)).await;
        let since = monotonic_now();
        let waiter = {
            let (log, a) = (log.clone(), a.clone());
            tokio::spawn(async move { log.wait(&a, since, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        log.record(&b);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !waiter.is_finished(),
            "b's release and a's old one do not count"
        );
        log.record(&a);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(waiter.is_finished(), "a's new release wakes it");
    }

    #[test]
    fn one_log_per_store_while_it_is_used() {
        let a = ReleaseLog::shared("/tmp/x.db");
        assert!(Arc::ptr_eq(&a, &ReleaseLog::shared("/tmp/x.db")));
        assert!(!Arc::ptr_eq(&a, &ReleaseLog::shared("/tmp/y.db")));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_release_it_waits_max() {
        let log = ReleaseLog::new();
        let start = monotonic_now();
        log.wait(
            &LockName::new("a").unwrap(),
            start,
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(monotonic_now() - start, Duration::from_millis(300));
    }
}
