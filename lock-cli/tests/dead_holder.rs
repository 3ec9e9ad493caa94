//! A `lockctl run` that dies (SIGKILL) while holding a lock on a single-host store (SQLite
//! through both drivers, a lock directory): a `lockctl run` waiting for the lock runs its
//! command at once, with a higher `LOCK_FENCE`, although the dead holder's TTL is 30 s; and
//! only once the dead holder's whole job is gone.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use lock_testkit::Backend;
use support::{Sandbox, StderrLines, assert_code, is_held, status_json, stdout, unique_name};

/// Far below the holder's 30 s TTL, with room for a loaded machine running the suite.
const BOUND: Duration = Duration::from_secs(3);

/// The waiter's command: its fence, and whether the dead holder's command (pid `$1`, a
/// `sleep`, whose name has no spaces) is still alive: a zombie, or no process, is gone.
const REPORT: &str = r#"state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)
case "$state" in ''|Z|X) echo "$LOCK_FENCE gone" ;; *) echo "$LOCK_FENCE alive $state" ;; esac"#;

fn a_killed_lockctl_run_hands_over_at_once(kind: Backend) {
    let sandbox = Sandbox::new();
    let url = sandbox.url(kind);
    let name = unique_name("dead-holder");
    let pid_file = sandbox.file("holder.pid");
    let mut holder = sandbox
        .lockctl()
        .args(["run", "--url", &url, "--ttl", "30s", &name, "--"])
        .args(["sh", "-c", r#"echo $$ > "$1"; exec sleep 60"#, "holder"])
        .arg(&pid_file)
        .stderr(Stdio::null())
        .spawn()
        .expect("lockctl starts");
    let command = support::read_pid_file(&pid_file);
    assert!(is_held(&sandbox, &url, &name));
    let holder_fence = status_json(&sandbox, &url, Some(&name))[0]["fence"]
        .as_u64()
        .expect("a fence");

    let mut waiter = sandbox
        .lockctl()
        .args(["-v", "run", "--url", &url, "--wait", "20s", &name, "--"])
        .args(["sh", "-c", REPORT, "report", &command.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lockctl starts");
    let mut stderr = StderrLines::of(&mut waiter);
    stderr.wait_for("waiting for it", Duration::from_secs(10));

    holder.kill().unwrap(); // SIGKILL
    let killed_at = Instant::now();
    holder.wait().unwrap();
    let output = waiter.wait_with_output().unwrap();
    let took = killed_at.elapsed();
    assert_code(&output, 0);
    let said = stdout(&output);
    let mut words = said.split_whitespace();
    let fence: u64 = words.next().and_then(|f| f.parse().ok()).expect("a fence");
    assert!(fence > holder_fence, "fence {fence} after {holder_fence}");
    assert_eq!(
        words.next(),
        Some("gone"),
        "the dead holder's command still ran when the next one started"
    );
    assert!(
        took < BOUND,
        "the waiter ran {took:?} after the holder was killed (TTL 30 s)"
    );
    eprintln!("{kind}: the waiter's command ran {took:?} after the kill");
}

#[test]
fn sqlite() {
    a_killed_lockctl_run_hands_over_at_once(Backend::Sqlite);
}

#[test]
fn sqlite_sqlx() {
    a_killed_lockctl_run_hands_over_at_once(Backend::SqliteSqlx);
}

#[test]
fn file() {
    a_killed_lockctl_run_hands_over_at_once(Backend::File);
}
