//! Running the real `lockctl` binary against each backend, in a sandbox of its own.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lock_testkit::Backend;
use tempfile::TempDir;

/// A temporary home for one test: state directory, lock stores, files children write.
pub(crate) struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The URL of a fresh store of `kind` in this sandbox (Redis: the test binary's
    /// shared server).
    pub(crate) fn url(&self, kind: Backend) -> String {
        kind.url(self.dir.path())
            .unwrap_or_else(|| panic!("{kind} lives in one process: lockctl cannot reach it"))
    }

    /// `lockctl` with this sandbox as its home and state directory, no `LOCK_URL`, and
    /// stdin closed.
    pub(crate) fn lockctl(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockctl"));
        command
            .env_remove("LOCK_URL")
            .env("HOME", self.dir.path())
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .stdin(Stdio::null());
        command
    }

    /// Runs `lockctl args...` to completion.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.lockctl().args(args).output().expect("lockctl starts")
    }
}

/// A lock name no other test of this binary uses.
pub(crate) fn unique_name(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `within`.
pub(crate) fn wait_for(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The exit code of a finished lockctl, with its stderr when the assertion fails.
pub(crate) fn assert_code(output: &Output, expected: i32) {
    assert_eq!(
        output.status.code(),
        Some(expected),
        "exit status {:?}; stdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The held leases `lockctl status --json` reports.
pub(crate) fn status_json(
    sandbox: &Sandbox,
    url: &str,
    name: Option<&str>,
) -> Vec<serde_json::Value> {
    let mut args = vec!["status", "--url", url, "--json"];
    args.extend(name);
    let output = sandbox.run(&args);
    assert_code(&output, 0);
    serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout)
        .unwrap_or_else(|e| panic!("status --json printed {:?}: {e}", stdout(&output)))
}

/// Whether `name` is held right now, by `lockctl status --json NAME`.
pub(crate) fn is_held(sandbox: &Sandbox, url: &str, name: &str) -> bool {
    !status_json(sandbox, url, Some(name)).is_empty()
}

/// Sends `signal` to process `pid`.
pub(crate) fn signal(pid: u32, signal: i32) {
    lock_testkit::process::signal(pid, signal)
        .unwrap_or_else(|e| panic!("kill -{signal} {pid} failed: {e}"));
}

/// Waits until `path` holds a whole line (a pid a child wrote), and returns it as a pid.
pub(crate) fn read_pid_file(path: &Path) -> u32 {
    let mut text = String::new();
    wait_for(
        &format!("a pid in {}", path.display()),
        Duration::from_secs(10),
        || {
            text = std::fs::read_to_string(path).unwrap_or_default();
            text.ends_with('\n')
        },
    );
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
}

/// A child's stderr, read line by line as it comes by a thread of its own (so the child
/// never blocks on a full pipe).
pub(crate) struct StderrLines {
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl StderrLines {
    /// Takes over `child`'s piped stderr.
    pub(crate) fn of(child: &mut std::process::Child) -> Self {
        use std::io::BufRead;
        let pipe = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`; panics with what came so far after `within`.
    pub(crate) fn wait_for(&mut self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.seen.iter().any(|l| l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(e) => panic!("no stderr line with {text:?} ({e}); got: {:#?}", self.seen),
            }
        }
    }

    /// Everything written, once the child exited (its end of the pipe closed).
    pub(crate) fn all(mut self) -> String {
        self.seen.extend(self.lines.iter());
        self.seen.join("\n")
    }
}
