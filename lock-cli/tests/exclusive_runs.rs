//! Eight `lockctl run` processes of one name never overlap, and `LOCK_FENCE` strictly
//! increases in the order they acquired the lock, on every backend.

mod support;

use std::process::Child;

use lock_testkit::Backend;
use support::{Sandbox, assert_code, unique_name};

const RUNS: usize = 8;

/// A child that logs its start and end (wall clock ns; one write each, appended), with the
/// environment lockctl gave it.
const CHILD: &str = r#"printf 'start %s %s %s %s\n' "$(date +%s%N)" "$LOCK_FENCE" "$LOCK_NAME" "$LOCK_OWNER" >> "$1"
sleep 0.05
printf 'end %s %s\n' "$(date +%s%N)" "$LOCK_FENCE" >> "$1""#;

#[derive(Debug)]
struct Section {
    start: u128,
    end: u128,
    fence: u64,
    name: String,
    owner: String,
}

fn sections(log: &str) -> Vec<Section> {
    let mut open = std::collections::HashMap::new();
    let mut done = Vec::new();
    for line in log.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["start", at, fence, name, owner] => {
                let fence: u64 = fence.parse().expect("LOCK_FENCE is a number");
                open.insert(fence, (at.parse::<u128>().unwrap(), *name, *owner));
            }
            ["end", at, fence] => {
                let fence: u64 = fence.parse().unwrap();
                let (start, name, owner) = open.remove(&fence).expect("end after start");
                done.push(Section {
                    start,
                    end: at.parse().unwrap(),
                    fence,
                    name: name.to_owned(),
                    owner: owner.to_owned(),
                });
            }
            _ => panic!("unexpected log line {line:?}"),
        }
    }
    assert!(open.is_empty(), "sections that never ended: {open:?}");
    done.sort_by_key(|s| s.start);
    done
}

fn eight_runs_never_overlap(store: Backend) {
    let sandbox = Sandbox::new();
    let url = sandbox.url(store);
    let name = unique_name("exclusive");
    let log = sandbox.file("sections.log");
    let runs: Vec<Child> = (0..RUNS)
        .map(|_| {
            sandbox
                .lockctl()
                .args(["run", "--url", &url, "--ttl", "10s", &name, "--"])
                .args(["sh", "-c", CHILD, "child"])
                .arg(&log)
                .spawn()
                .expect("lockctl starts")
        })
        .collect();
    for run in runs {
        let output = run.wait_with_output().unwrap();
        assert_code(&output, 0);
    }

    let sections = sections(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(sections.len(), RUNS, "every run ran its command once");
    for pair in sections.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b.start >= a.end,
            "overlap: fence {} ran {}..{} and fence {} started at {}",
            a.fence,
            a.start,
            a.end,
            b.fence,
            b.start
        );
        assert!(
            b.fence > a.fence,
            "fences out of acquisition order: {} then {}",
            a.fence,
            b.fence
        );
    }
    let mut owners: Vec<&str> = sections.iter().map(|s| s.owner.as_str()).collect();
    for s in &sections {
        assert_eq!(s.name, name, "LOCK_NAME");
        assert!(
            s.owner.len() == 32 && s.owner.chars().all(|c| c.is_ascii_hexdigit()),
            "LOCK_OWNER is the 128-bit owner token in hex: {:?}",
            s.owner
        );
    }
    owners.sort_unstable();
    owners.dedup();
    assert_eq!(owners.len(), RUNS, "every run has its own owner token");
    let free = support::status_json(&sandbox, &url, Some(&name));
    assert!(free.is_empty(), "released after the last run: {free:?}");
}

#[test]
fn file() {
    eight_runs_never_overlap(Backend::File);
}

#[test]
fn sqlite() {
    eight_runs_never_overlap(Backend::Sqlite);
}

#[test]
fn sqlite_sqlx() {
    eight_runs_never_overlap(Backend::SqliteSqlx);
}

#[test]
fn redis() {
    eight_runs_never_overlap(Backend::Redis);
}

#[test]
fn postgres() {
    eight_runs_never_overlap(Backend::Postgres);
}

#[test]
fn postgres_pgbouncer() {
    eight_runs_never_overlap(Backend::PostgresPgbouncer);
}
