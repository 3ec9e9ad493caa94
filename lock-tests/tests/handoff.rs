//! Hand-off between processes: when one process releases a lock another process is waiting
//! for, the waiter gets it within milliseconds, on every backend. Redis tells waiters by
//! pub/sub; the lock directory and SQLite have waiters look at the lease every 1-2 ms.
//!
//! This test binary runs itself as the second process. Both take the lock in turns, each
//! holding it long enough that the other is deep in its wait (where backoff alone would
//! sleep tens of milliseconds between attempts) before it is released.

mod support;

use std::process::Stdio;
use std::time::Duration;

use lock::{LockOptions, Locker};
use lock_conformance::history::monotonic_nanos;
use support::{Kind, Store};

/// Set in the child process: the store URL, and the lock name.
const CHILD_URL: &str = "LOCK_TESTS_HANDOFF_URL";
const CHILD_NAME: &str = "LOCK_TESTS_HANDOFF_NAME";
/// Acquisitions per process.
const CYCLES: usize = 6;
/// How long each holder keeps the lock: the waiter's backoff has grown to 32-64 ms by then.
const HOLD: Duration = Duration::from_millis(150);
/// How long a process waits after releasing before it asks again, so the other one (already
/// waiting) is the next holder.
const PAUSE: Duration = Duration::from_millis(5);
/// The median hand-off must be under this (polling every 1-2 ms gives ~2 ms; backoff alone
/// gave ~40 ms at this hold time).
const MEDIAN_BOUND: Duration = Duration::from_millis(12);

/// One process's acquisitions and releases (CLOCK_MONOTONIC nanoseconds, comparable between
/// processes on this host).
#[derive(Debug, Default)]
struct Turns {
    acquired: Vec<u64>,
    released: Vec<u64>,
}

async fn take_turns(url: &str, name: &str) -> Turns {
    let locker = Locker::new(lock::connect(url).await.expect("connect"));
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(30))
        .with_wait(Duration::from_secs(30))
        .with_label("handoff");
    let mut turns = Turns::default();
    for _ in 0..CYCLES {
        let guard = locker.lock(name, &opts).await.expect("lock");
        turns.acquired.push(monotonic_nanos());
        tokio::time::sleep(HOLD).await;
        turns.released.push(monotonic_nanos());
        assert!(guard.release().await.expect("release"));
        tokio::time::sleep(PAUSE).await;
    }
    turns
}

/// For every acquisition that followed the other process's release: the time in between.
fn handoffs(a: &Turns, b: &Turns) -> Vec<Duration> {
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (who, turns) in [a, b].into_iter().enumerate() {
        events.extend(turns.acquired.iter().map(|&at| (at, true, who)));
        events.extend(turns.released.iter().map(|&at| (at, false, who)));
    }
    events.sort_unstable();
    let mut last_release = None;
    let mut out = Vec::new();
    for (at, acquired, who) in events {
        match (acquired, last_release.take()) {
            (true, Some((released, by))) if by != who => {
                out.push(Duration::from_nanos(at - released));
            }
            (false, _) => last_release = Some((at, who)),
            _ => {}
        }
    }
    out
}

async fn waiters_in_another_process_get_the_lock_within_milliseconds(store: Store) {
    if let (Ok(url), Ok(name)) = (std::env::var(CHILD_URL), std::env::var(CHILD_NAME)) {
        let turns = take_turns(&url, &name).await;
        for at in turns.acquired {
            println!("handoff-event a {at}");
        }
        for at in turns.released {
            println!("handoff-event r {at}");
        }
        return;
    }
    let name = store.name("handoff");
    let test = match store.kind {
        Kind::File => "waiters::file",
        Kind::Sqlite => "waiters::sqlite",
        Kind::SqliteSqlx => "waiters::sqlite_sqlx",
        Kind::Redis => "waiters::redis",
    };
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_URL, &store.url)
        .env(CHILD_NAME, &name);
    if store.kind == Kind::Redis {
        // The child builds a store before it reads its orders: make its Redis store this
        // one's server instead of a private server of its own.
        child.env(lock_redis::test_support::URL_ENV, &store.url);
    }
    let child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the second process");
    let mine = take_turns(&store.url, &name).await;
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "the second process failed");
    let mut theirs = Turns::default();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // libtest may print "test waiters::x ... " just before the first event.
        let Some((_, event)) = line.split_once("handoff-event ") else {
            continue;
        };
        let (kind, at) = event.split_once(' ').unwrap();
        let at: u64 = at.parse().unwrap();
        match kind {
            "a" => theirs.acquired.push(at),
            _ => theirs.released.push(at),
        }
    }
    assert_eq!(theirs.acquired.len(), CYCLES, "the second process's turns");

    let mut latencies = handoffs(&mine, &theirs);
    latencies.sort_unstable();
    assert!(
        latencies.len() >= CYCLES,
        "most acquisitions were hand-offs: {latencies:?}"
    );
    let median = latencies[latencies.len() / 2];
    println!(
        "{:?}: {} hand-offs between processes, median {median:?}, max {:?}",
        store.kind,
        latencies.len(),
        latencies.last().unwrap()
    );
    assert!(
        median < MEDIAN_BOUND,
        "{:?}: waiters were not woken by the release: {latencies:?}",
        store.kind
    );
}

per_backend!(
    waiters,
    waiters_in_another_process_get_the_lock_within_milliseconds
);
