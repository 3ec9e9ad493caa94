//! Real OS processes contending for one lock on every backend: hand-off, a holder
//! SIGKILLed, a holder SIGSTOPped past its TTL, and many processes cycling, each checked by
//! the shared history. Each test prints one `reliability ...` summary line (see the crate
//! docs and `LOCK_TEST_SUMMARY`).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use leaselock::{LockBackend, LockName, LockOptions, Locker};
use lock_testkit::history::{self, Event, Recorder, assert_history, monotonic_nanos};
use support::{Report, Store, Worker};

const TTL: Duration = Duration::from_secs(1);
/// Generous slack for process start-up and scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(3);
const PATIENCE: Duration = Duration::from_secs(20);
/// Stores keep times in milliseconds, and Redis reports an expiry as its clock plus the
/// key's remaining milliseconds: allow this much rounding when comparing with the host clock.
const ROUNDING: Duration = Duration::from_millis(2);
/// A waiter gets a released lock within milliseconds (see `handoff.rs`); this leaves room
/// for a loaded machine and is still far below the 10 s TTL of the holder in the hand-off
/// case, so a hand-off by expiry cannot pass for one by release.
const HANDOFF_BOUND: Duration = Duration::from_secs(2);

/// A child holds; the parent's `try_lock` fails and its `lock()` waits; the child releases
/// on request; the parent then gets the lock with a higher fence.
async fn child_holds_parent_waits_child_releases_parent_acquires(store: Store) {
    let name = store.name("handoff");
    let mut child = store.worker("hold", &name, Duration::from_secs(10), "child", &[]);
    let child_fence = child.acquired(PATIENCE).await;

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
        tokio::spawn(async move {
            let guard = locker.lock(name.as_str(), &opts).await;
            (guard, monotonic_nanos())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "the parent waits while the child holds"
    );
    child.tell("release").await;
    let released_at = child.expect("released", PATIENCE).await[0];
    let (guard, acquired_at) = waiting.await.unwrap();
    let guard = guard.expect("the parent acquires");
    // The child's lease had most of its 10 s TTL left: getting it this soon after the
    // release means the release handed it over, not its expiry. (The child takes its time
    // after releasing, so the parent may even be first by a little.)
    let after_release = Duration::from_nanos(acquired_at.saturating_sub(released_at));
    assert!(
        after_release < HANDOFF_BOUND,
        "the parent got the lock {after_release:?} after the child released it"
    );
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
    assert_eq!(summary.lost, 0);
    Report::new("handoff", store.kind)
        .field("processes", 2)
        .field("faults", 0)
        .history(&summary)
        .emit();
}
per_backend!(
    handoff,
    child_holds_parent_waits_child_releases_parent_acquires
);

/// The TTL of the SIGKILL case: long enough that the parent surely probes the dead holder's
/// lease while it is still live, even on a loaded machine.
const KILL_TTL: Duration = Duration::from_secs(2);

/// The live lease on `name` as the store shows it, checked to be the one the child process
/// `pid` (labelled `label`) acquired with `fence`; returns when it expires.
async fn child_lease(
    backend: &Arc<dyn LockBackend>,
    name: &LockName,
    label: &str,
    fence: u64,
    pid: u32,
) -> SystemTime {
    let info = backend
        .inspect(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("the lease of {label} is not live"));
    assert_eq!(
        (info.label.as_str(), info.pid, info.fence),
        (label, pid, fence),
        "{info:?}"
    );
    info.expires_at
}

/// Asserts that the store granted the live lease on `name` (with `fence`) no earlier than
/// `expired_at`, when the previous holder's lease expired: the store's own acquisition time,
/// not when the answer reached this process.
async fn assert_granted_after(
    backend: &Arc<dyn LockBackend>,
    name: &LockName,
    fence: u64,
    expired_at: SystemTime,
) {
    let info = backend
        .inspect(name)
        .await
        .unwrap()
        .expect("the successor's lease is live");
    assert_eq!(info.fence, fence, "{info:?}");
    let early = expired_at
        .duration_since(info.acquired_at + ROUNDING)
        .unwrap_or_default();
    assert!(
        early.is_zero(),
        "taken over {early:?} before the previous holder's lease expired: {info:?}"
    );
}

/// A guard holder (a `Locker` heartbeating every `ttl / 3`, recording its section in the
/// history) SIGKILLed mid-section. On a store shared across hosts, while its last renewal is
/// within the TTL another process's `try_lock` is refused, and once the TTL ran out another
/// process gets the lock, soon. On a single-host store the kernel tells that the holder died:
/// the next `try_lock` takes the lease over at once, before its TTL ran out (see
/// `liveness.rs`). Either way with a higher fence, and the history shows no overlap.
async fn a_sigkilled_holder_is_taken_over(store: Store) {
    let name = store.name("killed");
    let lock = LockName::new(&name).unwrap();
    let backend = store.backend().await;
    let mut child = store.worker("hold", &name, KILL_TTL, "victim", &[]);
    let child_fence = child.acquired(PATIENCE).await;
    let pid = child.pid();

    // Mid-section: wait until the child's heartbeat has renewed its lease, then kill it.
    let first_expiry = child_lease(&backend, &lock, "victim", child_fence, pid).await;
    let asked = Instant::now();
    loop {
        let expiry = child_lease(&backend, &lock, "victim", child_fence, pid).await;
        if expiry > first_expiry + KILL_TTL / 6 {
            break;
        }
        assert!(
            asked.elapsed() < KILL_TTL + SLACK,
            "the child did not renew its lease within {:?}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.signal(libc::SIGKILL);
    let killed_at = Instant::now();
    assert_eq!(child.exit_code(PATIENCE).await, None, "killed by a signal");
    // The dead holder's lease as the store keeps it: nobody renews it any more.
    let expires_at = child_lease(&backend, &lock, "victim", child_fence, pid).await;

    let locker = Locker::new(Arc::clone(&backend));
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(10))
        .with_label("successor");
    let mut refused_while_live = 0_u32;
    let guard = loop {
        let attempt = locker.try_lock(name.as_str(), &opts).await.unwrap();
        let answered = SystemTime::now();
        if let Some(guard) = attempt {
            break guard;
        }
        if answered < expires_at {
            refused_while_live += 1;
        }
        assert!(
            killed_at.elapsed() < KILL_TTL + SLACK,
            "still not free {:?} after the holder was killed",
            killed_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut history = Recorder::open(&store.history(), "successor").unwrap();
    history.record(&name, guard.fence(), Event::Start).unwrap();
    if store.kind.is_single_host() {
        assert_eq!(
            refused_while_live, 0,
            "the dead holder was taken over at once"
        );
        assert!(
            SystemTime::now() < expires_at,
            "taken over before the dead holder's TTL ran out"
        );
    } else {
        assert_granted_after(&backend, &lock, guard.fence(), expires_at).await;
        assert!(
            refused_while_live > 0,
            "no try_lock was answered while the dead holder's lease was live"
        );
    }
    assert!(
        guard.fence() > child_fence,
        "fence {} after {child_fence}",
        guard.fence()
    );
    assert!(
        history
            .verified(&name, guard.fence(), Event::End, || guard.is_held())
            .unwrap(),
        "the successor still holds the lock"
    );
    assert!(guard.release().await.unwrap());

    let summary = assert_history(&store.history());
    assert_eq!(
        summary.sections, 2,
        "the victim's section and the successor's"
    );
    assert_eq!(summary.lost, 1, "the victim's section ended by the kill");
    Report::new("sigkill", store.kind)
        .field("processes", 2)
        .field("faults", 1)
        .field("fault", "sigkill")
        .history(&summary)
        .emit();
}
per_backend!(sigkill, a_sigkilled_holder_is_taken_over);

/// A holder SIGSTOPped past its TTL, while it held the lease: another process acquires, no
/// earlier than the paused holder's lease expired in the store; when the paused one
/// resumes, `with_lock` cancels its work (`LeaseLost`) before the work begins another step
/// (or the step the stop interrupted finds the lease gone itself),
/// and it exits although its stdin is still open; the history shows the later holder's
/// higher fence and no overlap.
async fn a_paused_holder_loses_its_lease_before_working_again(store: Store) {
    let name = store.name("paused");
    let lock = LockName::new(&name).unwrap();
    let backend = store.backend().await;
    let mut child = store.worker("hold", &name, TTL, "paused", &[]);
    let child_fence = child.acquired(PATIENCE).await;
    let pid = child.pid();
    tokio::time::sleep(TTL / 2).await; // some work and heartbeats
    child.signal(libc::SIGSTOP);
    let stopped_at = monotonic_nanos();
    // Still the child's live lease: it held the lock when it was stopped. A renewal it sent
    // just before may still land (Redis), which only makes the real expiry later than this.
    let expires_at = child_lease(&backend, &lock, "paused", child_fence, pid).await;
    assert!(
        expires_at > SystemTime::now(),
        "the paused holder's lease is live"
    );

    let locker = Locker::new(Arc::clone(&backend));
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(10))
        .with_wait(PATIENCE)
        .with_label("successor");
    let guard = locker.lock(name.as_str(), &opts).await.unwrap();
    let successor_start = monotonic_nanos();
    let mut history = Recorder::open(&store.history(), "successor").unwrap();
    history
        .record_at(&name, guard.fence(), Event::Start, successor_start)
        .unwrap();
    assert_granted_after(&backend, &lock, guard.fence(), expires_at).await;
    assert!(
        guard.fence() > child_fence,
        "fence {} after {child_fence}",
        guard.fence()
    );
    assert!(
        Duration::from_nanos(successor_start - stopped_at) < TTL + SLACK,
        "taken over soon after the TTL"
    );

    // Resume the paused holder while the successor still holds the lock.
    let resumed_at = monotonic_nanos();
    child.signal(libc::SIGCONT);
    let line = child.line(PATIENCE).await;
    // `cancelled`: with_lock ended the work. `lost-in-work`: the stop landed inside a work
    // step, between with_lock's check of the lease and the step's own (a few microseconds
    // of each step), so the step, which began before the stop, found the lease gone on
    // resuming. Either way no step may begin after the loss.
    let (numbers, exit_code) = if let Some(numbers) = line.strip_prefix("cancelled ") {
        (numbers, 3)
    } else if let Some(numbers) = line.strip_prefix("lost-in-work ") {
        (numbers, 4)
    } else {
        panic!("the resumed holder said {line:?}, not `cancelled` or `lost-in-work`")
    };
    let numbers: Vec<u64> = numbers.split(' ').map(|n| n.parse().unwrap()).collect();
    let (steps, last_step) = (numbers[0], numbers[1]);
    assert!(steps > 0, "the holder worked before it was paused");
    if exit_code == 4 {
        assert!(
            last_step < stopped_at,
            "the work's own check caught the loss in a step that began after the stop: \
             with_lock let a step begin after the lease was lost"
        );
    }
    assert!(
        last_step < resumed_at,
        "the work began a step {:?} after the holder was resumed: with_lock let it run",
        Duration::from_nanos(last_step - resumed_at)
    );
    assert!(last_step < successor_start);
    // A worker whose work was cancelled exits although its parent keeps its stdin open.
    let _stdin = child.keep_stdin_open();
    assert_eq!(child.exit_code(PATIENCE).await, Some(exit_code));
    assert!(
        history
            .verified(&name, guard.fence(), Event::End, || guard.is_held())
            .unwrap(),
        "the resumed holder did not disturb the successor's lease"
    );
    assert!(guard.release().await.unwrap());

    let summary = assert_history(&store.history());
    assert_eq!(summary.sections, 2);
    assert_eq!(summary.lost, 1, "the paused holder's section ended by loss");
    Report::new("sigstop", store.kind)
        .field("processes", 2)
        .field("faults", 1)
        .field("fault", "sigstop")
        .history(&summary)
        .emit();
}
per_backend!(
    sigstop,
    a_paused_holder_loses_its_lease_before_working_again
);

/// Waits for every cycling worker's summary line and its clean exit; returns the summaries.
async fn summaries(workers: &mut [Worker]) -> Vec<serde_json::Value> {
    let mut summaries = Vec::new();
    for worker in workers {
        let line = worker.line(Duration::from_secs(120)).await;
        let summary: serde_json::Value = serde_json::from_str(
            line.strip_prefix("summary ")
                .unwrap_or_else(|| panic!("the worker said {line:?}, not its summary")),
        )
        .unwrap();
        assert_eq!(worker.exit_code(PATIENCE).await, Some(0), "{summary}");
        summaries.push(summary);
    }
    summaries
}

/// The sum of one count over all summaries.
fn total(summaries: &[serde_json::Value], count: &str) -> u64 {
    summaries
        .iter()
        .map(|s| {
            s[count]
                .as_u64()
                .unwrap_or_else(|| panic!("{count} in {s}"))
        })
        .sum()
}

/// Starts `workers` processes that each run `cycles` acquire / heartbeat / release cycles on
/// `name` (10 s TTL, holding 1 ms, no pause), and returns their summaries once all are done.
async fn cycle_on_one_name(
    store: &Store,
    name: &str,
    workers: usize,
    cycles: u32,
) -> Vec<serde_json::Value> {
    let mut workers: Vec<_> = (0..workers)
        .map(|i| {
            store.worker(
                "cycles",
                name,
                Duration::from_secs(10),
                &format!("w{i}"),
                &["--cycles", &cycles.to_string(), "--hold-ms", "1"],
            )
        })
        .collect();
    summaries(&mut workers).await
}

/// Eight processes cycling acquire / heartbeat / release on one name: no overlap, fences
/// rising, every cycle done, no error of any kind.
async fn eight_processes_cycle_without_overlap(store: Store) {
    const WORKERS: usize = 8;
    const CYCLES: u32 = 25;
    let name = store.name("cycles");
    for summary in cycle_on_one_name(&store, &name, WORKERS, CYCLES).await {
        assert_eq!(summary["cycles"], CYCLES, "{summary}");
        for kind in ["busy", "lost", "timeout", "other"] {
            assert_eq!(summary[kind], 0, "{kind} errors: {summary}");
        }
    }
    let summary = assert_history(&store.history());
    assert_eq!(summary.sections, WORKERS * CYCLES as usize);
    assert_eq!(summary.lost, 0);
    assert_eq!(summary.holders, WORKERS);
    Report::new("cycles", store.kind)
        .field("processes", WORKERS)
        .field("faults", 0)
        .history(&summary)
        .field("busy", 0)
        .emit();
}
per_backend!(cycles, eight_processes_cycle_without_overlap);

/// Fairness on a single-host store: eight processes loop on one name without a pause (each
/// asks again as soon as it released). A process that released does not take the lock back
/// ahead of a waiting process that has waited 2 ms (see `LockBackend::give_way`): while all
/// eight ran, the most and the least served differ by at most 2x. Each holds the lock 1 ms,
/// so that what is measured is how the lock serves them rather than how the scheduler
/// shares two CPUs among eight debug builds and the tests running beside them (without
/// giving way, the least served process got 0-21 turns to the most's 119-124). Redis
/// queues its waiters; its own test checks the same.
async fn eight_processes_looping_on_one_name_are_served_within_a_factor_of_two(store: Store) {
    const WORKERS: usize = 8;
    const CYCLES: u32 = 150;
    let name = store.name("fair");
    for summary in cycle_on_one_name(&store, &name, WORKERS, CYCLES).await {
        assert_eq!(summary["cycles"], CYCLES, "{summary}");
    }
    let summary = assert_history(&store.history());
    assert_eq!(summary.sections, WORKERS * CYCLES as usize);
    let served = served_while_all_ran(&history::read(&store.history()).unwrap());
    assert_eq!(served.len(), WORKERS, "{served:?}");
    let (least, most) = (
        served.values().copied().min().unwrap_or(0),
        served.values().copied().max().unwrap_or(0),
    );
    // Each process took a fair share of at least ten turns while all ran: a window too
    // short to tell would not pass for fairness.
    assert!(
        least >= 10,
        "a process was served {least} times while all ran: {served:?}"
    );
    assert!(most <= 2 * least, "most {most}, least {least}: {served:?}");
    Report::new("fairness", store.kind)
        .field("processes", WORKERS)
        .field("served_least", least)
        .field("served_most", most)
        .emit();
}
per_single_host_backend!(
    fair,
    eight_processes_looping_on_one_name_are_served_within_a_factor_of_two
);

/// Acquisitions per holder from the last holder's first to the first holder's last: the
/// span in which every process was looping.
fn served_while_all_ran(records: &[history::Record]) -> std::collections::BTreeMap<String, usize> {
    let mut first = std::collections::BTreeMap::<&str, u64>::new();
    let mut last = std::collections::BTreeMap::<&str, u64>::new();
    for record in records.iter().filter(|r| r.event == Event::Start) {
        first.entry(&record.holder).or_insert(record.at);
        last.insert(&record.holder, record.at);
    }
    let from = first.values().copied().max().unwrap_or(0);
    let to = last.values().copied().min().unwrap_or(0);
    let mut served: std::collections::BTreeMap<String, usize> = first
        .keys()
        .map(|holder| ((*holder).to_owned(), 0))
        .collect();
    for record in records.iter().filter(|r| r.event == Event::Start) {
        if (from..=to).contains(&record.at) {
            *served.entry(record.holder.clone()).or_default() += 1;
        }
    }
    served
}

/// Expiry and takeover under load: eight processes cycle on one name with a 300 ms TTL, and
/// four of them stall while holding (their only thread blocked, heartbeats included) for
/// 1.5 TTL every 8th cycle. Each stall loses its lease; the others take the lock over after
/// the TTL; the history still shows no overlap among valid sections and rising fences, and
/// every process finishes without any other error.
async fn stalled_holders_lose_their_lease_to_the_others(store: Store) {
    const WORKERS: usize = 8;
    const STALLERS: usize = 4;
    const CYCLES: u32 = 16;
    const STALL_EVERY: u32 = 8;
    const STALLS: u32 = CYCLES / STALL_EVERY;
    let ttl = Duration::from_millis(300);
    let stall = ttl * 3 / 2;
    let (cycles, every) = (CYCLES.to_string(), STALL_EVERY.to_string());
    let stall_ms = stall.as_millis().to_string();
    let name = store.name("expiry");
    let mut workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let mut extra = vec!["--cycles", &cycles, "--hold-ms", "1"];
            if i < STALLERS {
                extra.extend(["--stall-every", &every, "--stall-ms", &stall_ms]);
            }
            store.worker("cycles", &name, ttl, &format!("w{i}"), &extra)
        })
        .collect();
    let summaries = summaries(&mut workers).await;
    for (i, summary) in summaries.iter().enumerate() {
        for kind in ["busy", "timeout", "other"] {
            assert_eq!(summary[kind], 0, "{kind} errors: {summary}");
        }
        let (done, lost) = (summary["cycles"].as_u64(), summary["lost"].as_u64());
        assert_eq!(
            done.zip(lost).map(|(d, l)| d + l),
            Some(u64::from(CYCLES)),
            "every cycle is done or lost: {summary}"
        );
        if i < STALLERS {
            assert!(
                lost >= Some(u64::from(STALLS)),
                "each stall past the TTL loses the lease: {summary}"
            );
        }
    }
    let lost = total(&summaries, "lost");
    let done = total(&summaries, "cycles");
    let history = assert_history(&store.history());
    assert!(history.lost > 0, "the stalled sections are in the history");
    // A section that began less than a stall after a lost one began was a takeover: the
    // stalled holder could not have released before its stall ended.
    let sections = history::sections(&history::read(&store.history()).unwrap()).unwrap();
    let stall_ns = u64::try_from(stall.as_nanos()).unwrap();
    let takeovers = sections
        .windows(2)
        .filter(|pair| {
            let (lost, next) = (&pair[0], &pair[1]);
            !lost.released && next.name == lost.name && next.start < lost.start + stall_ns
        })
        .count();
    assert!(
        takeovers > 0,
        "no lease was taken over from a stalled holder"
    );
    assert_eq!(
        (history.sections - history.lost) as u64,
        done,
        "exactly the sections of the cycles done ended with a release"
    );
    assert!(history.lost as u64 <= lost);
    Report::new("expiry", store.kind)
        .field("processes", WORKERS)
        .field("faults", STALLERS as u32 * STALLS)
        .field("fault", "stall")
        .field("takeovers", takeovers)
        .history(&history)
        .field("busy", 0)
        .emit();
}
per_backend!(expiry, stalled_holders_lose_their_lease_to_the_others);
