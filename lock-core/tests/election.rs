//! `Election` on the memory backend, on Tokio's paused clock so instants are exact: options
//! it refuses, campaigning (wait, transient errors), `run` restarting after a loss but not
//! after a resignation, and an observer whose events come in started/stopped pairs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lock_core::memory::MemoryBackend;
use lock_core::{
    Election, Holder, LeaderEvent, Lease, LeaseInfo, LockBackend, LockError, LockName, LockOptions,
    Locker, Result, async_trait,
};
use tokio::time::{Instant, sleep, timeout};

const SECOND: Duration = Duration::from_secs(1);

fn opts(label: &str) -> LockOptions {
    LockOptions::default()
        .with_ttl(SECOND * 3)
        .with_label(label)
}

fn election_on(store: &Arc<dyn LockBackend>, label: &str) -> Election {
    Election::new(Locker::new(Arc::clone(store)), "leader", opts(label)).unwrap()
}

fn memory() -> Arc<dyn LockBackend> {
    Arc::new(MemoryBackend::new())
}

#[tokio::test]
async fn an_election_refuses_a_limit_and_bad_names() {
    let locker = Locker::new(memory());
    match Election::new(locker.clone(), "leader", opts("x").with_limit(2)) {
        Err(LockError::Config { detail, .. }) => {
            assert!(
                detail.contains("limit of 2") && detail.contains("with_limit"),
                "{detail}"
            );
        }
        other => panic!("a limit of 2: {other:?}"),
    }
    assert!(matches!(
        Election::new(locker.clone(), "", opts("x")),
        Err(LockError::InvalidName { .. })
    ));
    assert!(matches!(
        Election::new(locker, "leader", opts("x").with_ttl(Duration::ZERO)),
        Err(LockError::InvalidTtl { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn campaign_with_a_wait_gives_up_after_it() {
    let store = memory();
    let leader = election_on(&store, "leader").campaign().await.unwrap();
    let t0 = Instant::now();
    let rival = Election::new(
        Locker::new(Arc::clone(&store)),
        "leader",
        opts("rival").with_wait(SECOND * 2),
    )
    .unwrap();
    match rival.campaign().await {
        Err(LockError::Timeout { waited, .. }) => assert_eq!(waited, SECOND * 2),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert_eq!(Instant::now(), t0 + SECOND * 2);
    assert!(leader.resign().await.unwrap());
}

/// Fails the first `failures` acquisitions as if the store were down.
#[derive(Debug)]
struct Flaky {
    inner: MemoryBackend,
    failures: AtomicUsize,
}

#[async_trait]
impl LockBackend for Flaky {
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(LockError::unavailable("flaky", "connection refused"));
        }
        self.inner.try_acquire(name, holder, ttl).await
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
async fn campaign_without_a_wait_rides_out_a_store_outage() {
    let flaky = Arc::new(Flaky {
        inner: MemoryBackend::new(),
        failures: AtomicUsize::new(3),
    });
    let store: Arc<dyn LockBackend> = flaky.clone();
    let term = election_on(&store, "patient").campaign().await.unwrap();
    assert_eq!(
        flaky.failures.load(Ordering::SeqCst),
        0,
        "it went through the outage"
    );
    assert!(term.is_leading());
    assert!(term.resign().await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn run_restarts_after_a_loss_but_not_after_a_resignation() {
    let store = memory();
    let election = election_on(&store, "runner");
    let starts = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&starts);
    let forcer = Arc::clone(&store);
    let out = election
        .run(move |leadership| {
            let start = s.fetch_add(1, Ordering::SeqCst) + 1;
            let forcer = Arc::clone(&forcer);
            async move {
                if start == 1 {
                    // Lost: the heartbeat at TTL/3 finds the lease gone, and the work is
                    // cancelled before this sleep ends.
                    assert!(forcer.force_release(&leadership.name()).await.unwrap());
                    sleep(SECOND * 60).await;
                    unreachable!("the work ran on after the loss");
                }
                let fence = leadership.fence();
                // A resignation from inside the work does not cancel it.
                assert!(leadership.resign().await.unwrap());
                sleep(SECOND * 10).await;
                (start, fence)
            }
        })
        .await
        .unwrap();
    assert_eq!(out.0, 2, "run started the work twice");
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    assert!(store.inspect(election.name()).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn dropping_leadership_hands_over() {
    let store = memory();
    let term = election_on(&store, "first").campaign().await.unwrap();
    let fence = term.fence();
    let second = election_on(&store, "second");
    let waiting = tokio::spawn(async move { second.campaign().await });
    let t0 = Instant::now();
    drop(term);
    let next = waiting.await.unwrap().unwrap();
    assert_eq!(Instant::now(), t0, "taken over at once, not after the TTL");
    assert!(next.fence() > fence);
}

#[tokio::test(start_paused = true)]
async fn an_observer_reports_a_stop_only_after_its_start() {
    let store = memory();
    let election = election_on(&store, "observer");
    assert!(election.leader().await.unwrap().is_none());

    // Nobody leads: no event at all, not a Stopped.
    let mut early = election.observe();
    assert!(timeout(SECOND * 10, early.next()).await.is_err());

    let term = election_on(&store, "a").campaign().await.unwrap();
    assert_eq!(
        election.leader().await.unwrap().unwrap().fence,
        term.fence()
    );
    // Started mid-term: the current leader is reported as started.
    let mut late = election.observe();
    for observer in [&mut early, &mut late] {
        match observer.next().await.unwrap() {
            LeaderEvent::Started(info) => assert_eq!(info.fence, term.fence()),
            other => panic!("expected Started, got {other:?}"),
        }
        assert_eq!(observer.leader().map(|l| l.fence), Some(term.fence()));
    }
    // Renewals are not changes.
    assert!(timeout(SECOND * 10, late.next()).await.is_err());
    let fence = term.fence();
    assert!(term.resign().await.unwrap());
    for observer in [&mut early, &mut late] {
        match observer.next().await.unwrap() {
            LeaderEvent::Stopped(info) => assert_eq!(info.fence, fence),
            other => panic!("expected Stopped, got {other:?}"),
        }
        assert!(observer.leader().is_none());
    }
}
