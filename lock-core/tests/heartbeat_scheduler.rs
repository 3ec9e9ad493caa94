//! The locker's heartbeat scheduler: leases that fall due together are renewed in one store
//! call when the backend can batch, one call each otherwise, and a lease's fate never
//! depends on the others in its batch. On Tokio's paused clock, so counts are exact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lock_core::memory::MemoryBackend;
use lock_core::{
    Capabilities, Holder, Lease, LeaseInfo, LockBackend, LockGuard, LockName, LockOptions, Locker,
    LossReason, Result, async_trait,
};

const TTL: Duration = Duration::from_secs(3);

fn opts() -> LockOptions {
    LockOptions::default().with_ttl(TTL).with_label("scheduler")
}

/// Forwards to a [`MemoryBackend`], counting renewal calls, with batching on or off.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryBackend,
    batched: bool,
    /// Answer `heartbeat_many` with one result fewer than asked (a buggy backend).
    short_answers: bool,
    single_calls: AtomicUsize,
    batch_sizes: Mutex<Vec<usize>>,
}

impl Counting {
    fn batching() -> Self {
        Self {
            batched: true,
            ..Self::default()
        }
    }

    fn batch_calls(&self) -> usize {
        self.batch_sizes.lock().unwrap().len()
    }

    fn renewed_in_batches(&self) -> usize {
        self.batch_sizes.lock().unwrap().iter().sum()
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
        self.inner.try_acquire(name, holder, ttl).await
    }
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.single_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.heartbeat(lease, ttl).await
    }
    async fn heartbeat_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Lease>> {
        self.batch_sizes.lock().unwrap().push(leases.len());
        let mut out = Vec::new();
        for lease in leases {
            out.push(self.inner.heartbeat(lease, ttl).await);
        }
        if self.short_answers {
            out.pop();
        }
        out
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
    fn capabilities(&self) -> Capabilities {
        self.inner
            .capabilities()
            .with_batched_heartbeat(self.batched)
    }
}

/// Takes `n` locks named `prefix-i`, `gap` apart.
async fn take(locker: &Locker, prefix: &str, n: usize, gap: Duration) -> Vec<LockGuard> {
    let mut guards = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let guard = locker.try_lock(name.as_str(), opts()).await.unwrap();
        guards.push(guard.expect("free"));
        tokio::time::sleep(gap).await;
    }
    guards
}

fn all_held(guards: &[LockGuard]) -> bool {
    guards.iter().all(LockGuard::is_held)
}

#[tokio::test(start_paused = true)]
async fn leases_falling_due_together_are_renewed_in_one_call() {
    let backend = Arc::new(Counting::batching());
    let locker = Locker::new(backend.clone());
    // 200 leases acquired over 200 ms: well inside the window of a quarter interval
    // (250 ms) within which a lease may be renewed early to join a batch.
    let guards = take(&locker, "job", 200, Duration::from_millis(1)).await;
    tokio::time::sleep(TTL * 10).await;

    assert!(all_held(&guards));
    assert_eq!(backend.single_calls.load(Ordering::SeqCst), 0);
    // One call per heartbeat interval (TTL / 3 = 1 s) for all 200: 30 in 30 s.
    assert_eq!(backend.batch_calls(), 30);
    assert_eq!(backend.renewed_in_batches(), 200 * 30);
}

#[tokio::test(start_paused = true)]
async fn leases_taken_apart_form_one_batch_each() {
    let backend = Arc::new(Counting::batching());
    let locker = Locker::new(backend.clone());
    let mut guards = take(&locker, "early", 50, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // beyond the 250 ms window
    guards.extend(take(&locker, "late", 50, Duration::ZERO).await);
    tokio::time::sleep(TTL * 10).await;

    assert!(all_held(&guards));
    let sizes = backend.batch_sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| n == 50), "{sizes:?}");
    // The early ones at 1, 2, .. 30 s; the late ones at 1.5, 2.5, .. 29.5 s.
    assert_eq!(sizes.len(), 30 + 29);
}

#[tokio::test(start_paused = true)]
async fn without_batching_every_lease_gets_its_own_heartbeat() {
    let backend = Arc::new(Counting::default());
    let locker = Locker::new(backend.clone());
    let guards = take(&locker, "job", 50, Duration::from_millis(1)).await;
    tokio::time::sleep(TTL * 10).await;

    assert!(all_held(&guards));
    assert_eq!(backend.batch_calls(), 0);
    assert_eq!(backend.single_calls.load(Ordering::SeqCst), 50 * 30);
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_in_a_batch_ends_only_its_own_guard() {
    let backend = Arc::new(Counting::batching());
    let locker = Locker::new(backend.clone());
    let guards = take(&locker, "job", 10, Duration::ZERO).await;
    let broken = LockName::new("job-3").unwrap();
    assert!(backend.inner.force_release(&broken).await.unwrap());

    let start = tokio::time::Instant::now();
    assert_eq!(guards[3].lost().await, LossReason::Revoked);
    assert_eq!(start.elapsed(), TTL / 3, "lost at the next renewal");
    tokio::time::sleep(TTL * 3).await;
    for (i, guard) in guards.iter().enumerate() {
        assert_eq!(guard.is_held(), i != 3, "guard {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_backend_answering_too_few_results_only_delays_the_unanswered_lease() {
    let backend = Arc::new(Counting {
        short_answers: true,
        ..Counting::batching()
    });
    let locker = Locker::new(backend.clone());
    let guards = take(&locker, "job", 5, Duration::ZERO).await;
    tokio::time::sleep(TTL * 10 + Duration::from_millis(1)).await;
    // The last lease of each batch goes unanswered; it is retried alone, by a plain
    // heartbeat, and so stays held like the others.
    assert!(all_held(&guards));
    assert_eq!(backend.batch_calls(), 30);
    // Each retry comes 50 to 100 ms after its batch: the one after the batch at 30 s is
    // still to come.
    assert_eq!(backend.single_calls.load(Ordering::SeqCst), 29);
}

#[tokio::test(start_paused = true)]
async fn guards_keep_their_leases_after_the_locker_is_dropped() {
    let backend = Arc::new(Counting::batching());
    let locker = Locker::new(backend.clone());
    let guards = take(&locker, "job", 3, Duration::ZERO).await;
    drop(locker);
    tokio::time::sleep(TTL * 10).await;
    assert!(all_held(&guards));
    for guard in guards {
        assert!(guard.release().await.unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn a_released_guard_is_no_longer_renewed() {
    let backend = Arc::new(Counting::default());
    let locker = Locker::new(backend.clone());
    let guard = locker.try_lock("job", opts()).await.unwrap().unwrap();
    tokio::time::sleep(TTL + Duration::from_millis(1)).await;
    let before = backend.single_calls.load(Ordering::SeqCst);
    assert_eq!(before, 3);
    assert!(guard.release().await.unwrap());
    tokio::time::sleep(TTL * 3).await;
    assert_eq!(backend.single_calls.load(Ordering::SeqCst), before);
}

/// A locker outlives the runtime its scheduler ran on (a runtime per test, a locker in a
/// static): the next guard starts a scheduler on the current runtime.
#[test]
fn the_scheduler_restarts_on_a_new_runtime() {
    let backend = Arc::new(Counting::default());
    let locker = Locker::new(backend.clone());
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    };
    runtime().block_on(async {
        let guard = locker.try_lock("first", opts()).await.unwrap().unwrap();
        tokio::time::sleep(TTL + Duration::from_millis(1)).await;
        assert!(guard.release().await.unwrap());
    });
    let renewed_on_first = backend.single_calls.load(Ordering::SeqCst);
    assert_eq!(renewed_on_first, 3);
    runtime().block_on(async {
        let started = Instant::now();
        let guard = locker.try_lock("second", opts()).await.unwrap().unwrap();
        tokio::time::sleep(TTL * 3 + Duration::from_millis(1)).await;
        assert!(guard.is_held(), "renewed by a new scheduler");
        assert!(started.elapsed() < TTL, "on the paused clock");
        assert!(guard.release().await.unwrap());
    });
    assert_eq!(backend.single_calls.load(Ordering::SeqCst), 3 + 9);
}
