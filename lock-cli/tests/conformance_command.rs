//! `lockctl conformance --url` against every kind of store, and against one that is down;
//! it leaves other holders' locks in the store alone, and a store that dies mid-run fails
//! the run with a summary and exit code 1.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use leaselock::{Holder, Lease, LockBackend, LockName};
use lock_testkit::Backend;
use lock_testkit::redis::RedisServer;
use support::{Sandbox, assert_code, stderr, stdout};

/// Longer than any conformance run, so a bystander's lease cannot expire during one.
const BYSTANDER_TTL: Duration = Duration::from_secs(600);
/// How far two inspections of an untouched lease may disagree on its times: a store that
/// reports an expiry as its clock plus the remaining milliseconds (Redis before 7.0, which
/// has no PEXPIRETIME) rounds each reading to a millisecond.
const ROUNDING: Duration = Duration::from_millis(2);

/// Locks held by someone else in the store the suite runs against.
struct Bystanders {
    backend: Arc<dyn LockBackend>,
    /// Each lease with the store's view of it before the run.
    held: Vec<(Lease, leaselock::LeaseInfo)>,
}

impl Bystanders {
    /// Holds names a careless suite would touch: the suite's own case names without its
    /// prefix, and the prefix's stem.
    async fn hold(url: &str) -> Self {
        let backend = leaselock::connect(url).await.unwrap();
        let me = Holder::current("bystander");
        let mut held = Vec::new();
        for text in ["lifecycle", "force", "lockctl-conformance-", "list/a"] {
            let name = LockName::new(text).unwrap();
            let lease = backend
                .try_acquire(&name, &me, BYSTANDER_TTL)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{text:?} is free in a fresh store"));
            let info = backend
                .inspect(&name)
                .await
                .unwrap()
                .expect("just acquired");
            held.push((lease, info));
        }
        Self { backend, held }
    }

    /// Asserts each lease is still live, with the same holder, fence, acquisition time and
    /// expiry (nobody renewed, released or took it over), and that our token still owns it.
    async fn assert_untouched_and_release(self) {
        for (lease, before) in self.held {
            let after = self
                .backend
                .inspect(&lease.name)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{}: the conformance run freed it", lease.name));
            assert_eq!(
                (&after.label, after.pid, &after.host, after.fence),
                (&before.label, before.pid, &before.host, before.fence),
                "{}: holder or fence changed",
                lease.name
            );
            let moved = |a: SystemTime, b: SystemTime| {
                a.duration_since(b)
                    .or_else(|_| b.duration_since(a))
                    .unwrap_or_default()
            };
            assert!(
                moved(after.acquired_at, before.acquired_at) <= ROUNDING
                    && moved(after.expires_at, before.expires_at) <= ROUNDING,
                "{}: acquired or renewed by someone: {before:?} then {after:?}",
                lease.name
            );
            assert!(
                after.expires_at > SystemTime::now(),
                "{}: still live",
                lease.name
            );
            assert!(
                self.backend.release(&lease).await.unwrap(),
                "{}: our token still owns it",
                lease.name
            );
        }
    }
}

/// Runs the whole suite against a fresh store of `kind` in which someone else holds
/// locks; every case passes and those locks are untouched.
fn passes_against(kind: Backend) {
    let sandbox = Sandbox::new();
    let url = sandbox.url(kind);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bystanders = runtime.block_on(Bystanders::hold(&url));
    let output = sandbox.run(&["conformance", "--url", &url, "--jobs", "8"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    let cases = lock_conformance::CASES.len();
    // A live store has no write-loss hook: those cases are reported, not passed.
    let not_applicable = lock_conformance::NEEDS_WRITE_LOSS.len();
    let ran = cases - not_applicable;
    assert!(
        text.contains(&format!(
            "{ran} passed, 0 failed, {not_applicable} not applicable"
        )),
        "summary missing:\n{text}"
    );
    let progress = text.lines().filter(|l| l.contains("] ok ")).count();
    assert_eq!(progress, ran, "one progress line per case:\n{text}");
    let skipped = text.lines().filter(|l| l.contains("] n/a ")).count();
    assert_eq!(
        skipped, not_applicable,
        "one progress line per case:\n{text}"
    );
    runtime.block_on(bystanders.assert_untouched_and_release());
}

#[test]
fn file() {
    passes_against(Backend::File);
}

#[test]
fn sqlite() {
    passes_against(Backend::Sqlite);
}

#[test]
fn sqlite_sqlx() {
    passes_against(Backend::SqliteSqlx);
}

#[test]
fn redis() {
    passes_against(Backend::Redis);
}

#[test]
fn postgres() {
    passes_against(Backend::Postgres);
}

#[test]
fn postgres_pgbouncer() {
    passes_against(Backend::PostgresPgbouncer);
}

/// The cases the failing run below selects: every case about leases and releases (about
/// half the suite, several of which wait out a TTL), run one at a time, so that seconds of
/// cases remain when the store dies after the first one passed. It leaves out
/// `increments_under_the_lock_are_exact`, whose `lock()` calls retry a dead store for their
/// whole 120 s wait.
const FAILING_RUN_FILTER: &str = "lease";

/// A private Redis server killed once the first case has passed: the cases still to come
/// fail, each is reported with its name, the run ends with a `N passed, M failed` line
/// counting every case, and lockctl exits 1.
#[test]
fn a_store_that_dies_mid_run_fails_the_run_with_a_summary_and_exit_1() {
    let cases = lock_conformance::CASES
        .iter()
        .filter(|c| c.name.contains(FAILING_RUN_FILTER))
        .count();
    assert!(cases >= 8, "the filter selects {cases} cases");
    let mut server = RedisServer::start();
    let sandbox = Sandbox::new();
    let mut child = sandbox
        .lockctl()
        .args(["conformance", "--url", &server.url()])
        .args(["--filter", FAILING_RUN_FILTER, "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lockctl starts");
    let (lines_tx, lines) = mpsc::channel();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let stdout_thread = std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Drained as it comes, so a chatty lockctl never blocks on a full pipe.
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_thread = std::thread::spawn(move || {
        let mut errors = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut errors);
        errors
    });
    let mut text = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no passing case reported ({e}); so far: {text:#?}"));
        let passed = line.contains("] ok ");
        text.push(line);
        if passed {
            break;
        }
    }
    server.kill();

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("lockctl still running 120 s after the store died: {text:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    stdout_thread.join().unwrap();
    text.extend(lines.try_iter());
    let errors = stderr_thread.join().unwrap();
    let text = text.join("\n");
    assert_eq!(
        status.code(),
        Some(1),
        "{status}; stdout:\n{text}\nstderr:\n{errors}"
    );
    assert!(
        !errors.contains("panicked"),
        "lockctl itself panicked:\n{errors}"
    );

    let summary = text.lines().last().unwrap_or_default();
    let counts: Vec<usize> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .take(3)
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        summary.contains(" passed, ")
            && summary.contains(" failed, ")
            && summary.contains(" not applicable, in ")
            && counts.len() == 3,
        "the last line is not the summary: {summary:?}\n{text}"
    );
    let (passed, failed, not_applicable) = (counts[0], counts[1], counts[2]);
    assert_eq!(
        passed + failed + not_applicable,
        cases,
        "every case is counted: {summary}"
    );
    assert!(
        passed >= 1,
        "the first case passed before the kill: {summary}"
    );
    assert!(failed >= 1, "cases after the kill fail: {summary}\n{text}");

    // Each failure is named twice: in the progress lines and in a FAILED block.
    let named: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FAILED ")?.strip_suffix(':'))
        .collect();
    assert_eq!(
        named.len(),
        failed,
        "one FAILED block per failed case:\n{text}"
    );
    for name in &named {
        assert!(
            lock_conformance::CASES.iter().any(|c| c.name == *name),
            "{name:?} is not a case"
        );
    }
    assert!(
        text.contains("redis lock store is unavailable") || text.contains("Unavailable {"),
        "the failures say the store is unavailable:\n{text}"
    );
    let progress_failures = text.lines().filter(|l| l.contains("] FAILED ")).count();
    assert_eq!(progress_failures, failed, "{text}");
}

#[test]
fn a_dead_redis_fails_at_once_with_one_clear_line() {
    let sandbox = Sandbox::new();
    let dead = format!("redis://127.0.0.1:{}", lock_testkit::process::free_port());
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
    let url = sandbox.url(Backend::Sqlite);
    let output = sandbox.run(&["conformance", "--url", &url, "--filter", "no-such-case"]);
    assert_code(&output, 64);
    let message = stderr(&output);
    assert!(
        message.starts_with("lockctl: --filter \"no-such-case\" matches no conformance case"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");
}

#[test]
fn the_password_in_the_url_is_never_printed() {
    let password = "s3cret-pw";
    let server = RedisServer::start_with(&["--requirepass", password]);
    let url = format!("redis://:{password}@127.0.0.1:{}", server.port());
    let sandbox = Sandbox::new();
    let case = lock_conformance::CASES[0].name;
    let output = sandbox.run(&["conformance", "--url", &url, "--filter", case]);
    assert_code(&output, 0);
    let text = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!text.contains(password), "{text}");
    assert!(
        text.contains(&format!("redis://***@127.0.0.1:{}", server.port())),
        "{text}"
    );
}
