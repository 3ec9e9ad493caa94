//! Real OS processes contending for one lock on every backend: hand-off, a holder
//! SIGKILLed, a holder SIGSTOPped past its TTL, and many processes cycling, each checked by
//! the shared history.

mod support;

use std::time::Duration;

use lock::{Holder, LockName, LockOptions, Locker};
use lock_conformance::history::{Event, Recorder, assert_history, monotonic_nanos};
use support::Store;

const TTL: Duration = Duration::from_secs(1);
/// Generous slack for process start-up and scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(3);
const PATIENCE: Duration = Duration::from_secs(20);

/// A child holds; the parent's `try_lock` fails and its `lock()` waits; the child releases
/// on request; the parent then gets the lock with a higher fence.
async fn child_holds_parent_waits_child_releases_parent_acquires(store: Store) {
    let name = store.name("handoff");
    let mut child = store.worker("hold", &name, Duration::from_secs(10), "child", &[]);
    let child_fence = child.acquired(PATIENCE).await[0];

    let locker = Locker::new(store.backend().await);
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(10))
        .with_wait(PATIENCE);
    assert!(
        locker
            .try_lock(name.as_str(), &opts)
            .await
            .unwrap()
            .is_none(),
        "held by the child"
    );
    let waiting = {
        let (locker, name, opts) = (locker.clone(), name.clone(), opts.clone());
        tokio::spawn(async move { locker.lock(name.as_str(), &opts).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "the parent waits while the child holds"
    );
    child.tell("release").await;
    let released = child.line(PATIENCE).await;
    assert!(released.starts_with("released "), "{released}");
    let released_at: u64 = released["released ".len()..].parse().unwrap();
    let guard = waiting.await.unwrap().expect("the parent acquires");
    assert!(monotonic_nanos() > released_at);
    assert!(
        guard.fence() > child_fence,
        "fence {} after {child_fence}",
        guard.fence()
    );
    let mut history = Recorder::open(&store.history(), "parent").unwrap();
    history.record(&name, guard.fence(), Event::Start).unwrap();
    history.record(&name, guard.fence(), Event::End).unwrap();
    assert!(guard.release().await.unwrap());
    assert_eq!(child.exit_code(PATIENCE).await, Some(0));
    let summary = assert_history(&store.history());
    assert_eq!(summary.sections, 2);
}
per_backend!(
    handoff,
    child_holds_parent_waits_child_releases_parent_acquires
);

/// A holder SIGKILLed while holding: nobody gets the lock before its TTL ran out, another
/// process gets it soon after, with a higher fence.
async fn a_sigkilled_holder_is_taken_over_after_the_ttl(store: Store) {
    let name = store.name("killed");
    let mut child = store.worker("hold-raw", &name, TTL, "victim", &[]);
    let acquired = child.acquired(PATIENCE).await;
    let (child_fence, sent) = (acquired[0], acquired[1]);
    child.signal(libc::SIGKILL);
    assert_eq!(child.exit_code(PATIENCE).await, None, "killed by a signal");

    let backend = store.backend().await;
    let lock = LockName::new(&name).unwrap();
    let me = Holder::current("successor");
    let lease = loop {
        let asked = monotonic_nanos();
        if let Some(lease) = backend.try_acquire(&lock, &me, TTL).await.unwrap() {
            break lease;
        }
        let waited = Duration::from_nanos(asked - sent);
        assert!(
            waited < TTL + SLACK,
            "still not free {waited:?} after it was taken"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let got = Duration::from_nanos(monotonic_nanos() - sent);
    // Stores keep milliseconds: allow one for rounding.
    assert!(
        got + Duration::from_millis(1) >= TTL,
        "taken over {got:?} after the dead holder's request: before its TTL"
    );
    assert!(
        lease.fence > child_fence,
        "fence {} after {child_fence}",
        lease.fence
    );
    assert!(backend.release(&lease).await.unwrap());
}
per_backend!(sigkill, a_sigkilled_holder_is_taken_over_after_the_ttl);

/// A holder SIGSTOPped past its TTL: another process acquires; when the paused one resumes,
/// its guard reports the loss before it records any more work, and the history shows the
/// later holder's higher fence and no overlap.
async fn a_paused_holder_loses_its_lease_before_working_again(store: Store) {
    let name = store.name("paused");
    let mut child = store.worker("hold", &name, TTL, "paused", &[]);
    let child_fence = child.acquired(PATIENCE).await[0];
    tokio::time::sleep(TTL / 2).await; // some work and heartbeats
    child.signal(libc::SIGSTOP);
    let stopped_at = monotonic_nanos();

    let locker = Locker::new(store.backend().await);
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(10))
        .with_wait(PATIENCE)
        .with_label("successor");
    let guard = locker.lock(name.as_str(), &opts).await.unwrap();
    let mut history = Recorder::open(&store.history(), "successor").unwrap();
    history.record(&name, guard.fence(), Event::Start).unwrap();
    assert!(
        guard.fence() > child_fence,
        "fence {} after {child_fence}",
        guard.fence()
    );
    assert!(
        Duration::from_nanos(monotonic_nanos() - stopped_at) < TTL + SLACK,
        "taken over soon after the TTL"
    );

    // Resume the paused holder while the successor still holds the lock.
    child.signal(libc::SIGCONT);
    assert_eq!(
        child.line(PATIENCE).await,
        "lost",
        "the resumed holder reports the loss"
    );
    assert_eq!(child.exit_code(PATIENCE).await, Some(3));
    history
        .verified(&name, guard.fence(), Event::End, || guard.is_held())
        .unwrap();
    assert!(guard.release().await.unwrap());

    let summary = assert_history(&store.history());
    assert_eq!(summary.sections, 2);
    assert_eq!(summary.lost, 1, "the paused holder's section ended by loss");
}
per_backend!(
    sigstop,
    a_paused_holder_loses_its_lease_before_working_again
);

/// Eight processes cycling acquire / heartbeat / release on one name: no overlap, fences
/// rising, every cycle done, no error of any kind.
async fn eight_processes_cycle_without_overlap(store: Store) {
    const WORKERS: usize = 8;
    const CYCLES: u32 = 25;
    let name = store.name("cycles");
    let mut workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            store.worker(
                "cycles",
                &name,
                Duration::from_secs(10),
                &format!("w{i}"),
                &["--cycles", &CYCLES.to_string(), "--hold-ms", "1"],
            )
        })
        .collect();
    for worker in &mut workers {
        let line = worker.line(Duration::from_secs(120)).await;
        let summary: serde_json::Value =
            serde_json::from_str(line.strip_prefix("summary ").expect("a summary")).unwrap();
        assert_eq!(summary["cycles"], CYCLES, "{summary}");
        for kind in ["busy", "lost", "timeout", "other"] {
            assert_eq!(summary[kind], 0, "{kind} errors: {summary}");
        }
        assert_eq!(worker.exit_code(PATIENCE).await, Some(0));
    }
    let summary = assert_history(&store.history());
    assert_eq!(summary.sections, WORKERS * CYCLES as usize);
    assert_eq!(summary.lost, 0);
}
per_backend!(cycles, eight_processes_cycle_without_overlap);
