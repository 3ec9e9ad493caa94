//! `lockctl conformance --url` against every kind of store, and against one that is down.

mod support;

use std::time::{Duration, Instant};

use support::{Sandbox, Store, assert_code, stderr, stdout};

fn passes_against(store: Store) {
    let sandbox = Sandbox::new();
    let url = sandbox.url(store);
    let output = sandbox.run(&["conformance", "--url", &url, "--jobs", "8"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    let cases = lock_conformance::CASES.len();
    assert!(
        text.contains(&format!("{cases} passed, 0 failed")),
        "summary missing:\n{text}"
    );
    let progress = text.lines().filter(|l| l.contains("] ok ")).count();
    assert_eq!(progress, cases, "one progress line per case:\n{text}");
}

#[test]
fn file() {
    passes_against(Store::File);
}

#[test]
fn sqlite() {
    passes_against(Store::Sqlite);
}

#[test]
fn sqlite_sqlx() {
    passes_against(Store::SqliteSqlx);
}

#[test]
fn redis() {
    passes_against(Store::Redis);
}

#[test]
fn a_dead_redis_fails_at_once_with_one_clear_line() {
    let sandbox = Sandbox::new();
    let dead = format!(
        "redis://127.0.0.1:{}",
        lock_redis::test_support::free_port()
    );
    let start = Instant::now();
    let output = sandbox.run(&["conformance", "--url", &dead]);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_code(&output, 69);
    let message = stderr(&output);
    assert!(
        message.starts_with("lockctl: redis lock store is unavailable"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");
}

#[test]
fn a_filter_that_matches_nothing_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Store::Sqlite);
    let output = sandbox.run(&["conformance", "--url", &url, "--filter", "no-such-case"]);
    assert_code(&output, 78);
    assert!(stderr(&output).contains("--filter"), "{}", stderr(&output));
}
