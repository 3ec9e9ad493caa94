//! Running the real `lockctl` binary against each backend, in a sandbox of its own.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lock_testkit::redis::TestRedis;
use tempfile::TempDir;

/// A lock store kind lockctl can be pointed at.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Store {
    /// A lock directory.
    File,
    /// SQLite through rusqlite.
    Sqlite,
    /// SQLite through sqlx.
    SqliteSqlx,
    /// The private Redis server of this test binary.
    Redis,
}

/// One private `redis-server` per test binary, stopped when the binary exits.
pub(crate) fn redis() -> &'static TestRedis {
    static REDIS: OnceLock<TestRedis> = OnceLock::new();
    REDIS.get_or_init(TestRedis::from_env_or_start)
}

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

    /// The URL of a fresh store of `kind` (Redis: the shared private server).
    pub(crate) fn url(&self, kind: Store) -> String {
        let dir = self.dir.path().display();
        match kind {
            Store::File => format!("file://{dir}/locks"),
            Store::Sqlite => format!("sqlite://{dir}/locks.db"),
            Store::SqliteSqlx => format!("sqlite+sqlx://{dir}/locks.db"),
            Store::Redis => redis().url(),
        }
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

/// True while `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    lock_testkit::process::alive(pid)
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
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// The state letter (`R`, `S`, `T`, `Z`...), parent pid and process group of `pid`, from
/// `/proc/PID/stat`; `None` once it is gone.
pub(crate) fn proc_stat(pid: u32) -> Option<(char, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name: state, ppid, pgrp.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether `pid` is stopped (state `T`).
pub(crate) fn is_stopped(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _, _)| state == 'T')
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
