//! Many contenders at once: the store, not luck, must keep them apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use lock_core::LockOptions;
use tokio::sync::{Barrier, Mutex};

use crate::Target;
use crate::support::{LONG_TTL, SHORT_TTL, SLACK, acquire, holder};

/// 100 tasks race for one name, 50 rounds: exactly one winner every round.
pub async fn one_winner_among_100_concurrent_tasks(t: Target) {
    const TASKS: usize = 100;
    const ROUNDS: usize = 50;
    let name = t.name("hundred");
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(TASKS));
        let attempts = (0..TASKS).map(|i| {
            let (backend, name, barrier) =
                (Arc::clone(t.client(i)), name.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                let who = holder(&format!("r{round}-t{i}"));
                barrier.wait().await;
                backend.try_acquire(&name, &who, LONG_TTL).await
            })
        });
        let mut winners = Vec::new();
        for result in join_all(attempts).await {
            if let Some(lease) = result.expect("task panicked").expect("try_acquire failed") {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        assert!(t.backend().release(&winners[0]).await.unwrap());
    }
}

/// 8 tasks each do 100 non-atomic read-modify-write increments under the lock: the total is
/// exact, and fences strictly increase in the order the lock was taken.
pub async fn increments_under_the_lock_are_exact(t: Target) {
    const TASKS: u64 = 8;
    const EACH: u64 = 100;
    let name = t.name("counter");
    let counter = Arc::new(AtomicU64::new(0));
    let fences = Arc::new(Mutex::new(Vec::new()));
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(10))
        // 800 short sections take well under a second on any store; a store that died
        // fails the case in this time rather than after minutes of retrying.
        .with_wait(Duration::from_secs(30))
        .with_backoff(Duration::from_millis(1), Duration::from_millis(10));
    let workers = (0..TASKS).map(|i| {
        let locker = lock_core::Locker::new(Arc::clone(t.client(i as usize)));
        let (name, counter, fences, opts) = (
            name.clone(),
            Arc::clone(&counter),
            Arc::clone(&fences),
            opts.clone(),
        );
        tokio::spawn(async move {
            for _ in 0..EACH {
                let guard = locker.lock(&name, &opts).await.expect("lock");
                fences.lock().await.push(guard.fence());
                let seen = counter.load(Ordering::SeqCst);
                tokio::task::yield_now().await; // invite a racer in, if the lock let one
                counter.store(seen + 1, Ordering::SeqCst);
                assert!(
                    guard.release().await.expect("release"),
                    "lease lost mid-increment"
                );
            }
        })
    });
    for w in join_all(workers).await {
        w.expect("worker panicked");
    }
    assert_eq!(counter.load(Ordering::SeqCst), TASKS * EACH);
    let fences = fences.lock().await;
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences not increasing in acquisition order: {fences:?}"
    );
}

/// Many contenders for one expired lease: exactly one takes it over.
pub async fn one_winner_for_a_stale_lease(t: Target) {
    const CONTENDERS: usize = 16;
    const ROUNDS: usize = 3;
    let b = t.backend();
    let name = t.name("stale-race");
    for round in 0..ROUNDS {
        let stale = acquire(b, &name, &holder("doomed"), SHORT_TTL).await;
        tokio::time::sleep(SHORT_TTL + SLACK / 4).await;
        let barrier = Arc::new(Barrier::new(CONTENDERS));
        let attempts = (0..CONTENDERS).map(|i| {
            let (backend, name, barrier) =
                (Arc::clone(t.client(i)), name.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                let who = holder(&format!("taker-{i}"));
                barrier.wait().await;
                backend.try_acquire(&name, &who, LONG_TTL).await
            })
        });
        let winners: Vec<_> = join_all(attempts)
            .await
            .into_iter()
            .filter_map(|r| r.expect("task panicked").expect("try_acquire failed"))
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} took over the stale lease",
            winners.len()
        );
        assert!(winners[0].fence > stale.fence);
        assert!(
            !b.release(&stale).await.unwrap(),
            "the stale holder's release must not free the new lease"
        );
        assert!(b.release(&winners[0]).await.unwrap());
    }
}
