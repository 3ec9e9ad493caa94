//! Hand-off between processes: when one process releases a lock another process is waiting
//! for, the waiter gets it within milliseconds, on every backend. Redis tells waiters by
//! pub/sub; the lock directory and SQLite have waiters look at the lease every 1-2 ms.
//!
//! This test binary runs itself as the second process. Both take the lock in turns, each
//! holding it long enough that the other is deep in its wait (where backoff alone would
//! sleep tens of milliseconds between attempts) before it is released. Both record their
//! acquisitions and releases in a shared history file, and after releasing, a process asks
//! again only once the history shows that the other process took the lock. So the turns
//! alternate whatever the scheduling, and every acquisition after a process's first is a
//! hand-off to a process that asked while the other held the lock.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use leaselock::{LockOptions, Locker};
use lock_testkit::Backend;
use lock_testkit::history::{self, Event, Record, Recorder, assert_history, monotonic_nanos};
use support::Store;

/// Set in the child process: the store URL, the lock name, and the shared history file.
const CHILD_URL: &str = "LOCK_TESTS_HANDOFF_URL";
const CHILD_NAME: &str = "LOCK_TESTS_HANDOFF_NAME";
const CHILD_HISTORY: &str = "LOCK_TESTS_HANDOFF_HISTORY";
/// Acquisitions per process.
const CYCLES: usize = 6;
/// How long each holder keeps the lock: the waiter's backoff has grown to 32-64 ms by then.
const HOLD: Duration = Duration::from_millis(150);
/// How long a process that released waits for the other one (which asked for the lock
/// while it was held) to take it, before the test fails: far more than any hand-off takes.
const OTHER_PATIENCE: Duration = Duration::from_secs(30);
/// How often a process that released looks at the history for the other one's turn.
const LOOK_EVERY: Duration = Duration::from_millis(1);
/// The median hand-off must be under this (polling every 1-2 ms gives ~2 ms; backoff alone
/// gave ~40 ms at this hold time).
const MEDIAN_BOUND: Duration = Duration::from_millis(12);

/// Takes the lock `CYCLES` times as `me`, recording each turn in `history`; after each
/// release but the last, waits for the other process's next turn before asking again.
async fn take_turns(url: &str, name: &str, history: &Path, me: &str) {
    let locker = Locker::new(leaselock::connect(url).await.expect("connect"));
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(30))
        .with_wait(Duration::from_secs(30))
        .with_label("handoff");
    let mut recorder = Recorder::open(history, me).expect("open the history");
    for cycle in 1..=CYCLES {
        let guard = locker.lock(name, &opts).await.expect("lock");
        recorder
            .record(name, guard.fence(), Event::Start)
            .expect("record the acquisition");
        tokio::time::sleep(HOLD).await;
        let released = monotonic_nanos();
        recorder
            .record_at(name, guard.fence(), Event::End, released)
            .expect("record the release");
        assert!(guard.release().await.expect("release"));
        if cycle < CYCLES {
            wait_for_the_others_turn(history, me, released).await;
        }
    }
}

/// Waits until `history` shows an acquisition by another process after `since`: the other
/// process always has a turn left here, and is waiting for the lock or about to ask for it.
async fn wait_for_the_others_turn(history: &Path, me: &str, since: u64) {
    let deadline = tokio::time::Instant::now() + OTHER_PATIENCE;
    loop {
        // A line being appended may be read half-written; it is whole at the next look.
        if let Ok(records) = history::read(history)
            && records
                .iter()
                .any(|r| r.event == Event::Start && r.holder != me && r.at > since)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{me}: the other process did not take the lock within {OTHER_PATIENCE:?} of this \
             one's release"
        );
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// For every acquisition that was a hand-off (a process's second or later, which follows
/// the other process's release): the time between that release and the acquisition. A
/// process's first acquisition is not one: the other may have released before it asked.
fn handoffs(records: &[Record]) -> Vec<Duration> {
    let mut events: Vec<&Record> = records.iter().collect();
    events.sort_unstable_by_key(|r| r.at);
    let mut started = std::collections::HashSet::new();
    let mut last_release: Option<&Record> = None;
    let mut out = Vec::new();
    for record in events {
        match record.event {
            Event::End => last_release = Some(record),
            Event::Start => {
                let first = started.insert(record.holder.as_str());
                if let Some(released) = last_release.take()
                    && !first
                    && released.holder != record.holder
                {
                    out.push(Duration::from_nanos(record.at - released.at));
                }
            }
            Event::Work => {}
        }
    }
    out
}

async fn waiters_in_another_process_get_the_lock_within_milliseconds(store: Store) {
    let orders = (
        std::env::var(CHILD_URL),
        std::env::var(CHILD_NAME),
        std::env::var_os(CHILD_HISTORY),
    );
    match orders {
        (Ok(url), Ok(name), Some(history)) => {
            take_turns(&url, &name, Path::new(&history), "child").await;
        }
        _ => take_turns_with_a_second_process(store).await,
    }
}

/// Starts this test again as the second process, takes turns with it, and measures the
/// hand-offs from the shared history.
async fn take_turns_with_a_second_process(store: Store) {
    let name = store.name("handoff");
    let history = store.history();
    // The test per_backend! made for this backend.
    let test = format!("waiters::{}", store.kind.ident());
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_URL, &store.url)
        .env(CHILD_NAME, &name)
        .env(CHILD_HISTORY, &history);
    if store.kind == Backend::Redis {
        // The child builds a store before it reads its orders: make its Redis store this
        // one's server instead of a private server of its own.
        child.env(lock_testkit::redis::URL_ENV, &store.url);
    }
    if matches!(store.kind, Backend::Postgres | Backend::PostgresPgbouncer) {
        // Likewise: the parent's PostgreSQL server (and pooler), not private ones.
        child.env(
            lock_testkit::postgres::URL_ENV,
            lock_testkit::postgres::shared().url(),
        );
        if store.kind == Backend::PostgresPgbouncer {
            child.env(
                lock_testkit::postgres::BOUNCER_URL_ENV,
                lock_testkit::postgres::shared_bouncer().url(),
            );
        }
    }
    let child = child
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the second process");
    take_turns(&store.url, &name, &history, "parent").await;
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the second process failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    // The turns never overlapped, and both processes had all of theirs.
    let summary = assert_history(&history);
    assert_eq!(summary.sections, 2 * CYCLES, "{summary:?}");
    let mut latencies = handoffs(&history::read(&history).unwrap());
    latencies.sort_unstable();
    // The turns alternate: every acquisition but each process's first is a hand-off.
    assert_eq!(
        latencies.len(),
        2 * CYCLES - 2,
        "every acquisition after a process's first was a hand-off: {latencies:?}"
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
