//! Every documented exit status of `lockctl run`, produced by a real process.

mod support;

use std::time::{Duration, Instant};

use std::process::Stdio;

use lock_testkit::Backend;
use support::{Sandbox, StderrLines, assert_code, stderr, unique_name};

/// Holds `name` in the background with `lockctl run ... sleep`, until the returned child
/// is killed; returns once the lock is held.
fn hold(sandbox: &Sandbox, url: &str, name: &str) -> std::process::Child {
    let child = sandbox
        .lockctl()
        .args(["run", "--url", url, "--label", "the holder", name, "--"])
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    support::wait_for(
        "the holder to take the lock",
        Duration::from_secs(10),
        || support::is_held(sandbox, url, name),
    );
    child
}

fn stop(mut holder: std::process::Child) {
    // SIGTERM is forwarded to `sleep`, after which lockctl releases and exits.
    support::signal(holder.id(), libc::SIGTERM);
    let status = holder.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn the_commands_own_status_is_passed_through() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let output = sandbox.run(&["run", "--url", &url, "job", "--", "sh", "-c", "exit 3"]);
    assert_code(&output, 3);
    let output = sandbox.run(&["run", "--url", &url, "job", "--", "true"]);
    assert_code(&output, 0);
}

#[test]
fn a_command_killed_by_a_signal_gives_128_plus_the_signal() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let output = sandbox.run(&["run", "--url", &url, "job", "--", "sh", "-c", "kill -9 $$"]);
    assert_code(&output, 128 + 9);
    assert!(
        !support::is_held(&sandbox, &url, "job"),
        "released afterwards"
    );
}

#[test]
fn not_acquired_with_no_wait_is_75_and_names_the_holder() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::File);
    let name = unique_name("held");
    let holder = hold(&sandbox, &url, &name);
    let output = sandbox.run(&["run", "--url", &url, "--no-wait", &name, "--", "true"]);
    assert_code(&output, 75);
    let message = stderr(&output);
    assert!(
        message.contains("--no-wait") && message.contains("the holder"),
        "{message}"
    );
    stop(holder);
}

#[test]
fn not_acquired_within_wait_is_75_after_about_the_wait() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("held");
    let holder = hold(&sandbox, &url, &name);
    let start = Instant::now();
    let output = sandbox.run(&["run", "--url", &url, "--wait", "300ms", &name, "--", "true"]);
    let took = start.elapsed();
    assert_code(&output, 75);
    assert!(
        stderr(&output).contains("--wait 300ms"),
        "{}",
        stderr(&output)
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "gave up after {took:?}"
    );
    stop(holder);
}

#[test]
fn a_waiting_run_says_once_whom_it_waits_for_unless_quiet() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::File);
    let name = unique_name("held");
    let holder = hold(&sandbox, &url, &name);

    let output = sandbox.run(&["run", "--url", &url, "--wait", "200ms", &name, "--", "true"]);
    assert_code(&output, 75);
    let message = stderr(&output);
    let lines: Vec<&str> = message.trim().lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "the waiting line, then why it gave up: {message}"
    );
    let held_by = format!(
        "lockctl: lock \"{name}\" is held by \"the holder\" (pid {}",
        holder.id()
    );
    assert!(lines[0].starts_with(&held_by), "{message}");
    assert!(
        lines[0].ends_with(" left); waiting for it (at most 200ms)"),
        "{message}"
    );

    let quiet = sandbox.run(&[
        "run", "--url", &url, "--wait", "200ms", "--quiet", &name, "--", "true",
    ]);
    assert_code(&quiet, 75);
    let message = stderr(&quiet);
    assert_eq!(
        message.trim().lines().count(),
        1,
        "only the error: {message}"
    );
    assert!(message.contains("--wait 200ms"), "{message}");
    stop(holder);
}

#[test]
fn a_run_whose_stderr_nobody_reads_still_waits_for_the_lock() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("held");
    let holder = hold(&sandbox, &url, &name);
    // Its waiting line, then its not-acquired error, go into a pipe whose reader is gone
    // (`2>&1 | head -1` after head exited): lockctl must wait out --wait and report 75, not
    // die of the first write (Rust's eprintln! panics there: 101).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let start = Instant::now();
    let status = sandbox
        .lockctl()
        .args(["run", "--url", &url, "--wait", "300ms", &name, "--", "true"])
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(75), "{status}");
    assert!(start.elapsed() >= Duration::from_millis(300), "it waited");
    stop(holder);
}

#[test]
fn a_dead_store_is_69_within_seconds() {
    let sandbox = Sandbox::new();
    let dead = format!("redis://127.0.0.1:{}", lock_testkit::process::free_port());
    let start = Instant::now();
    let output = sandbox.run(&["run", "--url", &dead, "job", "--", "true"]);
    assert_code(&output, 69);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    let message = stderr(&output);
    assert!(message.contains("unavailable"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
}

#[test]
fn bad_configuration_is_78_with_one_readable_line() {
    let sandbox = Sandbox::new();
    for (args, expect) in [
        (
            vec!["run", "--url", "mysql://x/y", "job", "--", "true"],
            "sqlite://",
        ),
        (
            vec!["run", "--url", "sqlite://", "job", "--", "true"],
            "sqlite:///",
        ),
        (vec!["run", "--ttl", "1ms", "job", "--", "true"], "TTL"),
        (vec!["run", "", "--", "true"], "invalid lock name"),
        (vec!["release", "job"], "--force"),
    ] {
        let output = sandbox.run(&args);
        assert_code(&output, 78);
        let message = stderr(&output);
        assert!(message.starts_with("lockctl: "), "{args:?}: {message}");
        assert!(message.contains(expect), "{args:?}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "{args:?}: {message}");
        assert!(!message.contains("{ "), "no debug dumps: {message}");
    }
}

#[test]
fn bad_arguments_are_64() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["run", "--ttl", "soon", "job", "--", "true"]);
    assert_code(&output, 64);
    assert!(
        stderr(&output).contains("examples: 500ms"),
        "{}",
        stderr(&output)
    );
    let output = sandbox.run(&["run", "job"]);
    assert_code(&output, 64);
}

#[test]
fn a_command_not_found_is_127_and_not_executable_is_126() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let output = sandbox.run(&["run", "--url", &url, "job", "--", "/no/such/command"]);
    assert_code(&output, 127);
    let plain = sandbox.file("not-executable");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let output = sandbox.run(&["run", "--url", &url, "job", "--", plain.to_str().unwrap()]);
    assert_code(&output, 126);
    assert!(
        !support::is_held(&sandbox, &url, "job"),
        "released after a failed start"
    );
}

#[test]
fn a_grace_over_half_the_ttl_is_78_and_says_what_to_pass() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let output = sandbox.run(&[
        "run", "--url", &url, "--ttl", "2s", "--grace", "1500ms", "job", "--", "true",
    ]);
    assert_code(&output, 78);
    let message = stderr(&output);
    assert!(
        message.contains("--grace 1s or less") && message.contains("--ttl 3s or more"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    // Up to half the TTL is fine.
    let output = sandbox.run(&[
        "run", "--url", &url, "--ttl", "2s", "--grace", "1s", "job", "--", "true",
    ]);
    assert_code(&output, 0);
}

#[test]
fn bad_options_are_78_before_the_store_is_touched() {
    let sandbox = Sandbox::new();
    let dead = format!("redis://127.0.0.1:{}", lock_testkit::process::free_port());
    for (args, expect) in [
        (
            vec!["run", "--url", &dead, "--ttl", "1ms", "job", "--", "true"],
            "TTL",
        ),
        (
            vec!["run", "--url", &dead, "--grace", "20s", "job", "--", "true"],
            "--grace",
        ),
        (vec!["run", "--ttl", "1ms", "job", "--", "true"], "TTL"),
        (vec!["run", "--grace", "1h", "job", "--", "true"], "--grace"),
    ] {
        let start = Instant::now();
        let output = sandbox.run(&args);
        assert_code(&output, 78);
        assert!(
            stderr(&output).contains(expect),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{args:?}: no connection attempt, took {:?}",
            start.elapsed()
        );
    }
    let state = sandbox.path().join("state");
    assert!(
        !state.join("lockctl").join("locks.db").exists() && !state.exists(),
        "the default store was not created"
    );
}

#[test]
fn a_signal_while_waiting_for_the_lock_is_128_plus_the_signal() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("held");
    let holder = hold(&sandbox, &url, &name);
    let mut waiter = sandbox
        .lockctl()
        .args(["-v", "run", "--url", &url, &name, "--", "true"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = StderrLines::of(&mut waiter);
    lines.wait_for("waiting for it", Duration::from_secs(10));
    support::signal(waiter.id(), libc::SIGTERM);
    let status = waiter.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    let text = lines.all();
    assert!(
        text.contains("SIGTERM while waiting for lock") && text.contains("not running the command"),
        "{text}"
    );
    stop(holder);
}
