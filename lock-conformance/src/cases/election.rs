//! Leader election (`Election`) over a real store: one leader at a time, hand-over on
//! resignation, loss on force-release with `run` restarting its work, and an observer that
//! sees every change of leader in order.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lock_core::{Election, LeaderEvent, LockName, LockOptions, Locker, LossReason, Observer};
use tokio::sync::mpsc;

use crate::Target;
use crate::support::{LONG_TTL, SHORT_TTL, SLACK, acquire, holder};

/// How long a case's campaign may wait. Without a wait, campaigning rides out a dead store
/// forever; a case must fail instead (`lockctl conformance` against a store that dies).
const CAMPAIGN_WAIT: Duration = Duration::from_secs(20);

fn election(t: &Target, client: usize, name: &LockName, ttl: Duration, label: &str) -> Election {
    let opts = LockOptions::default()
        .with_ttl(ttl)
        .with_label(label)
        .with_wait(CAMPAIGN_WAIT);
    Election::new(Locker::new(Arc::clone(t.client(client))), name, opts)
        .unwrap_or_else(|e| panic!("an election on {name:?}: {e}"))
}

/// `what` within `within`, or a panic saying it did not happen.
async fn within<F: Future>(within: Duration, what: &str, f: F) -> F::Output {
    tokio::time::timeout(within, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {within:?}"))
}

/// Five campaigners on one name: exactly one leads at a time, `leader()` names it, and each
/// leads in turn as the one before resigns, with a higher fence each time.
pub async fn one_leader_among_5_campaigners(t: Target) {
    const CAMPAIGNERS: usize = 5;
    let name = t.name("election-5");
    let leading = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (terms_tx, mut terms) = mpsc::unbounded_channel();
    let (resign_tx, resign_rx) = mpsc::unbounded_channel::<()>();
    let resign_rx = Arc::new(tokio::sync::Mutex::new(resign_rx));
    let tasks: Vec<_> = (0..CAMPAIGNERS)
        .map(|i| {
            let election = election(&t, i, &name, LONG_TTL, &format!("campaigner-{i}"));
            let (leading, most, terms_tx, resign_rx) = (
                Arc::clone(&leading),
                Arc::clone(&most),
                terms_tx.clone(),
                Arc::clone(&resign_rx),
            );
            tokio::spawn(async move {
                let term = election.campaign().await.expect("campaign");
                let now = leading.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                terms_tx.send((i, term.fence())).unwrap();
                // Lead until the test says to step down.
                resign_rx.lock().await.recv().await;
                leading.fetch_sub(1, Ordering::SeqCst);
                assert!(term.resign().await.expect("resign"), "still leading");
            })
        })
        .collect();
    let observer = election(&t, 1, &name, LONG_TTL, "observer");
    let mut fences = Vec::new();
    let mut leaders = Vec::new();
    for turn in 0..CAMPAIGNERS {
        let (who, fence) = within(SLACK * 5, "the next campaigner leading", terms.recv())
            .await
            .expect("a campaigner");
        // The others keep campaigning while this one leads: none of them gets in.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(terms.is_empty(), "two leaders at once (turn {turn})");
        let info = observer.leader().await.unwrap().expect("a leader");
        assert_eq!(
            info.fence, fence,
            "leader() names the campaigner that leads"
        );
        assert_eq!(info.label, format!("campaigner-{who}"));
        fences.push(fence);
        leaders.push(who);
        resign_tx.send(()).unwrap();
    }
    for task in tasks {
        within(SLACK * 5, "a campaigner finishing", task)
            .await
            .expect("campaigner panicked");
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "two leaders at once");
    leaders.sort_unstable();
    assert_eq!(
        leaders,
        (0..CAMPAIGNERS).collect::<Vec<_>>(),
        "each led once"
    );
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences rise term after term: {fences:?}"
    );
    assert!(observer.leader().await.unwrap().is_none(), "nobody leads");
}

/// A leader that resigns hands over to a waiting campaigner at once, with a higher fence.
pub async fn resign_hands_over_to_another_campaigner(t: Target) {
    let name = t.name("election-resign");
    let first = election(&t, 0, &name, LONG_TTL, "first");
    let second = election(&t, 1, &name, LONG_TTL, "second");
    let term = first.campaign().await.unwrap();
    let waiting = tokio::spawn(async move { second.campaign().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a second leader while the first leads"
    );
    let fence = term.fence();
    let resigned_at = Instant::now();
    assert!(term.resign().await.unwrap(), "the first still led");
    let next = within(SLACK, "the hand-over", waiting)
        .await
        .unwrap()
        .expect("campaign");
    let handover = resigned_at.elapsed();
    assert!(next.fence() > fence, "fence {} after {fence}", next.fence());
    let info = first.leader().await.unwrap().expect("a leader");
    assert_eq!((info.fence, info.label.as_str()), (next.fence(), "second"));
    assert!(handover < SLACK, "hand-over took {handover:?}");
    assert!(next.resign().await.unwrap());
}

/// A force-release ends the leader's term: `lost()` fires, `is_leading()` turns false, and
/// `run` cancels its work and starts it again under a higher fence, then returns the work's
/// output once it completes.
pub async fn force_release_ends_a_term_and_run_restarts_under_a_higher_fence(t: Target) {
    let name = t.name("election-force");
    let ttl = SHORT_TTL;
    // lost() on a term of its own.
    let term = election(&t, 0, &name, ttl, "leader")
        .campaign()
        .await
        .unwrap();
    assert!(t.second().force_release(&name).await.unwrap());
    let reason = within(ttl + SLACK, "lost() after a force-release", term.lost()).await;
    assert_eq!(reason, LossReason::Revoked);
    assert!(!term.is_leading());
    assert!(!term.resign().await.unwrap(), "nothing left to resign");

    // run(): the first start is cancelled by the loss; the second completes.
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let runner = election(&t, 0, &name, ttl, "runner");
    let c = Arc::clone(&cancelled);
    let run = tokio::spawn(async move {
        let mut starts = 0;
        runner
            .run(move |leadership| {
                starts += 1;
                let (started_tx, cancelled) = (started_tx.clone(), Arc::clone(&c));
                async move {
                    started_tx.send(leadership.fence()).unwrap();
                    if starts == 1 {
                        let _counts_cancellation = OnDrop(move || {
                            cancelled.fetch_add(1, Ordering::SeqCst);
                        });
                        std::future::pending::<()>().await;
                    }
                    assert!(leadership.is_leading());
                    leadership.fence()
                }
            })
            .await
    });
    let first = within(SLACK, "run starting its work", started.recv())
        .await
        .unwrap();
    assert!(t.second().force_release(&name).await.unwrap());
    let second = within(ttl + SLACK, "run restarting its work", started.recv())
        .await
        .unwrap();
    assert!(
        second > first,
        "restarted under fence {second} after {first}"
    );
    assert_eq!(
        cancelled.load(Ordering::SeqCst),
        1,
        "the first start was cancelled"
    );
    let out = within(SLACK, "run returning", run).await.unwrap().unwrap();
    assert_eq!(out, second, "run returns the work's output");
}

/// Drops run a closure (counts a cancellation).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The next event, within the slack of a change that happens within `within`.
async fn next_event(observer: &mut Observer, within_: Duration) -> LeaderEvent {
    within(within_ + SLACK, "the next leader event", observer.next())
        .await
        .expect("observing failed")
}

fn started(event: &LeaderEvent, fence: u64, label: &str) {
    match event {
        LeaderEvent::Started(info) if info.fence == fence && info.label == label => {}
        other => panic!("expected {label} (fence {fence}) to start leading, got {other:?}"),
    }
}

fn stopped(event: &LeaderEvent, fence: u64) {
    match event {
        LeaderEvent::Stopped(info) if info.fence == fence => {}
        other => panic!("expected the term of fence {fence} to stop, got {other:?}"),
    }
}

/// An observer sees every change of leader, in order, and a term's end only after its
/// start: through a resignation with a campaigner waiting, a force-release with nobody
/// waiting, and a leader that dies (its lease expires).
pub async fn observe_sees_every_change_in_order(t: Target) {
    let name = t.name("election-observe");
    let watcher = election(&t, 1, &name, SHORT_TTL, "observer");
    let mut observer = watcher.observe();
    // Nobody leads: nothing to report.
    let quiet = tokio::time::timeout(Duration::from_millis(300), observer.next()).await;
    assert!(quiet.is_err(), "an event while nobody led: {quiet:?}");

    let a = election(&t, 0, &name, LONG_TTL, "a")
        .campaign()
        .await
        .unwrap();
    started(
        &next_event(&mut observer, Duration::ZERO).await,
        a.fence(),
        "a",
    );

    let b_election = election(&t, 1, &name, LONG_TTL, "b");
    let b = tokio::spawn(async move { b_election.campaign().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a_fence = a.fence();
    assert!(a.resign().await.unwrap());
    stopped(&next_event(&mut observer, Duration::ZERO).await, a_fence);
    let b = within(SLACK, "b leading", b).await.unwrap().unwrap();
    started(
        &next_event(&mut observer, Duration::ZERO).await,
        b.fence(),
        "b",
    );

    assert!(t.second().force_release(&name).await.unwrap());
    stopped(&next_event(&mut observer, Duration::ZERO).await, b.fence());

    // A leader that dies: a lease nobody renews.
    let c = acquire(t.backend(), &name, &holder("c"), SHORT_TTL).await;
    started(
        &next_event(&mut observer, Duration::ZERO).await,
        c.fence,
        "c",
    );
    stopped(&next_event(&mut observer, SHORT_TTL).await, c.fence);
    drop(b);
    assert!(observer.leader().is_none());
}
