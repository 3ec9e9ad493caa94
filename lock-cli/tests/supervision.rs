//! lockctl supervising its command: a revoked lease stops it (SIGTERM, then SIGKILL after
//! the grace period), a lease that cannot be renewed stops it before it runs out, signals to
//! lockctl reach it, and it never outlives lockctl.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use lock_testkit::redis::RedisServer;
use lock_testkit::{Backend, process};
use support::{Sandbox, assert_code, stderr, unique_name, wait_for};

/// A command that records its pid, then works until stopped; on SIGTERM it writes `TERM`
/// to `$2` and exits 0 unless `$3` is `ignore`, in which case it ignores SIGTERM.
const WORKER: &str = r#"if [ "$3" = ignore ]; then trap '' TERM; else trap 'echo TERM >> "$2"; exit 0' TERM; fi
echo $$ > "$1"
while :; do sleep 0.05; done"#;

struct Run {
    lockctl: Child,
    pid_file: std::path::PathBuf,
    term_file: std::path::PathBuf,
}

impl Run {
    /// Starts `lockctl run` of `WORKER` and waits until the worker runs.
    fn start(sandbox: &Sandbox, url: &str, name: &str, extra: &[&str], on_term: &str) -> Self {
        let pid_file = sandbox.file(&format!("{name}.pid"));
        let term_file = sandbox.file(&format!("{name}.term"));
        let lockctl = sandbox
            .lockctl()
            .args(["run", "--url", url])
            .args(extra)
            .args([name, "--", "sh", "-c", WORKER, "worker"])
            .arg(&pid_file)
            .arg(&term_file)
            .arg(on_term)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the command to start", Duration::from_secs(10), || {
            std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
        });
        Self {
            lockctl,
            pid_file,
            term_file,
        }
    }

    fn command_pid(&self) -> u32 {
        std::fs::read_to_string(&self.pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// Whether the command wrote that it got SIGTERM.
fn got_sigterm(term_file: &std::path::Path) -> bool {
    std::fs::read_to_string(term_file).is_ok_and(|s| s.contains("TERM"))
}

fn force_release(sandbox: &Sandbox, url: &str, name: &str) -> Instant {
    let output = sandbox.run(&["release", "--force", "--url", url, name]);
    assert_code(&output, 0);
    Instant::now()
}

#[test]
fn a_lost_lease_stops_the_command_with_sigterm_and_exits_76() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("lost");
    let run = Run::start(&sandbox, &url, &name, &["--ttl", "900ms"], "exit");
    force_release(&sandbox, &url, &name);
    let output = run.lockctl.wait_with_output().unwrap();
    assert_code(&output, 76);
    assert!(
        stderr(&output).contains("lost the lease"),
        "{}",
        stderr(&output)
    );
    assert!(got_sigterm(&run.term_file), "the command got SIGTERM");
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::File);
    let name = unique_name("stubborn");
    let run = Run::start(
        &sandbox,
        &url,
        &name,
        &["--ttl", "2s", "--grace", "700ms"],
        "ignore",
    );
    let pid = run.command_pid();
    let released = force_release(&sandbox, &url, &name);
    let output = run.lockctl.wait_with_output().unwrap();
    assert_code(&output, 76);
    // Loss is noticed at the next heartbeat (ttl/3), then the command has the grace period.
    assert!(
        released.elapsed() >= Duration::from_millis(700),
        "SIGKILL came before the grace period ended: {:?}",
        released.elapsed()
    );
    assert!(!process::alive(pid), "the command was killed");
    assert!(!run.term_file.exists(), "the command ignored SIGTERM");
}

#[test]
fn sigkill_of_lockctl_kills_the_command() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("orphan");
    let mut run = Run::start(&sandbox, &url, &name, &[], "exit");
    let pid = run.command_pid();
    assert!(process::alive(pid));
    run.lockctl.kill().unwrap(); // SIGKILL
    run.lockctl.wait().unwrap();
    wait_for(
        "the command to die with lockctl",
        Duration::from_secs(5),
        || !process::alive(pid),
    );
}

#[test]
fn sigint_and_sigterm_are_forwarded_and_the_lease_is_released_after() {
    for (signal, url_kind) in [
        (libc::SIGINT, Backend::Sqlite),
        (libc::SIGTERM, Backend::Redis),
    ] {
        let sandbox = Sandbox::new();
        let url = sandbox.url(url_kind);
        let name = unique_name("forward");
        let mut run = Run::start(&sandbox, &url, &name, &[], "exit");
        assert!(support::is_held(&sandbox, &url, &name));
        support::signal(run.lockctl.id(), signal);
        let status = run.lockctl.wait().unwrap();
        // The command's SIGTERM trap exits 0, which lockctl passes through; SIGINT kills it.
        let expected = if signal == libc::SIGTERM {
            0
        } else {
            128 + signal
        };
        assert_eq!(status.code(), Some(expected), "signal {signal}");
        assert_eq!(
            got_sigterm(&run.term_file),
            signal == libc::SIGTERM,
            "signal {signal}"
        );
        assert!(
            !support::is_held(&sandbox, &url, &name),
            "the lease is released once the command exits"
        );
    }
}

#[test]
fn a_lease_that_cannot_be_renewed_stops_the_command_before_it_runs_out() {
    // A private server: pausing it must not stall other tests.
    let server = RedisServer::start();
    let sandbox = Sandbox::new();
    let url = server.url();
    let name = unique_name("unrenewable");
    let ttl = Duration::from_secs(2);
    // The default grace, ttl/4: SIGTERM 500 ms before the local deadline.
    let run = Run::start(&sandbox, &url, &name, &["--ttl", "2s"], "exit");
    let pid = run.command_pid();
    server.pause();
    let paused = Instant::now();
    wait_for("the command to stop", Duration::from_secs(3), || {
        !process::alive(pid)
    });
    let stopped = paused.elapsed();
    server.resume();
    let output = run.lockctl.wait_with_output().unwrap();
    // The last renewal was sent before the pause, so the local deadline (sent + ttl - the
    // safety margin of ttl/10) is at most this long after it.
    let deadline = ttl - ttl / 10;
    assert!(
        stopped < deadline,
        "the command ran {stopped:?} after the pause, past the lease's deadline ({deadline:?} at most)"
    );
    assert!(
        got_sigterm(&run.term_file),
        "it was asked to stop (SIGTERM)"
    );
    assert_code(&output, 76);
    assert!(
        stderr(&output).contains("could not be renewed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_lease_that_renews_normally_never_stops_the_command() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    // Five renewals (every 300 ms); the default grace (225 ms) must not fire between them.
    let output = sandbox.run(&[
        "run", "--url", &url, "--ttl", "900ms", "job", "--", "sleep", "1.6",
    ]);
    assert_code(&output, 0);
    assert_eq!(stderr(&output), "", "no warning either");
}
