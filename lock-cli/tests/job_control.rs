//! Process groups and job control: the command runs in a group of its own, led by lockctl's
//! keeper (with `--foreground`, in lockctl's group instead); Ctrl-Z stops it before lockctl
//! stops, and resuming lockctl resumes it, unless the lease ran out meanwhile.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use lock_testkit::{Backend, process};
use support::{Sandbox, StderrLines, assert_code, stderr, unique_name, wait_for};

/// Writes its pid to `$1`, appends a line to `$3` every 20 ms, and on SIGTERM writes `TERM`
/// to `$2` and exits 0.
const TICKER: &str = r#"trap 'echo TERM >> "$2"; exit 0' TERM
echo $$ > "$1"
while :; do echo tick >> "$3"; sleep 0.02; done"#;

const WITHIN: Duration = Duration::from_secs(5);

struct Ticker {
    lockctl: Child,
    command: u32,
    term_file: PathBuf,
    tick_file: PathBuf,
}

impl Ticker {
    /// Starts `lockctl [-v] run ... TICKER` with stderr piped, once the command runs.
    fn start(sandbox: &Sandbox, url: &str, name: &str, before: &[&str], run: &[&str]) -> Self {
        let pid_file = sandbox.file(&format!("{name}.pid"));
        let term_file = sandbox.file(&format!("{name}.term"));
        let tick_file = sandbox.file(&format!("{name}.ticks"));
        let lockctl = sandbox
            .lockctl()
            .args(before)
            .args(["run", "--url", url])
            .args(run)
            .args([name, "--", "sh", "-c", TICKER, "ticker"])
            .args([&pid_file, &term_file, &tick_file])
            .stderr(Stdio::piped())
            .spawn()
            .expect("lockctl starts");
        let command = support::read_pid_file(&pid_file);
        Self {
            lockctl,
            command,
            term_file,
            tick_file,
        }
    }

    /// SIGTERM to lockctl: the command's trap exits 0, which lockctl passes on.
    fn terminate(self) {
        support::signal(self.lockctl.id(), libc::SIGTERM);
        let output = self.lockctl.wait_with_output().unwrap();
        assert_code(&output, 0);
        assert_eq!(
            read(&self.term_file),
            "TERM\n",
            "the command got SIGTERM once"
        );
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The state, parent and process group of a live `pid`.
fn stat(pid: u32) -> (char, u32, u32) {
    let stat = lock_testkit::process::stat(pid).unwrap_or_else(|| panic!("process {pid} is gone"));
    (stat.state, stat.ppid, stat.pgrp)
}

#[test]
fn the_command_runs_in_a_new_group_led_by_the_keeper() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let ticker = Ticker::start(&sandbox, &url, &unique_name("group"), &[], &[]);
    let (_, keeper, group) = stat(ticker.command);
    let (_, keepers_parent, keepers_group) = stat(keeper);
    let (_, _, lockctls_group) = stat(ticker.lockctl.id());
    assert_eq!(
        keepers_parent,
        ticker.lockctl.id(),
        "lockctl started the keeper"
    );
    assert_eq!(group, keeper, "the keeper leads the command's group");
    assert_eq!(keepers_group, keeper);
    assert_ne!(group, lockctls_group, "not lockctl's group");
    assert_eq!(
        read(Path::new(&format!("/proc/{keeper}/comm"))).trim(),
        "lockctl-keeper"
    );
    ticker.terminate();
}

#[test]
fn with_foreground_the_command_is_a_child_in_lockctls_group() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::File);
    let mut ticker = Ticker::start(
        &sandbox,
        &url,
        &unique_name("foreground"),
        &["-v"],
        &["--foreground"],
    );
    let (_, parent, group) = stat(ticker.command);
    let (_, _, lockctls_group) = stat(ticker.lockctl.id());
    assert_eq!(parent, ticker.lockctl.id(), "no keeper in between");
    assert_eq!(group, lockctls_group, "in lockctl's group");
    // A terminal sends SIGINT to the whole foreground group; lockctl does not repeat it.
    let mut lines = StderrLines::of(&mut ticker.lockctl);
    support::signal(ticker.lockctl.id(), libc::SIGINT);
    lines.wait_for("not passing it on", WITHIN);
    assert!(process::alive(ticker.command), "SIGINT did not reach it");
    ticker.terminate();
}

#[test]
fn ctrl_z_stops_the_command_before_lockctl_and_resuming_lockctl_resumes_both() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("ctrl-z");
    let ticker = Ticker::start(&sandbox, &url, &name, &[], &[]);
    let lockctl = ticker.lockctl.id();
    support::signal(lockctl, libc::SIGTSTP);
    wait_for("lockctl to stop", WITHIN, || process::is_stopped(lockctl));
    assert!(
        process::is_stopped_or_stopping(ticker.command),
        "the command stopped before lockctl did"
    );
    let ticks = read(&ticker.tick_file);

    support::signal(lockctl, libc::SIGCONT);
    wait_for("the command to run again", WITHIN, || {
        !process::is_stopped(ticker.command) && !process::is_stopped(lockctl)
    });
    wait_for("a new tick", WITHIN, || {
        read(&ticker.tick_file).len() > ticks.len()
    });
    assert!(
        support::is_held(&sandbox, &url, &name),
        "still holding the lock"
    );
    ticker.terminate();
}

#[test]
fn a_lease_that_ran_out_while_stopped_kills_the_command_without_resuming_it() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("expired-while-stopped");
    let ticker = Ticker::start(&sandbox, &url, &name, &[], &["--ttl", "600ms"]);
    let lockctl = ticker.lockctl.id();
    support::signal(lockctl, libc::SIGTSTP);
    wait_for("lockctl to stop", WITHIN, || process::is_stopped(lockctl));
    let ticks = read(&ticker.tick_file);
    // The store frees the lease at its TTL, after lockctl's own deadline.
    wait_for("the lease to expire", WITHIN, || {
        !support::is_held(&sandbox, &url, &name)
    });

    support::signal(lockctl, libc::SIGCONT);
    let output = ticker.lockctl.wait_with_output().unwrap();
    assert_code(&output, 76);
    assert!(
        stderr(&output).contains("ran out while lockctl was stopped"),
        "{}",
        stderr(&output)
    );
    assert!(!process::alive(ticker.command));
    assert_eq!(
        read(&ticker.tick_file),
        ticks,
        "the command never ran again"
    );
    assert_eq!(read(&ticker.term_file), "", "SIGKILL, no SIGTERM to act on");
}
