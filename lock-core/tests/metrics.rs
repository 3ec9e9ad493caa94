//! The metrics of a scripted scenario on the memory backend, through metrics-util's recording
//! `DebuggingRecorder` (feature `metrics`), on Tokio's paused clock so that every count and
//! every duration is exact. One test: the recorder is global to this binary.

use std::collections::BTreeMap;
use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lock_core::memory::MemoryBackend;
use lock_core::telemetry::{
    ACQUISITIONS, CONTENDED, HEARTBEAT_FAILURES, HOLD_SECONDS, LOSSES, STORE_CALL_SECONDS,
    TIMEOUTS, WAIT_SECONDS,
};
use lock_core::{
    Capabilities, Holder, Lease, LeaseInfo, LockBackend, LockError, LockName, LockOptions, Locker,
    LossReason, Result, async_trait,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::time::sleep_until;

/// The memory backend, whose heartbeats can be made to hang (a store that stopped answering).
#[derive(Debug, Default)]
struct Hanging {
    inner: MemoryBackend,
    hang: AtomicBool,
}

#[async_trait]
impl LockBackend for Hanging {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.inner.try_acquire(name, holder, ttl).await
    }
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        if self.hang.load(Ordering::SeqCst) {
            pending::<()>().await;
        }
        self.inner.heartbeat(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<bool> {
        self.inner.release(lease).await
    }
    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        self.inner.inspect(name).await
    }
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.inner.force_release(name).await
    }
    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        self.inner.wait_for_change(name, since, max).await;
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

type Labels = Vec<(String, String)>;

/// A recorded metric: its name and its labels, sorted.
fn key(name: &str, labels: &[(&str, &str)]) -> (String, Labels) {
    let mut labels: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

#[tokio::test(start_paused = true)]
async fn a_scripted_scenario_records_exact_counts_and_durations() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    let store = Arc::new(Hanging::default());
    let locker = Locker::new(Arc::clone(&store) as Arc<dyn LockBackend>);
    let secs = Duration::from_secs_f64;
    let opts = LockOptions::default()
        .with_ttl(secs(3.0))
        .with_label("metrics");
    let t0 = tokio::time::Instant::now();

    // t=0: acquired; a try_lock and a lock with no wait find it held.
    let first = locker.lock("jobs", &opts).await.unwrap();
    assert!(locker.try_lock("jobs", &opts).await.unwrap().is_none());
    let no_wait = locker
        .lock("jobs", opts.clone().with_wait(Duration::ZERO))
        .await;
    assert!(
        matches!(no_wait, Err(LockError::Timeout { .. })),
        "{no_wait:?}"
    );
    // A waiter: one contended attempt, then it sleeps (5..10 s of backoff) until the release
    // wakes it.
    let waiter = {
        let (locker, opts) = (locker.clone(), opts.clone());
        tokio::spawn(async move {
            let slow = opts.with_backoff(secs(10.0), secs(10.0));
            locker.lock("jobs", slow).await.unwrap()
        })
    };
    // t=1: a heartbeat; t=1.5: released after 1.5 s, and the waiter has it.
    sleep_until(t0 + secs(1.5)).await;
    assert!(first.release().await.unwrap());
    let second = waiter.await.unwrap();
    // Its heartbeat at t=2.5 finds it force-released: a loss, revoked.
    assert!(store.force_release(&second.name()).await.unwrap());
    assert_eq!(second.lost().await, LossReason::Revoked);
    assert_eq!(tokio::time::Instant::now(), t0 + secs(2.5));
    drop(second);

    // t=2.5: a lock labelled with its name; its heartbeat at t=3.5 never answers, and at its
    // deadline (t=2.5 + 3 - 0.3) it is lost.
    store.hang.store(true, Ordering::SeqCst);
    let named = locker
        .lock("named", opts.clone().with_lock_name_in_metrics(true))
        .await
        .unwrap();
    assert_eq!(named.lost().await, LossReason::DeadlinePassed);
    assert_eq!(tokio::time::Instant::now(), t0 + secs(5.2));
    // The heartbeat scheduler, a task of its own, gives up on the unanswered renewal at the
    // same instant: a millisecond of paused time lets it run before anything else happens
    // (the release below runs in this task and would otherwise finish first).
    tokio::time::sleep(Duration::from_millis(1)).await;
    store.hang.store(false, Ordering::SeqCst);
    assert!(named.release().await.unwrap(), "the store still had it");

    let mut counters = BTreeMap::new();
    let mut histograms = BTreeMap::new();
    for (composite, _, _, value) in snapshotter.snapshot().into_vec() {
        let k = composite.key();
        let labels: Vec<(&str, &str)> = k.labels().map(|l| (l.key(), l.value())).collect();
        let id = key(k.name(), &labels);
        match value {
            DebugValue::Counter(n) => {
                counters.insert(id, n);
            }
            DebugValue::Histogram(samples) => {
                histograms.insert(id, samples.into_iter().map(|s| s.0).collect::<Vec<f64>>());
            }
            DebugValue::Gauge(_) => panic!("no gauges are recorded: {id:?}"),
        }
    }

    let memory = ("backend", "memory");
    let named_lock = ("lock", "named");
    let expected_counters = BTreeMap::from([
        (key(ACQUISITIONS, &[memory, ("operation", "lock")]), 2),
        (
            key(ACQUISITIONS, &[memory, ("operation", "lock"), named_lock]),
            1,
        ),
        (key(CONTENDED, &[memory, ("operation", "try_lock")]), 1),
        (key(CONTENDED, &[memory, ("operation", "lock")]), 2),
        (key(TIMEOUTS, &[memory, ("operation", "lock")]), 1),
        (key(LOSSES, &[memory, ("reason", "revoked")]), 1),
        (
            key(LOSSES, &[memory, ("reason", "deadline_passed"), named_lock]),
            1,
        ),
        (key(HEARTBEAT_FAILURES, &[memory, named_lock]), 1),
    ]);
    assert_eq!(counters, expected_counters);

    let close = |got: &[f64], want: &[f64]| {
        got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-9)
    };
    let expected_histograms: [((String, Labels), Vec<f64>); 9] = [
        (
            key(WAIT_SECONDS, &[memory, ("operation", "lock")]),
            vec![0.0, 1.5],
        ),
        (
            key(WAIT_SECONDS, &[memory, ("operation", "lock"), named_lock]),
            vec![0.0],
        ),
        // Released after 1.5 s; lost 1 s after it was acquired.
        (key(HOLD_SECONDS, &[memory]), vec![1.5, 1.0]),
        (key(HOLD_SECONDS, &[memory, named_lock]), vec![2.7]),
        // Every store call, each instant on the paused clock: five acquisitions of "jobs",
        // heartbeats at t=1 and t=2.5 (the hanging one never finished), one release.
        (
            key(STORE_CALL_SECONDS, &[memory, ("operation", "try_acquire")]),
            vec![0.0; 5],
        ),
        (
            key(STORE_CALL_SECONDS, &[memory, ("operation", "heartbeat")]),
            vec![0.0; 2],
        ),
        (
            key(STORE_CALL_SECONDS, &[memory, ("operation", "release")]),
            vec![0.0],
        ),
        (
            key(
                STORE_CALL_SECONDS,
                &[memory, ("operation", "try_acquire"), named_lock],
            ),
            vec![0.0],
        ),
        (
            key(
                STORE_CALL_SECONDS,
                &[memory, ("operation", "release"), named_lock],
            ),
            vec![0.0],
        ),
    ];
    for (id, want) in &expected_histograms {
        let got = histograms.remove(id).unwrap_or_default();
        assert!(close(&got, want), "{id:?}: {got:?}, expected {want:?}");
    }
    assert!(
        histograms.is_empty(),
        "unexpected histograms: {histograms:?}"
    );
}
