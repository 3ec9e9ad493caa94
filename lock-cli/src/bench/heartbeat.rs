//! Heartbeat cost: many leases held by one process through `Locker`, so whatever the library
//! does to keep them alive (one call per lease, or batches) is what is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use leaselock::{
    Capabilities, Holder, Lease, LeaseInfo, LockBackend, LockName, LockOptions, Locker, Result,
    async_trait,
};

use super::steps::{Call, StepLog};
use super::worker::monotonic_nanos;
use crate::error::CliError;

/// Forwards to a backend, counting store calls that keep leases alive, and acquire
/// attempts.
#[derive(Debug)]
pub(crate) struct Counting {
    inner: Arc<dyn LockBackend>,
    /// `heartbeat` and `heartbeat_many` calls: round trips to the store.
    pub(crate) calls: AtomicU64,
    /// Leases renewed by those calls.
    pub(crate) renewed: AtomicU64,
    /// `try_acquire` and `try_acquire_permit` calls.
    pub(crate) attempts: AtomicU64,
    /// Where to record when attempts, releases and waits began and ended, if anywhere.
    pub(crate) steps: Option<Arc<StepLog>>,
}

impl Counting {
    pub(crate) fn new(inner: Arc<dyn LockBackend>) -> Self {
        Self {
            inner,
            calls: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            steps: None,
        }
    }

    /// Runs `call`, recording its begin and end as `kind` when steps are recorded.
    async fn timed<T>(&self, kind: Call, call: impl Future<Output = T>) -> T {
        let Some(steps) = &self.steps else {
            return call.await;
        };
        let begin = monotonic_nanos();
        let out = call.await;
        steps.record(kind, begin, monotonic_nanos());
        out
    }
}

#[async_trait]
impl LockBackend for Counting {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.timed(Call::Attempt, self.inner.try_acquire(name, holder, ttl))
            .await
    }
    async fn try_acquire_permit(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
    ) -> Result<Option<Lease>> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let attempt = self.inner.try_acquire_permit(name, holder, ttl, limit);
        self.timed(Call::Attempt, attempt).await
    }
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let renewed = self.inner.heartbeat(lease, ttl).await;
        if renewed.is_ok() {
            self.renewed.fetch_add(1, Ordering::Relaxed);
        }
        renewed
    }
    async fn release(&self, lease: &Lease) -> Result<bool> {
        self.timed(Call::Release, self.inner.release(lease)).await
    }
    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        self.inner.inspect(name).await
    }
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.inner.force_release(name).await
    }
    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        self.inner.wait_for_change(name, since, max).await;
        if let Some(steps) = &self.steps {
            let woke = monotonic_nanos();
            steps.record(Call::Woke, woke, woke);
        }
    }
    async fn give_way(&self, name: &LockName, max: Duration) {
        self.inner.give_way(name, max).await;
    }
    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
        self.inner.list(prefix).await
    }
    async fn heartbeat_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Lease>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let results = self.inner.heartbeat_many(leases, ttl).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        self.renewed.fetch_add(ok as u64, Ordering::Relaxed);
        results
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given a valid pointer to.
    #[allow(unsafe_code)]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What holding the leases cost.
#[derive(Debug)]
pub(crate) struct HeartbeatCost {
    pub(crate) leases: usize,
    pub(crate) seconds: f64,
    pub(crate) cpu_percent_of_one_core: f64,
    pub(crate) store_calls_per_sec: f64,
    pub(crate) leases_renewed_per_sec: f64,
    pub(crate) lost: usize,
}

/// Holds `leases` leases of `ttl` for `hold`, then releases them.
pub(crate) async fn measure(
    backend: Arc<dyn LockBackend>,
    prefix: &str,
    leases: usize,
    ttl: Duration,
    hold: Duration,
    progress: &mut super::Progress,
) -> std::result::Result<HeartbeatCost, CliError> {
    let counting = Arc::new(Counting::new(backend));
    let locker = Locker::new(counting.clone());
    let opts = LockOptions::default()
        .with_ttl(ttl)
        .with_label("lockctl bench");
    let mut guards = Vec::with_capacity(leases);
    for i in 0..leases {
        let name = format!("{prefix}hb-{i}");
        match locker.try_lock(name.as_str(), &opts).await? {
            Some(guard) => guards.push(guard),
            None => {
                return Err(CliError::Bench(format!(
                    "lock {name:?} is held by someone else; use a store with no bench locks"
                )));
            }
        }
        if i % 500 == 0 {
            progress.update(&format!("heartbeat: acquiring {i}/{leases}"));
        }
    }
    // Measure only steady state, from the first full heartbeat period on, and start half-way
    // between two renewals (each lease is renewed every TTL / 3): a window that began just
    // after a renewal and lasts one period could end just before the next, which then counts
    // nothing (`lockctl bench --quick --duration 1s` measured zero renewals once that way).
    tokio::time::sleep(ttl / 3 + ttl / 6).await;
    let (calls, renewed) = (
        counting.calls.load(Ordering::Relaxed),
        counting.renewed.load(Ordering::Relaxed),
    );
    let (cpu, start) = (cpu_time(), Instant::now());
    while start.elapsed() < hold {
        progress.update(&format!(
            "heartbeat: holding {leases} leases, {:.0}/{:.0}s",
            start.elapsed().as_secs_f64(),
            hold.as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(500).min(hold)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let used = (cpu_time() - cpu).as_secs_f64();
    let calls = counting.calls.load(Ordering::Relaxed) - calls;
    let renewed = counting.renewed.load(Ordering::Relaxed) - renewed;
    let lost = guards.iter().filter(|g| !g.is_held()).count();
    for guard in guards {
        let _ = guard.release().await;
    }
    Ok(HeartbeatCost {
        leases,
        seconds,
        cpu_percent_of_one_core: 100.0 * used / seconds,
        store_calls_per_sec: calls as f64 / seconds,
        leases_renewed_per_sec: renewed as f64 / seconds,
        lost,
    })
}
