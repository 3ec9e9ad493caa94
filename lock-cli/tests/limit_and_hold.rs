//! `lockctl run --limit N` (a semaphore: N commands at once, never more, each permit shown by
//! `status`) and `lockctl run --hold-at-least DUR` (the lock outlives a quick command), with
//! real lockctl processes against each store.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use lock_testkit::Backend;
use support::{Sandbox, assert_code, stderr, unique_name, wait_for};

/// A child that logs its start, waits until two children have started (so it only ends
/// if two ran at once), then logs its end. Times in wall-clock ns.
const BOTH_IN: &str = r#"printf 'start %s %s\n' "$(date +%s%N)" "$LOCK_FENCE" >> "$1"
i=0
while [ "$(grep -c '^start' "$1")" -lt 2 ]; do
  i=$((i+1)); [ "$i" -gt 2000 ] && exit 3
  sleep 0.01
done
sleep 0.1
printf 'end %s %s\n' "$(date +%s%N)" "$LOCK_FENCE" >> "$1""#;

/// The most sections of `log` open at once.
fn most_at_once(log: &str) -> usize {
    let mut events: Vec<(u128, i32)> = log
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let at: u128 = words[1].parse().unwrap();
            match words[0] {
                "start" => (at, 1),
                "end" => (at, -1),
                other => panic!("unexpected log line {other:?}"),
            }
        })
        .collect();
    // Ends sort before starts at the same instant: touching sections do not overlap.
    events.sort();
    let (mut open, mut most) = (0, 0);
    for (_, step) in events {
        open += step;
        most = most.max(open);
    }
    usize::try_from(most).unwrap()
}

/// Four `lockctl run --limit 2` of one name: two run at once (each waits for the other), never
/// three, and each gets its own fence.
fn two_at_once_never_three(store: Backend) {
    let sandbox = Sandbox::new();
    let url = sandbox.url(store);
    let name = unique_name("two-at-once");
    let log = sandbox.file("sections.log");
    let runs: Vec<Child> = (0..4)
        .map(|_| {
            sandbox
                .lockctl()
                .args(["run", "--url", &url, "--ttl", "10s", "--limit", "2", &name])
                .args(["--", "sh", "-c", BOTH_IN, "child"])
                .arg(&log)
                .spawn()
                .expect("lockctl starts")
        })
        .collect();
    for run in runs {
        assert_code(&run.wait_with_output().unwrap(), 0);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 8, "four sections: {text}");
    assert_eq!(most_at_once(&text), 2, "sections: {text}");
    let mut fences: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("start"))
        .map(|l| l.split(' ').nth(2).unwrap())
        .collect();
    fences.sort_unstable();
    fences.dedup();
    assert_eq!(fences.len(), 4, "a fence per permit: {text}");
    assert!(support::status_json(&sandbox, &url, Some(&name)).is_empty());
}

/// Holds one permit of `limit` on `name` until the child is killed.
fn hold_permit(sandbox: &Sandbox, url: &str, name: &str, label: &str, limit: &str) -> Child {
    sandbox
        .lockctl()
        .args(["run", "--url", url, "--ttl", "20s", "--limit", limit])
        .args(["--label", label, name, "--", "sleep", "30"])
        .spawn()
        .unwrap()
}

/// Holding lockctl processes, killed when the test ends, also when it fails: none outlives
/// its sandbox.
struct Holders(Vec<Child>);

impl Drop for Holders {
    fn drop(&mut self) {
        for holder in &mut self.0 {
            let _ = holder.kill();
            let _ = holder.wait();
        }
    }
}

/// `status` shows every permit of a full semaphore (limit, role, holder), a third run with
/// `--no-wait` is refused (75), and a run with another limit is a configuration error (78).
fn status_shows_every_permit(store: Backend) {
    let sandbox = Sandbox::new();
    let url = sandbox.url(store);
    let name = unique_name("permits");
    let _holders = Holders(vec![
        hold_permit(&sandbox, &url, &name, "build one", "2"),
        hold_permit(&sandbox, &url, &name, "build two", "2"),
    ]);
    wait_for("both permits held", Duration::from_secs(10), || {
        support::status_json(&sandbox, &url, Some(&name)).len() == 2
    });
    let rows = support::status_json(&sandbox, &url, Some(&name));
    let mut labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    labels.sort_unstable();
    assert_eq!(labels, ["build one", "build two"], "{rows:?}");
    for row in &rows {
        assert_eq!(row["limit"], 2, "{row}");
        assert_eq!(row["role"], "permit", "{row}");
    }
    assert!(
        rows[0]["fence"].as_u64() < rows[1]["fence"].as_u64(),
        "by fence: {rows:?}"
    );

    let table = sandbox.run(&["status", "--url", &url, &name]);
    assert_code(&table, 0);
    let text = support::stdout(&table);
    assert!(text.lines().next().unwrap().contains("LIMIT"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with(&name)).count(),
        2,
        "{text}"
    );

    let third = sandbox.run(&[
        "run",
        "--url",
        &url,
        "--limit",
        "2",
        "--no-wait",
        &name,
        "--",
        "true",
    ]);
    assert_code(&third, 75);
    let other_limit = sandbox.run(&["run", "--url", &url, "--limit", "3", &name, "--", "true"]);
    assert_code(&other_limit, 78);
    let said = stderr(&other_limit);
    assert!(
        said.contains("limit of 2") && said.contains("limit of 3"),
        "{said}"
    );
}

#[test]
fn limit_file() {
    two_at_once_never_three(Backend::File);
}

#[test]
fn limit_sqlite() {
    two_at_once_never_three(Backend::Sqlite);
}

#[test]
fn limit_redis() {
    two_at_once_never_three(Backend::Redis);
}

#[test]
fn status_of_a_semaphore_file() {
    status_shows_every_permit(Backend::File);
}

#[test]
fn status_of_a_semaphore_sqlite() {
    status_shows_every_permit(Backend::Sqlite);
}

#[test]
fn status_of_a_semaphore_redis() {
    status_shows_every_permit(Backend::Redis);
}

#[test]
fn a_bad_limit_is_a_usage_error() {
    let sandbox = Sandbox::new();
    for limit in ["0", "1025", "-1", "many"] {
        let flag = format!("--limit={limit}");
        let output = sandbox.run(&["run", &flag, "job", "--", "true"]);
        assert_code(&output, 64);
        assert!(stderr(&output).contains("--limit"), "{}", stderr(&output));
    }
}

/// A lock's one holder is shown with the role "leader" (for an election on the name, it is
/// the leader) and limit 1.
#[test]
fn a_lock_holder_is_shown_as_the_leader() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("scheduler");
    let _holder = Holders(vec![hold_permit(
        &sandbox,
        &url,
        &name,
        "scheduler on web1",
        "1",
    )]);
    wait_for("the lock held", Duration::from_secs(10), || {
        support::is_held(&sandbox, &url, &name)
    });
    let rows = support::status_json(&sandbox, &url, Some(&name));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["role"], "leader");
    assert_eq!(rows[0]["limit"], 1);
    assert_eq!(rows[0]["label"], "scheduler on web1");
}

/// `--hold-at-least 4s` with a command that ends at once: lockctl exits at once, the lock stays
/// held (another run with `--no-wait` gets 75) until 4 s after it was acquired, and is free a
/// little after (within the TTL's margin of 1 s, plus slack).
fn hold_outlives_the_command(store: Backend) {
    let sandbox = Sandbox::new();
    let url = sandbox.url(store);
    let name = unique_name("min-hold");
    let hold = Duration::from_secs(4);
    let start = Instant::now();
    let quick = sandbox.run(&[
        "run",
        "--url",
        &url,
        "--ttl",
        "10s",
        "--hold-at-least",
        "4s",
        &name,
        "--",
        "true",
    ]);
    let exited = Instant::now();
    assert_code(&quick, 0);
    assert!(
        exited - start < hold,
        "lockctl waited for the hold: {:?}",
        exited - start
    );
    assert!(
        support::is_held(&sandbox, &url, &name),
        "free after the command"
    );
    let probe = sandbox.run(&["run", "--url", &url, "--no-wait", &name, "--", "true"]);
    let probed = start.elapsed();
    assert!(
        probed < hold,
        "the probe took until {probed:?}, past the hold"
    );
    assert_code(&probe, 75);
    wait_for(
        "the lock to be freed",
        hold + Duration::from_secs(3),
        || !support::is_held(&sandbox, &url, &name),
    );
    let freed = start.elapsed();
    assert!(
        freed >= hold,
        "freed after {freed:?}, before the hold of {hold:?} ended"
    );
    let after = sandbox.run(&["run", "--url", &url, "--no-wait", &name, "--", "true"]);
    assert_code(&after, 0);
}

#[test]
fn hold_at_least_sqlite() {
    hold_outlives_the_command(Backend::Sqlite);
}

#[test]
fn hold_at_least_file() {
    hold_outlives_the_command(Backend::File);
}

#[test]
fn hold_at_least_redis() {
    hold_outlives_the_command(Backend::Redis);
}
