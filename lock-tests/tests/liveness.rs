//! Single-host liveness (a lock directory, SQLite through both drivers): a holder whose
//! process dies is taken over at once, by exactly one contender, with a higher fence; a
//! holder whose hold file was deleted or replaced is never taken over before its TTL; and a
//! process waiting for a held lock costs no CPU. Each test prints one `reliability ...`
//! summary line (see the crate docs and `LOCK_TEST_SUMMARY`).
//!
//! A paused (SIGSTOPped) holder keeps its lease until the TTL on every store: see
//! `cross_process.rs`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use leaselock::{LockName, LockOptions, Locker};
use lock_testkit::history::{Event, Recorder, assert_history, monotonic_nanos};
use support::{Report, Store};

/// A TTL no test waits out: a takeover in these tests is one by the holder's death.
const LONG_TTL: Duration = Duration::from_secs(30);
const PATIENCE: Duration = Duration::from_secs(20);
/// The bound the issue sets on a takeover after a holder's death, for nine rounds in ten.
const TAKEOVER_P90: Duration = Duration::from_millis(100);
/// Every round's bound: far below the 30 s TTL, so that no round can pass by expiry, with
/// room for a loaded 2-core machine running the whole suite.
const TAKEOVER_MAX: Duration = Duration::from_secs(2);

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// A holder process (a `Locker` guard heartbeating, recording work in the history) is
/// SIGKILLed while this process waits in `lock()`: the waiter holds the lock within
/// milliseconds, with a higher fence, 50 times in a row; the history shows no overlap.
async fn a_killed_holder_is_taken_over_at_once(store: Store) {
    const ROUNDS: usize = 50;
    let name = store.name("killed");
    let lock = LockName::new(&name).unwrap();
    let backend = store.backend().await;
    let locker = Locker::new(Arc::clone(&backend));
    let opts = LockOptions::default()
        .with_ttl(LONG_TTL)
        .with_wait(PATIENCE)
        .with_label("waiter");
    let mut history = Recorder::open(&store.history(), "waiter").unwrap();
    let mut took = Vec::with_capacity(ROUNDS);
    let mut last_fence = 0;
    for round in 0..ROUNDS {
        let mut child = store.worker("hold", &name, LONG_TTL, &format!("victim-{round}"), &[]);
        let child_fence = child.acquired(PATIENCE).await;
        assert!(child_fence > last_fence, "round {round}: fences rise");
        let waiting = {
            let (locker, name, opts) = (locker.clone(), name.clone(), opts.clone());
            tokio::spawn(async move {
                let guard = locker.lock(name.as_str(), &opts).await;
                (guard, monotonic_nanos())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "round {round}: the waiter waits while the holder lives"
        );
        child.signal(libc::SIGKILL);
        let killed_at = monotonic_nanos();
        let (guard, acquired_at) = waiting.await.unwrap();
        let guard = guard.unwrap_or_else(|e| panic!("round {round}: {e}"));
        history.record(&name, guard.fence(), Event::Start).unwrap();
        took.push(Duration::from_nanos(acquired_at.saturating_sub(killed_at)));
        assert!(
            guard.fence() > child_fence,
            "round {round}: fence {} after {child_fence}",
            guard.fence()
        );
        // `inspect` (and so `lockctl status`) shows the new holder.
        let info = backend.inspect(&lock).await.unwrap().expect("held");
        assert_eq!(
            (info.label.as_str(), info.fence, info.pid),
            ("waiter", guard.fence(), std::process::id()),
            "round {round}"
        );
        assert!(
            history
                .verified(&name, guard.fence(), Event::End, || guard.is_held())
                .unwrap()
        );
        last_fence = guard.fence();
        assert!(guard.release().await.unwrap());
        assert_eq!(child.exit_code(PATIENCE).await, None, "killed by a signal");
    }
    took.sort();
    let (p50, p90, max) = (
        percentile(&took, 50),
        percentile(&took, 90),
        took[ROUNDS - 1],
    );
    assert!(
        p90 <= TAKEOVER_P90,
        "takeover after the kill, 90th percentile {p90:?} (all: {took:?})"
    );
    assert!(
        max <= TAKEOVER_MAX,
        "slowest takeover {max:?} after the kill (all: {took:?})"
    );
    let summary = assert_history(&store.history());
    assert_eq!(summary.sections, 2 * ROUNDS);
    assert_eq!(
        summary.lost, ROUNDS,
        "every victim's section ended by the kill"
    );
    Report::new("dead-holder-takeover", store.kind)
        .field("rounds", ROUNDS)
        .field("processes", ROUNDS + 1)
        .field("faults", ROUNDS)
        .field("takeover_p50_us", p50.as_micros())
        .field("takeover_p90_us", p90.as_micros())
        .field("takeover_max_us", max.as_micros())
        .history(&summary)
        .emit();
}
per_single_host_backend!(killed, a_killed_holder_is_taken_over_at_once);

/// Two contenders (two backends of this process, each its own connection or client) race
/// for the lease of a holder process that was just killed: exactly one wins, 200 times.
async fn two_contenders_race_for_a_dead_holders_lease(store: Store) {
    const ROUNDS: usize = 200;
    let name = store.name("race");
    let lockers = [
        Locker::new(store.backend().await),
        Locker::new(store.backend().await),
    ];
    let opts = LockOptions::default()
        .with_ttl(LONG_TTL)
        .with_label("contender");
    let mut wins = [0_usize; 2];
    let mut last_fence = 0;
    for round in 0..ROUNDS {
        let mut child = store.worker("hold", &name, LONG_TTL, &format!("victim-{round}"), &[]);
        let child_fence = child.acquired(PATIENCE).await;
        child.signal(libc::SIGKILL);
        assert_eq!(child.exit_code(PATIENCE).await, None, "killed by a signal");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let attempts: Vec<_> = lockers
            .iter()
            .map(|locker| {
                let (locker, name, opts) = (locker.clone(), name.clone(), opts.clone());
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    locker.try_lock(name.as_str(), &opts).await.unwrap()
                })
            })
            .collect();
        let mut guards = Vec::new();
        for attempt in attempts {
            guards.push(attempt.await.unwrap());
        }
        let winners: Vec<usize> = (0..2).filter(|i| guards[*i].is_some()).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one contender takes the dead holder's lease"
        );
        wins[winners[0]] += 1;
        let guard = guards.swap_remove(winners[0]).unwrap();
        assert!(
            guard.fence() > child_fence && child_fence > last_fence,
            "round {round}: fence {} after {child_fence} after {last_fence}",
            guard.fence()
        );
        last_fence = guard.fence();
        assert!(guard.release().await.unwrap());
    }
    Report::new("dead-holder-race", store.kind)
        .field("rounds", ROUNDS)
        .field("processes", ROUNDS + 1)
        .field("faults", ROUNDS)
        .field("wins", format!("{}/{}", wins[0], wins[1]))
        .emit();
}
per_single_host_backend!(race, two_contenders_race_for_a_dead_holders_lease);

/// The hold files under `dir` (any depth).
fn hold_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "hold") {
                found.push(path);
            }
        }
    }
    found
}

/// A live holder's hold file is deleted, or replaced by another file: no other process
/// takes the lease while the holder lives; once it is killed, its lease is taken over only
/// when its TTL has run out (doubt leaves it to the TTL), with a higher fence.
async fn a_lost_hold_file_leaves_the_lease_to_its_ttl(store: Store, replace: bool) {
    const TTL: Duration = Duration::from_secs(2);
    let name = store.name(if replace { "replaced" } else { "deleted" });
    let lock = LockName::new(&name).unwrap();
    let mut child = store.worker("hold", &name, TTL, "holder", &[]);
    let child_fence = child.acquired(PATIENCE).await;
    // Only the child has a hold yet: this process has taken no lease.
    let holds = hold_files(store.dir());
    assert_eq!(holds.len(), 1, "the holder's hold file: {holds:?}");
    std::fs::remove_file(&holds[0]).unwrap();
    if replace {
        std::fs::write(&holds[0], b"").unwrap();
    }
    let backend = store.backend().await;
    let locker = Locker::new(Arc::clone(&backend));
    let opts = LockOptions::default()
        .with_ttl(LONG_TTL)
        .with_label("contender");
    // The holder lives (and renews) for more than a TTL: nobody else gets in.
    let until = tokio::time::Instant::now() + TTL + TTL / 2;
    let mut refused = 0_u32;
    while tokio::time::Instant::now() < until {
        assert!(
            locker
                .try_lock(name.as_str(), &opts)
                .await
                .unwrap()
                .is_none(),
            "a second holder while the first lives"
        );
        refused += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.signal(libc::SIGKILL);
    assert_eq!(child.exit_code(PATIENCE).await, None, "killed by a signal");
    let expires_at = backend
        .inspect(&lock)
        .await
        .unwrap()
        .expect("the dead holder's lease is still live")
        .expires_at;
    let guard = locker
        .lock(name.as_str(), opts.clone().with_wait(PATIENCE))
        .await
        .unwrap();
    let info = backend.inspect(&lock).await.unwrap().unwrap();
    assert_eq!(info.fence, guard.fence());
    assert!(
        info.acquired_at + Duration::from_millis(2) >= expires_at,
        "taken over at {:?}, before the lease expired at {expires_at:?}",
        info.acquired_at
    );
    assert!(guard.fence() > child_fence);
    assert!(SystemTime::now() >= expires_at);
    assert!(guard.release().await.unwrap());
    let test = if replace {
        "replaced-hold-file"
    } else {
        "deleted-hold-file"
    };
    Report::new(test, store.kind)
        .field("processes", 2)
        .field("faults", 1)
        .field("refused_while_alive", refused)
        .emit();
}

async fn a_deleted_hold_file_leaves_the_lease_to_its_ttl(store: Store) {
    a_lost_hold_file_leaves_the_lease_to_its_ttl(store, false).await;
}
per_single_host_backend!(deleted, a_deleted_hold_file_leaves_the_lease_to_its_ttl);

async fn a_replaced_hold_file_leaves_the_lease_to_its_ttl(store: Store) {
    a_lost_hold_file_leaves_the_lease_to_its_ttl(store, true).await;
}
per_single_host_backend!(replaced, a_replaced_hold_file_leaves_the_lease_to_its_ttl);

/// Takes `name`, free, in this process with a TTL no test waits out, for waiter processes
/// to wait on.
async fn hold_here(locker: &Locker, name: &str) -> leaselock::LockGuard {
    let opts = LockOptions::default()
        .with_ttl(LONG_TTL)
        .with_label("holder");
    locker
        .try_lock(name, &opts)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{name} is free before this process takes it"))
}

/// Eight processes wait 10 s for a lock this process holds: each uses less than 0.1% of a
/// core while it waits (CPU time from `getrusage`, in the worker).
async fn waiting_processes_use_no_cpu(store: Store) {
    const WAITERS: usize = 8;
    const WAIT: Duration = Duration::from_secs(10);
    let name = store.name("idle");
    let locker = Locker::new(store.backend().await);
    let guard = hold_here(&locker, &name).await;
    let wait_ms = WAIT.as_millis().to_string();
    let mut waiters: Vec<_> = (0..WAITERS)
        .map(|i| {
            store.worker(
                "wait",
                &name,
                LONG_TTL,
                &format!("waiter-{i}"),
                &["--wait-ms", &wait_ms],
            )
        })
        .collect();
    for waiter in &mut waiters {
        assert_eq!(waiter.line(PATIENCE).await, "waiting");
    }
    let mut cpu = Vec::new();
    for waiter in &mut waiters {
        let numbers = waiter.expect("timed-out", WAIT + PATIENCE).await;
        cpu.push(Duration::from_micros(numbers[0]));
        assert_eq!(waiter.exit_code(PATIENCE).await, Some(0));
    }
    assert!(guard.is_held());
    assert!(guard.release().await.unwrap());
    let budget = WAIT / 1000; // 0.1% of a core
    let worst = cpu.iter().max().copied().unwrap_or_default();
    assert!(
        worst < budget,
        "a waiter used {worst:?} of CPU in {WAIT:?} (all: {cpu:?}); the bound is {budget:?}"
    );
    Report::new("waiting-cpu", store.kind)
        .field("processes", WAITERS + 1)
        .field("wait_s", WAIT.as_secs())
        .field("worst_cpu_us", worst.as_micros())
        .emit();
}
per_single_host_backend!(idle, waiting_processes_use_no_cpu);

/// The process at the head of the waiters (the one a release wakes) is SIGKILLed while
/// another waits behind it; then the lock is released: the other process gets it at once,
/// 30 times in a row. The kernel reports the close of a killed head's files before it drops
/// their locks, and a waiter woken by that close once went back to sleep until its next
/// check on the head (2.5-5 s), about one kill in seven.
async fn a_waiter_moves_up_when_the_head_of_the_waiters_is_killed(store: Store) {
    const ROUNDS: usize = 30;
    /// Far above a hand-off (well under 10 ms), below the 2.5 s a missed wake-up costs.
    const BOUND: Duration = Duration::from_secs(1);
    let name = store.name("head-killed");
    let locker = Locker::new(store.backend().await);
    let mut took = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let guard = hold_here(&locker, &name).await;
        let waiter =
            |id: String| store.worker("wait", &name, LONG_TTL, &id, &["--wait-ms", "60000"]);
        // The first waiter leads the waiting processes: it waits alone for a while.
        let mut head = waiter(format!("head-{round}"));
        assert_eq!(head.line(PATIENCE).await, "waiting");
        let mut next = waiter(format!("next-{round}"));
        assert_eq!(next.line(PATIENCE).await, "waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
        head.signal(libc::SIGKILL);
        assert_eq!(head.exit_code(PATIENCE).await, None, "killed");
        let fence = guard.fence();
        let released = std::time::Instant::now();
        assert!(guard.release().await.unwrap());
        let numbers = next.expect("acquired", PATIENCE).await;
        took.push(released.elapsed());
        assert!(numbers[0] > fence, "round {round}: fences rise");
        assert_eq!(next.exit_code(PATIENCE).await, Some(0));
        assert!(
            released.elapsed() < BOUND,
            "round {round}: the waiter behind a killed head got the lock {:?} after its \
             release",
            released.elapsed()
        );
    }
    took.sort_unstable();
    Report::new("head-killed", store.kind)
        .field("rounds", ROUNDS)
        .field(
            "p50_ms",
            format!("{:.2}", percentile(&took, 50).as_secs_f64() * 1e3),
        )
        .field(
            "max_ms",
            format!("{:.2}", took[ROUNDS - 1].as_secs_f64() * 1e3),
        )
        .emit();
}
per_single_host_backend!(
    head_killed,
    a_waiter_moves_up_when_the_head_of_the_waiters_is_killed
);

/// Processes that wait for a held lock get it in the order they came: each waiter below
/// starts waiting once the one before it waits, and when the lock is released they take it
/// one after another (each releases at once), with fences rising in that order. Waiting
/// processes queue for the head's turn in the kernel (a `flock` each), which serves them in
/// order; when they raced for it instead, the order was up to the kernel's wake-ups, and one
/// wait could last many times its fair share.
async fn waiting_processes_are_served_in_the_order_they_came(store: Store) {
    const WAITERS: usize = 5;
    let name = store.name("in-order");
    let locker = Locker::new(store.backend().await);
    let guard = hold_here(&locker, &name).await;
    let mut waiters = Vec::with_capacity(WAITERS);
    for i in 0..WAITERS {
        let mut waiter = store.worker(
            "wait",
            &name,
            LONG_TTL,
            &format!("waiter-{i}"),
            &["--wait-ms", "60000"],
        );
        assert_eq!(waiter.line(PATIENCE).await, "waiting");
        // Asleep in its place before the next one comes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        waiters.push(waiter);
    }
    let first = guard.fence();
    assert!(guard.release().await.unwrap());
    let mut fences = Vec::with_capacity(WAITERS);
    for waiter in &mut waiters {
        fences.push(waiter.expect("acquired", PATIENCE).await[0]);
        assert_eq!(waiter.exit_code(PATIENCE).await, Some(0));
    }
    assert!(fences[0] > first);
    assert!(
        fences.windows(2).all(|pair| pair[0] < pair[1]),
        "served out of order: fences by order of arrival {fences:?}"
    );
    Report::new("in-order", store.kind)
        .field("waiters", WAITERS)
        .field("fences_in_order", true)
        .emit();
}
per_single_host_backend!(
    in_order,
    waiting_processes_are_served_in_the_order_they_came
);
