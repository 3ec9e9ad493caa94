//! Metrics through the [`metrics`](https://docs.rs/metrics) facade, with feature `metrics`;
//! any exporter (Prometheus, StatsD, OpenTelemetry, ...) installed as the recorder receives
//! them. Without the feature every function here is empty and the crate does not depend on
//! `metrics`: instrumented code costs nothing.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `leaselock_acquisitions_total` | counter | `backend`, `operation` | leases acquired by `try_lock` or `lock` |
//! | `leaselock_contended_total` | counter | `backend`, `operation` | attempts that found every permit held |
//! | `leaselock_timeouts_total` | counter | `backend`, `operation` | `lock` calls that gave up with `Timeout` |
//! | `leaselock_losses_total` | counter | `backend`, `reason` | leases lost while held: `revoked` or `deadline_passed` |
//! | `leaselock_heartbeat_failures_total` | counter | `backend` | renewals that failed or went unanswered (they are retried until the deadline) |
//! | `leaselock_wait_seconds` | histogram | `backend`, `operation` | from the call to the acquisition |
//! | `leaselock_hold_seconds` | histogram | `backend` | from the acquisition to release, drop or loss (not counting a minimum hold's rest) |
//! | `leaselock_store_call_seconds` | histogram | `backend`, `operation` | each store call: `try_acquire`, `heartbeat`, `heartbeat_many`, `release`, `inspect` |
//!
//! `backend` is [`LockBackend::backend_name`](crate::LockBackend::backend_name). Lock names
//! can be unbounded, so they are a label (`lock`) only for calls whose options ask for it
//! ([`LockOptions::with_lock_name_in_metrics`](crate::LockOptions::with_lock_name_in_metrics));
//! a batched `heartbeat_many` call never carries one.

use std::future::Future;
use std::time::Instant;

use crate::name::LockName;

/// Counter: leases acquired.
pub const ACQUISITIONS: &str = "leaselock_acquisitions_total";
/// Counter: attempts that found the lock held.
pub const CONTENDED: &str = "leaselock_contended_total";
/// Counter: `lock` calls that timed out.
pub const TIMEOUTS: &str = "leaselock_timeouts_total";
/// Counter: leases lost, by `reason`.
pub const LOSSES: &str = "leaselock_losses_total";
/// Counter: heartbeats that failed or went unanswered.
pub const HEARTBEAT_FAILURES: &str = "leaselock_heartbeat_failures_total";
/// Histogram: seconds from a `lock` or `try_lock` call to its acquisition.
pub const WAIT_SECONDS: &str = "leaselock_wait_seconds";
/// Histogram: seconds a lease was held.
pub const HOLD_SECONDS: &str = "leaselock_hold_seconds";
/// Histogram: seconds each store call took, by `operation`.
pub const STORE_CALL_SECONDS: &str = "leaselock_store_call_seconds";

/// The labels of one lease's or one call's metrics: the backend, and the lock name when the
/// caller opted in.
#[derive(Clone, Debug)]
pub(crate) struct Labels {
    #[cfg(feature = "metrics")]
    backend: &'static str,
    #[cfg(feature = "metrics")]
    lock: Option<String>,
}

impl Labels {
    /// Labels for `name` on `backend`; the name is a label only if `with_name`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(backend: &'static str, name: &LockName, with_name: bool) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            backend,
            #[cfg(feature = "metrics")]
            lock: with_name.then(|| name.as_str().to_owned()),
        }
    }

    /// Labels for a call about several locks at once: the backend alone.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn backend_only(backend: &'static str) -> Self {
        Self {
            #[cfg(feature = "metrics")]
            backend,
            #[cfg(feature = "metrics")]
            lock: None,
        }
    }

    #[cfg(feature = "metrics")]
    fn with(&self, key: &'static str, value: &'static str) -> Vec<metrics::Label> {
        let mut labels = vec![metrics::Label::new("backend", self.backend)];
        if !key.is_empty() {
            labels.push(metrics::Label::new(key, value));
        }
        if let Some(lock) = &self.lock {
            labels.push(metrics::Label::new("lock", lock.clone()));
        }
        labels
    }

    /// Times `call`, a store call named `operation`.
    pub(crate) async fn store_call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = T>,
    ) -> T {
        #[cfg(feature = "metrics")]
        {
            let start = crate::backend_kit::time::monotonic_now();
            let out = call.await;
            metrics::histogram!(STORE_CALL_SECONDS, self.with("operation", operation))
                .record(seconds_since(start));
            out
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = operation;
            call.await
        }
    }

    /// A lease was acquired by `operation`, which was called at `called`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn acquired(&self, operation: &'static str, called: Instant) {
        #[cfg(feature = "metrics")]
        {
            metrics::counter!(ACQUISITIONS, self.with("operation", operation)).increment(1);
            metrics::histogram!(WAIT_SECONDS, self.with("operation", operation))
                .record(seconds_since(called));
        }
    }

    /// An attempt of `operation` found the lock held.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn contended(&self, operation: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!(CONTENDED, self.with("operation", operation)).increment(1);
    }

    /// `operation` gave up with `Timeout`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn timed_out(&self, operation: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!(TIMEOUTS, self.with("operation", operation)).increment(1);
    }

    /// A held lease was lost for `reason` (`revoked`, `deadline_passed`).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn lost(&self, reason: &'static str) {
        #[cfg(feature = "metrics")]
        metrics::counter!(LOSSES, self.with("reason", reason)).increment(1);
    }

    /// A heartbeat failed or went unanswered.
    pub(crate) fn heartbeat_failed(&self) {
        #[cfg(feature = "metrics")]
        metrics::counter!(HEARTBEAT_FAILURES, self.with("", "")).increment(1);
    }

    /// A lease acquired at `acquired` stopped being held.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn held(&self, acquired: Instant) {
        #[cfg(feature = "metrics")]
        metrics::histogram!(HOLD_SECONDS, self.with("", "")).record(seconds_since(acquired));
    }
}

#[cfg(feature = "metrics")]
fn seconds_since(start: Instant) -> f64 {
    crate::backend_kit::time::monotonic_now()
        .saturating_duration_since(start)
        .as_secs_f64()
}
