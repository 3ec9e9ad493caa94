//! `lockctl status` (table and JSON), `lockctl release --force`, the zero-setup default
//! store, and `--verbose`.

mod support;

use std::time::Duration;

use lock_testkit::Backend;
use support::{Sandbox, assert_code, stderr, stdout, unique_name, wait_for};

/// Holds `name` with `lockctl run --label LABEL ... sleep 30` until the child is stopped.
fn hold(sandbox: &Sandbox, url: &str, name: &str, label: &str) -> std::process::Child {
    let child = sandbox
        .lockctl()
        .args(["run", "--url", url, "--ttl", "20s", "--label", label, name])
        .args(["--", "sleep", "30"])
        .spawn()
        .unwrap();
    wait_for("the lock to be held", Duration::from_secs(10), || {
        support::is_held(sandbox, url, name)
    });
    child
}

fn stop(mut holder: std::process::Child) {
    holder.kill().unwrap();
    holder.wait().unwrap();
}

fn status_shows_holders(store: Backend) {
    let sandbox = Sandbox::new();
    let url = sandbox.url(store);
    let (a, b) = (unique_name("alpha"), unique_name("beta"));
    let holder_a = hold(&sandbox, &url, &a, "nightly report");
    let holder_b = hold(&sandbox, &url, &b, "backup");

    let all = support::status_json(&sandbox, &url, None);
    let mine: Vec<_> = all
        .iter()
        .filter(|l| l["name"] == a.as_str() || l["name"] == b.as_str())
        .collect();
    assert_eq!(mine.len(), 2, "{all:?}");
    let one = support::status_json(&sandbox, &url, Some(&a));
    assert_eq!(one.len(), 1);
    let lease = &one[0];
    assert_eq!(lease["name"], a.as_str());
    assert_eq!(lease["label"], "nightly report");
    assert_eq!(
        lease["pid"],
        holder_a.id(),
        "the holder is the lockctl process"
    );
    assert_eq!(lease["host"], lock_core::backend_kit::host_name().as_str());
    assert!(lease["fence"].as_u64().is_some_and(|f| f > 0), "{lease}");
    let left = lease["time_left_ms"].as_u64().unwrap();
    assert!(
        left > 5_000 && left <= 20_000,
        "time left {left} ms of a 20 s TTL"
    );
    assert!(lease["expires_at_ms"].as_u64() > lease["acquired_at_ms"].as_u64());

    let table = sandbox.run(&["status", "--url", &url]);
    assert_code(&table, 0);
    let text = stdout(&table);
    let header = text.lines().next().unwrap();
    for column in ["NAME", "HOLDER", "PID", "HOST", "FENCE", "TIME LEFT"] {
        assert!(header.contains(column), "{text}");
    }
    let row = text
        .lines()
        .find(|l| l.starts_with(&a))
        .expect("a row for the lock");
    assert!(
        row.contains("nightly report") && row.contains(&holder_a.id().to_string()),
        "{row}"
    );

    stop(holder_a);
    stop(holder_b);
}

#[test]
fn status_sqlite() {
    status_shows_holders(Backend::Sqlite);
}

#[test]
fn status_file() {
    status_shows_holders(Backend::File);
}

#[test]
fn status_redis() {
    status_shows_holders(Backend::Redis);
}

#[test]
fn status_postgres() {
    status_shows_holders(Backend::Postgres);
}

#[test]
fn status_postgres_pgbouncer() {
    status_shows_holders(Backend::PostgresPgbouncer);
}

#[test]
fn status_of_a_free_lock_says_so() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let output = sandbox.run(&["status", "--url", &url, "nothing-here"]);
    assert_code(&output, 0);
    assert_eq!(stdout(&output).trim(), "lock \"nothing-here\" is free");
    assert!(support::status_json(&sandbox, &url, Some("nothing-here")).is_empty());
}

#[test]
fn force_release_frees_the_lock_and_the_next_fence_is_higher() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::File);
    let name = unique_name("stuck");
    let holder = hold(&sandbox, &url, &name, "stuck job");
    let before = support::status_json(&sandbox, &url, Some(&name))[0]["fence"]
        .as_u64()
        .unwrap();
    let output = sandbox.run(&["release", "--force", "--url", &url, &name]);
    assert_code(&output, 0);
    assert!(stdout(&output).contains("stuck job"), "{}", stdout(&output));
    assert!(!support::is_held(&sandbox, &url, &name));
    let output = sandbox.run(&["release", "--force", "--url", &url, &name]);
    assert_code(&output, 0);
    assert!(
        stdout(&output).contains("was not held"),
        "{}",
        stdout(&output)
    );

    let output = sandbox.run(&[
        "run",
        "--url",
        &url,
        &name,
        "--",
        "sh",
        "-c",
        "echo $LOCK_FENCE",
    ]);
    assert_code(&output, 0);
    let after: u64 = stdout(&output).trim().parse().unwrap();
    assert!(after > before, "fence {after} after {before}");
    stop(holder);
}

#[test]
fn with_no_url_lockctl_uses_sqlite_in_the_state_directory() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["run", "zero-setup", "--", "sh", "-c", "echo $LOCK_URL"]);
    assert_code(&output, 0);
    let db = sandbox
        .path()
        .join("state")
        .join("lockctl")
        .join("locks.db");
    assert!(db.is_file(), "created {}", db.display());
    assert_eq!(stdout(&output).trim(), format!("sqlite://{}", db.display()));
    // LOCK_URL is honoured too.
    let other = sandbox.url(Backend::File);
    let output = sandbox
        .lockctl()
        .env("LOCK_URL", &other)
        .args(["run", "env-url", "--", "sh", "-c", "echo $LOCK_URL"])
        .output()
        .unwrap();
    assert_code(&output, 0);
    assert_eq!(stdout(&output).trim(), other);
}

#[test]
fn verbose_turns_on_tracing_output() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let quiet = sandbox.run(&["run", "--url", &url, "job", "--", "true"]);
    assert_code(&quiet, 0);
    assert_eq!(stderr(&quiet), "", "quiet by default");
    let loud = sandbox.run(&["-v", "run", "--url", &url, "job", "--", "true"]);
    assert_code(&loud, 0);
    assert!(stderr(&loud).contains("acquired"), "{}", stderr(&loud));
}

#[test]
fn status_into_a_pipe_nobody_reads_ends_quietly_with_141() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::File);
    let name = unique_name("piped");
    let holder = hold(&sandbox, &url, &name, "piped");
    // `lockctl status | head -1` once head has exited: the reader is gone before the write.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = sandbox
        .lockctl()
        .args(["status", "--url", &url])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(128 + libc::SIGPIPE),
        "stderr: {}",
        stderr(&output)
    );
    assert_eq!(stderr(&output), "", "no panic, no message");
    stop(holder);
}
