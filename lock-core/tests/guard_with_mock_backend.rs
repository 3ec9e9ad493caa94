//! The guard and locker logic against a mocked backend, on Tokio's paused clock so every
//! timing assertion is exact.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use lock_core::time::monotonic_now;
use lock_core::{
    Holder, Lease, LeaseInfo, LockBackend, LockError, LockName, LockOptions, Locker, LossReason,
    Result, async_trait,
};
use mockall::mock;
use tokio::time::Instant;

mock! {
    pub Backend {}

    #[async_trait]
    impl LockBackend for Backend {
        async fn try_acquire(&self, name: &LockName, holder: &Holder, ttl: Duration) -> Result<Option<Lease>>;
        async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;
        async fn release(&self, lease: &Lease) -> Result<bool>;
        async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>>;
        async fn force_release(&self, name: &LockName) -> Result<bool>;
    }
}

impl std::fmt::Debug for MockBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockBackend")
    }
}

const TTL: Duration = Duration::from_secs(3);

fn opts() -> LockOptions {
    LockOptions::default().with_ttl(TTL).with_label("mock")
}

fn granted(name: &LockName, holder: &Holder, ttl: Duration) -> Result<Option<Lease>> {
    Ok(Some(Lease::new(
        name.clone(),
        holder.clone(),
        7,
        SystemTime::now() + ttl,
        monotonic_now(),
        ttl,
    )))
}

fn renewed(lease: &Lease, ttl: Duration) -> Result<Lease> {
    Ok(lease.renewed(SystemTime::now() + ttl, monotonic_now(), ttl))
}

fn down() -> LockError {
    LockError::unavailable("mock", "connection refused")
}

/// A backend that grants every acquire and counts calls.
fn granting_backend() -> MockBackend {
    let mut backend = MockBackend::new();
    backend.expect_try_acquire().returning(granted);
    backend
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

#[tokio::test(start_paused = true)]
async fn heartbeat_every_third_of_ttl_keeps_the_lease() {
    let mut backend = granting_backend();
    let beats = counter();
    let b = Arc::clone(&beats);
    backend.expect_heartbeat().returning(move |lease, ttl| {
        b.fetch_add(1, Ordering::SeqCst);
        renewed(lease, ttl)
    });
    backend.expect_release().times(1).returning(|_| Ok(true));
    let locker = Locker::new(Arc::new(backend));

    let guard = locker.lock("job", opts()).await.unwrap();
    assert_eq!(guard.fence(), 7);
    tokio::time::sleep(TTL * 10 + Duration::from_millis(1)).await;
    assert!(guard.is_held());
    // One heartbeat per TTL/3 = 1 s: 30 in 30 s.
    assert_eq!(beats.load(Ordering::SeqCst), 30);
    assert!(guard.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn transient_heartbeat_failures_are_retried_and_recover() {
    let mut backend = granting_backend();
    let calls = counter();
    let c = Arc::clone(&calls);
    // The first three heartbeats fail as if the store were briefly down, then it recovers.
    backend.expect_heartbeat().returning(move |lease, ttl| {
        if c.fetch_add(1, Ordering::SeqCst) < 3 {
            Err(down())
        } else {
            renewed(lease, ttl)
        }
    });
    backend.expect_release().returning(|_| Ok(true));
    let locker = Locker::new(Arc::new(backend));

    let guard = locker.lock("job", opts()).await.unwrap();
    tokio::time::sleep(TTL * 5).await;
    assert!(
        guard.is_held(),
        "a brief outage inside the deadline must not lose the lease"
    );
    assert_eq!(guard.loss_reason(), None);
    assert!(calls.load(Ordering::SeqCst) > 3);
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn lease_lost_from_the_store_ends_the_guard_at_once() {
    let mut backend = granting_backend();
    backend.expect_heartbeat().returning(|lease, _| {
        Err(LockError::LeaseLost {
            name: lease.name.clone(),
        })
    });
    backend.expect_release().returning(|_| Ok(false));
    let locker = Locker::new(Arc::new(backend));

    let start = Instant::now();
    let guard = locker.lock("job", opts()).await.unwrap();
    assert_eq!(guard.lost().await, LossReason::Revoked);
    // Lost at the first heartbeat, one TTL/3 after acquiring.
    assert_eq!(start.elapsed(), TTL / 3);
    assert!(!guard.is_held());
    assert!(!guard.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn unreachable_store_loses_the_lease_exactly_at_the_local_deadline() {
    let mut backend = granting_backend();
    backend.expect_heartbeat().returning(|_, _| Err(down()));
    backend.expect_release().returning(|_| Err(down()));
    let locker = Locker::new(Arc::new(backend));

    let start = Instant::now();
    let guard = locker.lock("job", opts()).await.unwrap();
    // Deadline = sent + ttl - ttl/10 = 2.7 s.
    let deadline = TTL - TTL / 10;
    assert_eq!(guard.deadline(), start.into_std() + deadline);
    tokio::time::sleep(deadline - Duration::from_millis(1)).await;
    assert!(guard.is_held(), "still trusted just before the deadline");
    assert_eq!(guard.lost().await, LossReason::DeadlinePassed);
    assert_eq!(start.elapsed(), deadline);
    assert!(!guard.is_held());
    assert!(
        guard.release().await.is_err(),
        "release reports the store is down"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_heartbeat_still_loses_the_lease_at_the_deadline() {
    let locker = Locker::new(Arc::new(HangingHeartbeat));
    let start = Instant::now();
    let guard = locker.lock("job", opts()).await.unwrap();
    assert_eq!(guard.lost().await, LossReason::DeadlinePassed);
    assert_eq!(start.elapsed(), TTL - TTL / 10);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_guard_releases_in_the_background() {
    let mut backend = granting_backend();
    let released = counter();
    let r = Arc::clone(&released);
    backend.expect_release().returning(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    });
    let locker = Locker::new(Arc::new(backend));

    let guard = locker.lock("job", opts()).await.unwrap();
    let watch = guard.watch();
    drop(guard);
    assert_eq!(watch.lost().await, LossReason::Released);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(released.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn with_lock_cancels_the_work_when_the_lease_is_lost() {
    let mut backend = granting_backend();
    backend.expect_heartbeat().returning(|lease, _| {
        Err(LockError::LeaseLost {
            name: lease.name.clone(),
        })
    });
    backend.expect_release().returning(|_| Ok(false));
    let locker = Locker::new(Arc::new(backend));

    let finished = counter();
    let f = Arc::clone(&finished);
    let start = Instant::now();
    let result = locker
        .with_lock("job", opts(), async move {
            tokio::time::sleep(TTL * 100).await;
            f.fetch_add(1, Ordering::SeqCst);
        })
        .await;
    assert!(
        matches!(result, Err(LockError::LeaseLost { .. })),
        "{result:?}"
    );
    assert_eq!(
        start.elapsed(),
        TTL / 3,
        "cancelled at the first failed heartbeat"
    );
    assert_eq!(finished.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn with_lock_returns_the_work_output_and_releases() {
    let mut backend = granting_backend();
    backend.expect_heartbeat().returning(renewed);
    backend.expect_release().times(1).returning(|_| Ok(true));
    let locker = Locker::new(Arc::new(backend));
    let out = locker
        .with_lock_fn("job", opts(), |lease| async move {
            tokio::time::sleep(TTL * 2).await;
            (lease.is_held(), lease.fence())
        })
        .await
        .unwrap();
    assert_eq!(out, (true, 7));
}

#[tokio::test(start_paused = true)]
async fn lock_times_out_after_wait_with_backoff() {
    let mut backend = MockBackend::new();
    let attempts = counter();
    let a = Arc::clone(&attempts);
    backend.expect_try_acquire().returning(move |_, _, _| {
        a.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    });
    let locker = Locker::new(Arc::new(backend));
    let wait = Duration::from_secs(2);
    let start = Instant::now();
    let err = locker
        .lock("job", opts().with_wait(wait))
        .await
        .unwrap_err();
    match err {
        LockError::Timeout { waited, .. } => assert_eq!(waited, wait),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(start.elapsed(), wait);
    // Backoff 1 ms doubling to 100 ms: far fewer attempts than a 1 ms poll would make.
    let n = attempts.load(Ordering::SeqCst);
    assert!((10..=60).contains(&n), "{n} attempts");
}

#[tokio::test(start_paused = true)]
async fn lock_retries_transient_errors_within_the_wait() {
    let mut backend = MockBackend::new();
    let attempts = counter();
    let a = Arc::clone(&attempts);
    backend
        .expect_try_acquire()
        .returning(move |name, holder, ttl| {
            if a.fetch_add(1, Ordering::SeqCst) < 5 {
                Err(down())
            } else {
                granted(name, holder, ttl)
            }
        });
    backend.expect_heartbeat().returning(renewed);
    backend.expect_release().returning(|_| Ok(true));
    let locker = Locker::new(Arc::new(backend));
    let guard = locker
        .lock("job", opts().with_wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 6);
    guard.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn lock_without_wait_reports_a_store_error_at_once() {
    let mut backend = MockBackend::new();
    let token = Arc::new(std::sync::Mutex::new(None));
    let t = Arc::clone(&token);
    backend
        .expect_try_acquire()
        .times(1)
        .returning(move |_, holder, _| {
            *t.lock().unwrap() = Some(holder.token);
            Err(down())
        });
    // The store may have granted the lease although its answer was lost: it is freed, by
    // the token of that attempt, in the background.
    let t = Arc::clone(&token);
    backend
        .expect_release()
        .times(1)
        .withf(move |lease| Some(lease.holder.token) == *t.lock().unwrap())
        .returning(|_| Ok(false));
    let locker = Locker::new(Arc::new(backend));
    let err = locker.lock("job", opts()).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_store_down_for_the_whole_wait_reports_unavailable_not_timeout() {
    let mut backend = MockBackend::new();
    backend
        .expect_try_acquire()
        .returning(|_, _, _| Err(down()));
    // Freeing what the lost attempts may have been granted fails too: the store is down.
    backend.expect_release().returning(|_| Err(down()));
    let locker = Locker::new(Arc::new(backend));
    let err = locker
        .lock("job", opts().with_wait(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Unavailable { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lock_future_dropped_mid_acquire_releases_the_orphan() {
    let backend = Arc::new(SlowAcquire::default());
    let locker = Locker::new(backend.clone());
    // Give up while the store is still answering.
    let attempt = tokio::time::timeout(Duration::from_millis(10), locker.lock("job", opts())).await;
    assert!(
        attempt.is_err(),
        "the acquire takes 50 ms, so the caller gave up first"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backend.acquired.load(Ordering::SeqCst), 1);
    assert_eq!(
        backend.released.load(Ordering::SeqCst),
        1,
        "the orphaned lease was released"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lock_future_dropped_after_the_grant_arrived_but_before_it_was_read_releases_it() {
    // The store answers at 50 ms; the caller is polled once before and then dropped after the
    // answer was delivered to it but before it ran again: the narrowest cancellation window.
    let backend = Arc::new(SlowAcquire::default());
    let locker = Locker::new(backend.clone());
    let mut lock = Box::pin(locker.lock("job", opts()));
    std::future::poll_fn(|cx| {
        assert!(
            lock.as_mut().poll(cx).is_pending(),
            "the store has not answered yet"
        );
        std::task::Poll::Ready(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        backend.acquired.load(Ordering::SeqCst),
        1,
        "the grant was sent"
    );
    drop(lock);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        backend.released.load(Ordering::SeqCst),
        1,
        "a grant nobody read is released, not left held until its TTL"
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_input_is_rejected_before_the_store_is_called() {
    let backend = MockBackend::new(); // any call would panic: no expectations
    let locker = Locker::new(Arc::new(backend));
    assert!(matches!(
        locker.try_lock("", opts()).await,
        Err(LockError::InvalidName { .. })
    ));
    assert!(matches!(
        locker
            .try_lock("job", opts().with_ttl(Duration::ZERO))
            .await,
        Err(LockError::InvalidTtl { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_backend_is_an_error_not_a_crash() {
    let mut backend = MockBackend::new();
    backend
        .expect_try_acquire()
        .returning(|_, _, _| panic!("backend bug"));
    let locker = Locker::new(Arc::new(backend));
    let err = locker.try_lock("job", opts()).await.unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
}

/// Grants leases, but its heartbeat never answers (a black-holed connection).
#[derive(Debug)]
struct HangingHeartbeat;

#[async_trait]
impl LockBackend for HangingHeartbeat {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        granted(name, holder, ttl)
    }
    async fn heartbeat(&self, _: &Lease, _: Duration) -> Result<Lease> {
        std::future::pending().await
    }
    async fn release(&self, _: &Lease) -> Result<bool> {
        Ok(false)
    }
    async fn inspect(&self, _: &LockName) -> Result<Option<LeaseInfo>> {
        Ok(None)
    }
    async fn force_release(&self, _: &LockName) -> Result<bool> {
        Ok(false)
    }
}

/// Takes 50 ms to grant a lease; counts grants and releases.
#[derive(Debug, Default)]
struct SlowAcquire {
    acquired: AtomicUsize,
    released: AtomicUsize,
}

#[async_trait]
impl LockBackend for SlowAcquire {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.acquired.fetch_add(1, Ordering::SeqCst);
        granted(name, holder, ttl)
    }
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        renewed(lease, ttl)
    }
    async fn release(&self, _: &Lease) -> Result<bool> {
        self.released.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }
    async fn inspect(&self, _: &LockName) -> Result<Option<LeaseInfo>> {
        Ok(None)
    }
    async fn force_release(&self, _: &LockName) -> Result<bool> {
        Ok(false)
    }
}
