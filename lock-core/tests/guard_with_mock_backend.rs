//! The guard and locker logic against a mocked backend, on Tokio's paused clock so every
//! timing assertion is exact.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use lock_core::backend_kit::time::monotonic_now;
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

thread_local! {
    /// Panics on this thread. `#[tokio::test]` runs a current-thread runtime, so the tasks a
    /// test spawns (heartbeats, background releases) run on the test's own thread.
    static PANICS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Fails the test if any task it ran panicked: Tokio turns a panic in a spawned task into a
/// `JoinError` nobody reads, so a mock expectation violated inside a heartbeat or a
/// background release would otherwise pass unnoticed.
struct NoTaskPanics;

fn no_task_panics() -> NoTaskPanics {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            default(info);
        }));
    });
    PANICS.with(|p| p.set(0));
    NoTaskPanics
}

impl Drop for NoTaskPanics {
    fn drop(&mut self) {
        let panics = PANICS.with(std::cell::Cell::get);
        if !std::thread::panicking() {
            assert_eq!(
                panics, 0,
                "a task of this test panicked (see its message above)"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeat_every_third_of_ttl_keeps_the_lease() {
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
    let locker = Locker::new(Arc::new(Slow::renewing("job", None)));
    let start = Instant::now();
    let guard = locker.lock("job", opts()).await.unwrap();
    assert_eq!(guard.lost().await, LossReason::DeadlinePassed);
    assert_eq!(start.elapsed(), TTL - TTL / 10);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_guard_releases_in_the_background() {
    let _no_panics = no_task_panics();
    let mut backend = granting_backend();
    let released = Arc::new(std::sync::Mutex::new(Vec::new()));
    let r = Arc::clone(&released);
    backend.expect_release().returning(move |lease| {
        r.lock().unwrap().push(lease.holder.token);
        Ok(true)
    });
    let locker = Locker::new(Arc::new(backend));

    let guard = locker.lock("job", opts()).await.unwrap();
    let token = guard.holder().token;
    let watch = guard.watch();
    drop(guard);
    assert_eq!(watch.lost().await, LossReason::Released);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        *released.lock().unwrap(),
        [token],
        "released once, by the guard's own token"
    );
}

#[tokio::test(start_paused = true)]
async fn with_lock_cancels_the_work_when_the_lease_is_lost() {
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
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
    let _no_panics = no_task_panics();
    let backend = Arc::new(Slow::default());
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
    let _no_panics = no_task_panics();
    // The store answers at 50 ms; the caller is polled once before and then dropped after the
    // answer was ready for it but before it ran again: the narrowest cancellation window.
    // (The attempt runs in the caller's task, so the rest of it runs once the caller is gone.)
    let backend = Arc::new(Slow::default());
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
    drop(lock);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        backend.acquired.load(Ordering::SeqCst),
        1,
        "the store granted it"
    );
    assert_eq!(
        backend.released.load(Ordering::SeqCst),
        1,
        "a grant nobody read is released, not left held until its TTL"
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_input_is_rejected_before_the_store_is_called() {
    let _no_panics = no_task_panics();
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

#[tokio::test(start_paused = true)]
async fn lock_returns_at_the_end_of_its_wait_even_if_the_store_is_slow_to_answer() {
    let _no_panics = no_task_panics();
    // A store busy for 30 s (a locked SQLite database is retried inside its busy budget).
    let backend = Arc::new(Slow::taking(Duration::from_secs(30), Duration::ZERO));
    let locker = Locker::new(backend.clone());
    let start = Instant::now();
    let err = locker
        .lock("job", opts().with_wait(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Timeout { .. }), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(500));

    // A wait shorter than the attempt floor still makes one attempt of that length.
    let start = Instant::now();
    let err = locker
        .lock("job", opts().with_wait(Duration::from_millis(10)))
        .await
        .unwrap_err();
    assert!(matches!(err, LockError::Timeout { .. }), "{err:?}");
    assert_eq!(start.elapsed(), lock_core::ATTEMPT_FLOOR);

    // Both abandoned attempts are granted later, and both leases are released then.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(backend.acquired.load(Ordering::SeqCst), 2);
    assert_eq!(backend.released.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn release_frees_the_lease_even_if_its_future_is_dropped() {
    let _no_panics = no_task_panics();
    let backend = Arc::new(Slow::taking(Duration::ZERO, Duration::from_millis(50)));
    let locker = Locker::new(backend.clone());
    let guard = locker.lock("job", opts()).await.unwrap();
    let watch = guard.watch();
    let gave_up = tokio::time::timeout(Duration::from_millis(10), guard.release()).await;
    assert!(gave_up.is_err(), "the release takes 50 ms");
    assert_eq!(watch.lost().await, LossReason::Released);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backend.released.load(Ordering::SeqCst),
        1,
        "the store call went on without the caller"
    );
}

#[tokio::test(start_paused = true)]
async fn a_renewal_answered_after_the_deadline_does_not_bring_the_lease_back() {
    let _no_panics = no_task_panics();
    // TTL 3 s: renewals every 1 s, deadline 2.7 s after each request. "slow" is acquired at
    // 0 and "fast" at 0.2 s, so both are renewed in one batch at 1 s. The store answers for
    // "slow" at 2.8 s, after its deadline (2.7 s) but before the batch gives up at the
    // latest deadline in it ("fast": 2.9 s).
    let locker = Locker::new(Arc::new(Slow::renewing(
        "slow",
        Some(Duration::from_millis(1800)),
    )));
    let slow = locker.lock("slow", opts()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast = locker.lock("fast", opts()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2800)).await; // now 3.0 s
    assert_eq!(slow.loss_reason(), Some(LossReason::DeadlinePassed));
    assert!(!slow.is_held(), "a lease reported lost never comes back");
    assert!(fast.is_held());
}

#[tokio::test(start_paused = true)]
async fn a_store_that_keeps_failing_costs_a_bounded_number_of_releases_per_round() {
    let _no_panics = no_task_panics();
    // 40 attempts fail (each may have been granted unseen), then the lock is held by
    // someone else: every round frees what the failed attempts may hold, but at most 16.
    let events = Arc::new(std::sync::Mutex::new(String::new()));
    let mut backend = MockBackend::new();
    let e = Arc::clone(&events);
    backend.expect_try_acquire().returning(move |_, _, _| {
        let mut events = e.lock().unwrap();
        let failures = events.matches('a').count();
        events.push('a');
        if failures < 40 { Err(down()) } else { Ok(None) }
    });
    let e = Arc::clone(&events);
    backend.expect_release().returning(move |_| {
        e.lock().unwrap().push('r');
        Ok(false)
    });
    let locker = Locker::new(Arc::new(backend));
    let opts = opts()
        .with_ttl(Duration::from_secs(600))
        .with_wait(Duration::from_secs(10));
    let err = locker.lock("job", opts).await.unwrap_err();
    assert!(matches!(err, LockError::Timeout { .. }), "{err:?}");
    tokio::time::sleep(Duration::from_millis(1)).await;
    let events = events.lock().unwrap();
    let rounds: Vec<usize> = events.split('a').skip(41).map(str::len).collect();
    let (last, rounds) = rounds.split_last().unwrap();
    assert!(rounds.len() > 10, "{} contended rounds", rounds.len());
    assert!(
        rounds.iter().all(|&r| r == 16),
        "releases per round: {rounds:?}"
    );
    // The last round's, plus one more pass in the background as the caller gives up.
    assert_eq!(*last, 32);
}

/// A backend whose calls take as long as a test says; counts grants and releases.
///
/// Acquisitions take `acquire` and are always granted; releases take `release`; renewals of
/// the lock named `slow_name` take `slow_heartbeat` (`None`: they never answer, as over a
/// black-holed connection), others answer at once.
#[derive(Debug)]
struct Slow {
    acquire: Duration,
    release: Duration,
    slow_name: &'static str,
    slow_heartbeat: Option<Duration>,
    acquired: AtomicUsize,
    released: AtomicUsize,
}

impl Default for Slow {
    fn default() -> Self {
        Self::taking(Duration::from_millis(50), Duration::ZERO)
    }
}

impl Slow {
    fn taking(acquire: Duration, release: Duration) -> Self {
        Self {
            acquire,
            release,
            slow_name: "",
            slow_heartbeat: Some(Duration::ZERO),
            acquired: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
        }
    }

    /// Renewals of `name` take `delay`, or never answer.
    fn renewing(name: &'static str, delay: Option<Duration>) -> Self {
        Self {
            slow_name: name,
            slow_heartbeat: delay,
            ..Self::taking(Duration::ZERO, Duration::ZERO)
        }
    }
}

#[async_trait]
impl LockBackend for Slow {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        tokio::time::sleep(self.acquire).await;
        self.acquired.fetch_add(1, Ordering::SeqCst);
        granted(name, holder, ttl)
    }
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let sent = monotonic_now();
        if lease.name.as_str() == self.slow_name {
            match self.slow_heartbeat {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        }
        Ok(lease.renewed(SystemTime::now() + ttl, sent, ttl))
    }
    async fn release(&self, _: &Lease) -> Result<bool> {
        tokio::time::sleep(self.release).await;
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
