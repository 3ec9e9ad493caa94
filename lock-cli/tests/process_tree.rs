//! `lockctl run` treats the command's whole process group as the job: a grandchild the
//! command started never outlives it. It is gone before the next holder starts when
//! lockctl gets SIGTERM or SIGKILL or the command exits leaving it behind, and gone when
//! lockctl exits after the lease was revoked.

mod support;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use lock_testkit::{Backend, process};
use support::{Sandbox, StderrLines, assert_code, stdout, unique_name};

/// Starts a grandchild that ignores SIGTERM, SIGINT and SIGHUP (only SIGKILL stops it),
/// writes its pid to `$1`, then waits for it.
const STUBBORN_GRANDCHILD: &str = r#"(trap '' TERM INT HUP; exec sleep 30) & echo $! > "$1"; wait"#;

/// The same grandchild, but the command exits once the file `$2` exists, leaving it behind.
const ABANDONED_GRANDCHILD: &str = r#"(trap '' TERM INT HUP; exec sleep 30) & echo $! > "$1"
while [ ! -e "$2" ]; do sleep 0.01; done"#;

/// A grandchild that writes `TERM` to `$2` and exits on SIGTERM; the command itself ignores
/// SIGTERM and waits for the grandchild, then exits 0.
const LISTENING_GRANDCHILD: &str = r#"(trap 'echo TERM > "$2"; exit 0' TERM; while :; do sleep 0.05; done) &
echo $! > "$1"; trap '' TERM; wait"#;

/// Run by the next holder as soon as it holds the lock: prints whether process `$1` runs.
const REPORT_STATE: &str = r#"state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
case "$state" in ''|Z|X) echo gone ;; *) echo "running ($state)" ;; esac"#;

/// A `lockctl run` whose command started a grandchild.
struct Job {
    lockctl: Child,
    grandchild: u32,
    /// The script's `$2`: the file that lets it exit, or the one its grandchild writes.
    second_file: PathBuf,
}

impl Job {
    fn start(sandbox: &Sandbox, url: &str, name: &str, extra: &[&str], script: &str) -> Self {
        let pid_file = sandbox.file(&format!("{name}.grandchild"));
        let second = sandbox.file(&format!("{name}.second"));
        let lockctl = sandbox
            .lockctl()
            .args(["run", "--url", url])
            .args(extra)
            .args([name, "--", "sh", "-c", script, "job"])
            .arg(&pid_file)
            .arg(&second)
            .stderr(Stdio::null())
            .spawn()
            .expect("lockctl starts");
        let grandchild = support::read_pid_file(&pid_file);
        assert!(process::alive(grandchild), "the grandchild runs");
        Self {
            lockctl,
            grandchild,
            second_file: second,
        }
    }
}

/// A second `lockctl run` of the same lock, already waiting for it, whose command reports
/// whether the first job's grandchild still runs the moment it gets the lock.
struct NextHolder {
    lockctl: Child,
    _stderr: StderrLines,
}

impl NextHolder {
    fn queue(sandbox: &Sandbox, url: &str, name: &str, grandchild: u32) -> Self {
        let mut lockctl = sandbox
            .lockctl()
            .args(["-v", "run", "--url", url, "--wait", "10s", name, "--"])
            .args(["sh", "-c", REPORT_STATE, "report", &grandchild.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lockctl starts");
        let mut stderr = StderrLines::of(&mut lockctl);
        stderr.wait_for("waiting for it", Duration::from_secs(10));
        Self {
            lockctl,
            _stderr: stderr,
        }
    }

    /// What the next holder's command saw.
    fn saw(self) -> String {
        let output = self.lockctl.wait_with_output().unwrap();
        assert_code(&output, 0);
        stdout(&output).trim().to_owned()
    }
}

#[test]
fn sigterm_to_lockctl_reaches_the_grandchild_before_the_next_holder_starts() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("term");
    let mut job = Job::start(&sandbox, &url, &name, &[], LISTENING_GRANDCHILD);
    let next = NextHolder::queue(&sandbox, &url, &name, job.grandchild);
    support::signal(job.lockctl.id(), libc::SIGTERM);
    let status = job.lockctl.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the command waited for the grandchild"
    );
    assert_eq!(
        std::fs::read_to_string(&job.second_file).unwrap_or_default(),
        "TERM\n",
        "the grandchild got SIGTERM itself"
    );
    assert!(!process::alive(job.grandchild));
    assert_eq!(next.saw(), "gone");
}

#[test]
fn sigkill_of_lockctl_kills_the_grandchild_before_the_next_holder_starts() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::Sqlite);
    let name = unique_name("kill");
    let mut job = Job::start(&sandbox, &url, &name, &["--ttl", "1s"], STUBBORN_GRANDCHILD);
    let next = NextHolder::queue(&sandbox, &url, &name, job.grandchild);
    job.lockctl.kill().unwrap(); // SIGKILL: the lease stays until its TTL runs out
    job.lockctl.wait().unwrap();
    support::wait_for(
        "the grandchild to die with lockctl",
        Duration::from_secs(2),
        || !process::alive(job.grandchild),
    );
    assert_eq!(next.saw(), "gone");
}

#[test]
fn what_the_command_leaves_behind_is_killed_before_the_lease_is_released() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::File);
    let name = unique_name("mop-up");
    let mut job = Job::start(&sandbox, &url, &name, &[], ABANDONED_GRANDCHILD);
    let next = NextHolder::queue(&sandbox, &url, &name, job.grandchild);
    std::fs::write(&job.second_file, "").unwrap();
    let status = job.lockctl.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the command's own status");
    assert!(
        !process::alive(job.grandchild),
        "lockctl exits only once the group is gone"
    );
    assert_eq!(next.saw(), "gone");
}

#[test]
fn a_revoked_lease_kills_the_grandchild_before_lockctl_exits() {
    let sandbox = Sandbox::new();
    let url = sandbox.url(Backend::File);
    let name = unique_name("revoked");
    let job = Job::start(
        &sandbox,
        &url,
        &name,
        &["--ttl", "2s", "--grace", "300ms"],
        STUBBORN_GRANDCHILD,
    );
    let output = sandbox.run(&["release", "--force", "--url", &url, &name]);
    assert_code(&output, 0);
    // Force-release frees the lock at once: a next holder may start while the job is being
    // stopped (fencing tokens are for that window). lockctl exits once the group is gone.
    let output = job.lockctl.wait_with_output().unwrap();
    assert_code(&output, 76);
    assert!(!process::alive(job.grandchild));
}
