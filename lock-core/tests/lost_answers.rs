//! Acquisitions whose answer is lost: the store granted the lease, but the caller saw a
//! transient error (a timeout on a slow or paused store). Such a lease must not block the
//! lock, the waiter included, for a whole TTL. On Tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lock_core::memory::MemoryBackend;
use lock_core::{
    Holder, Lease, LeaseInfo, LockBackend, LockError, LockName, LockOptions, Locker, Result,
    async_trait,
};
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);

fn opts() -> LockOptions {
    LockOptions::default()
        .with_ttl(TTL)
        .with_wait(Duration::from_secs(60))
        .with_label("lost-answers")
}

/// Grants the first `try_acquire` but answers it with `Unavailable`. With a `pause`, it
/// acts like a server paused for that long: the first command, queued, runs the moment the
/// server resumes; every call made during the pause fails without reaching it.
#[derive(Debug)]
struct LosesFirstAnswer {
    inner: MemoryBackend,
    pause: Option<Duration>,
    resumes_at: std::sync::Mutex<Option<Instant>>,
    calls: AtomicUsize,
    /// The fence of the grant whose answer was lost.
    lost_fence: Arc<std::sync::Mutex<Option<u64>>>,
}

impl LosesFirstAnswer {
    fn new(pause: Option<Duration>) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryBackend::new(),
            pause,
            resumes_at: std::sync::Mutex::new(None),
            calls: AtomicUsize::new(0),
            lost_fence: Arc::default(),
        })
    }
}

fn lost() -> LockError {
    LockError::unavailable("test", "no answer within the timeout")
}

#[async_trait]
impl LockBackend for LosesFirstAnswer {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) > 0 {
            let resumes_at = *self.resumes_at.lock().unwrap();
            if resumes_at.is_some_and(|at| Instant::now() < at) {
                return Err(lost());
            }
            return self.inner.try_acquire(name, holder, ttl).await;
        }
        let (inner, name, holder) = (self.inner.clone(), name.clone(), holder.clone());
        let lost_fence = Arc::clone(&self.lost_fence);
        let grant = async move {
            let lease = inner.try_acquire(&name, &holder, ttl).await;
            let Ok(Some(lease)) = lease else {
                panic!("the lost grant took the lease: {lease:?}");
            };
            *lost_fence.lock().unwrap() = Some(lease.fence);
        };
        match self.pause {
            None => grant.await,
            Some(pause) => {
                *self.resumes_at.lock().unwrap() = Some(Instant::now() + pause);
                tokio::spawn(async move {
                    // Queued before anything sent during the pause.
                    tokio::time::sleep(pause - Duration::from_millis(1)).await;
                    grant.await;
                });
            }
        }
        Err(lost())
    }
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
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
}

#[tokio::test(start_paused = true)]
async fn a_waiter_does_not_wait_behind_a_lease_granted_to_its_own_lost_attempt() {
    let backend = LosesFirstAnswer::new(None);
    let locker = Locker::new(backend.clone());
    let start = Instant::now();
    let guard = locker.lock("job", opts()).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    let lost = backend
        .lost_fence
        .lock()
        .unwrap()
        .expect("the lost grant happened");
    assert!(
        guard.fence() > lost,
        "the guard's grant came after the lost one"
    );
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
    assert!(guard.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_grant_applied_when_a_paused_store_resumes_is_freed_by_the_waiter() {
    let pause = Duration::from_secs(2);
    let backend = LosesFirstAnswer::new(Some(pause));
    let locker = Locker::new(backend.clone());
    let start = Instant::now();
    let guard = locker.lock("job", opts()).await.unwrap();
    let waited = start.elapsed();
    // Every attempt during the pause failed; the first one after it found the lock held by
    // the lost grant, freed it, and took the lock: no whole TTL spent behind its own lease.
    assert!(
        waited >= pause && waited < pause + Duration::from_millis(200),
        "{waited:?}"
    );
    let lost = backend
        .lost_fence
        .lock()
        .unwrap()
        .expect("the lost grant happened");
    assert!(
        guard.fence() > lost,
        "the guard's grant came after the lost one"
    );
    assert!(guard.release().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn try_lock_frees_a_lease_granted_to_an_attempt_whose_answer_was_lost() {
    let backend = LosesFirstAnswer::new(None);
    let locker = Locker::new(backend.clone());
    let err = locker.try_lock("job", opts()).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    tokio::time::sleep(Duration::from_millis(1)).await;
    let name = LockName::new("job").unwrap();
    assert_eq!(backend.inspect(&name).await.unwrap(), None, "freed at once");
}
