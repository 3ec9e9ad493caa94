//! Stores for every backend, and `lock-worker` processes to run against them.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use lock_testkit::Backend;
use lock_testkit::history::Summary;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Expands `$body` (a generic `async fn(Store)`) into one `#[tokio::test]` per backend a
/// worker process can reach, inside `mod $module`, each named after its backend's
/// [`Backend::ident`].
#[macro_export]
macro_rules! per_backend {
    ($module:ident, $body:ident) => {
        mod $module {
            $crate::single_host_tests!($body);
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$body($crate::support::Store::new(::lock_testkit::Backend::Redis)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::support::Store::new(
                    ::lock_testkit::Backend::Postgres,
                ))
                .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_pgbouncer() {
                super::$body($crate::support::Store::new(
                    ::lock_testkit::Backend::PostgresPgbouncer,
                ))
                .await;
            }
        }
    };
}

/// One `#[tokio::test]` per single-host store (a lock directory, SQLite through both
/// drivers), named after it; for [`per_backend!`] and [`per_single_host_backend!`].
#[macro_export]
macro_rules! single_host_tests {
    ($body:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn file() {
            super::$body($crate::support::Store::new(::lock_testkit::Backend::File)).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite() {
            super::$body($crate::support::Store::new(::lock_testkit::Backend::Sqlite)).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite_sqlx() {
            super::$body($crate::support::Store::new(
                ::lock_testkit::Backend::SqliteSqlx,
            ))
            .await;
        }
    };
}

/// As [`per_backend!`], for the stores whose processes all run on one host (a lock
/// directory, SQLite through both drivers).
#[macro_export]
macro_rules! per_single_host_backend {
    ($module:ident, $body:ident) => {
        mod $module {
            $crate::single_host_tests!($body);
        }
    };
}

/// The environment variable naming a file each test appends its summary line to.
pub(crate) const SUMMARY_ENV: &str = "LOCK_TEST_SUMMARY";

/// One test's summary line: `reliability test=.. backend=.. key=value ...`.
///
/// Cargo captures what tests print, so [`emit`](Self::emit) writes the line to stderr (seen
/// with `--nocapture` or when the test fails) and appends it to the file named by
/// `LOCK_TEST_SUMMARY`, if set, where CI and `scripts/stress` read it.
pub(crate) struct Report {
    line: String,
}

impl Report {
    pub(crate) fn new(test: &str, backend: Backend) -> Self {
        Self {
            line: format!("reliability test={test} backend={backend}"),
        }
    }

    /// Adds `key=value`.
    pub(crate) fn field(mut self, key: &str, value: impl fmt::Display) -> Self {
        let value = value.to_string();
        assert!(
            !key.contains(char::is_whitespace) && !value.contains(char::is_whitespace),
            "report fields are single words: {key}={value:?}"
        );
        self.line.push_str(&format!(" {key}={value}"));
        self
    }

    /// Adds the checked history's counts, and `overlaps=0` (a history with one does not
    /// get this far).
    pub(crate) fn history(mut self, summary: &Summary) -> Self {
        self.line.push_str(&format!(" {summary} overlaps=0"));
        self
    }

    pub(crate) fn emit(self) {
        eprintln!("{}", self.line);
        let Some(path) = std::env::var_os(SUMMARY_ENV).filter(|p| !p.is_empty()) else {
            return;
        };
        let line = format!("{}\n", self.line);
        // One write on an O_APPEND file: lines of concurrent tests never interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("{SUMMARY_ENV}={}: {e}", Path::new(&path).display()));
    }
}

/// A fresh lock store and a directory for the test's files.
pub(crate) struct Store {
    pub(crate) kind: Backend,
    pub(crate) url: String,
    dir: TempDir,
    /// Names are unique per store, so tests sharing the Redis server never meet.
    prefix: String,
}

impl Store {
    pub(crate) fn new(kind: Backend) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = kind
            .url(dir.path())
            .unwrap_or_else(|| panic!("{kind} lives in one process: no worker can reach it"));
        let prefix = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            kind,
            url,
            dir,
            prefix,
        }
    }

    /// A lock name unique to this store.
    pub(crate) fn name(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub(crate) async fn backend(&self) -> std::sync::Arc<dyn leaselock::LockBackend> {
        leaselock::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.url))
    }

    /// Starts `lock-worker MODE --url .. --name NAME --ttl-ms TTL --history .. --id ID extra..`.
    pub(crate) fn worker(
        &self,
        mode: &str,
        name: &str,
        ttl: Duration,
        id: &str,
        extra: &[&str],
    ) -> Worker {
        Worker::start(
            self.command(worker_program(), &self.url, mode, name, ttl, id)
                .args(extra),
        )
    }

    /// The command [`worker`](Self::worker) runs, not started, for tests that change it
    /// first (another store URL, another user): `program MODE --url URL --name NAME
    /// --ttl-ms TTL --history <this store's history> --id ID`, stdin and stdout piped.
    pub(crate) fn command(
        &self,
        program: &Path,
        url: &str,
        mode: &str,
        name: &str,
        ttl: Duration,
        id: &str,
    ) -> Command {
        let mut command = Command::new(program);
        command
            .arg(mode)
            .args(["--url", url, "--name", name])
            .args(["--ttl-ms", &ttl.as_millis().to_string()])
            .arg("--history")
            .arg(self.history())
            .args(["--id", id])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// The history file every worker of this store appends to.
    pub(crate) fn history(&self) -> PathBuf {
        self.path("history")
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The `lock-worker` binary cargo built for these tests.
pub(crate) fn worker_program() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lock-worker"))
}

/// A running `lock-worker`.
pub(crate) struct Worker {
    pub(crate) child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    /// Starts `command` (from [`Store::command`]).
    pub(crate) fn start(command: &mut Command) -> Self {
        let mut child = command.spawn().expect("lock-worker starts");
        let lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        Self { child, lines }
    }

    /// The next line it prints, within `within`.
    pub(crate) async fn line(&mut self, within: Duration) -> String {
        match tokio::time::timeout(within, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("the worker exited: {:?}", self.child.try_wait()),
            Ok(Err(e)) => panic!("cannot read the worker's output: {e}"),
            Err(_) => panic!("the worker printed nothing within {within:?}"),
        }
    }

    /// Waits for a line `<word> <number>...`; returns the numbers.
    pub(crate) async fn expect(&mut self, word: &str, within: Duration) -> Vec<u64> {
        let line = self.line(within).await;
        let mut words = line.split(' ');
        assert_eq!(words.next(), Some(word), "the worker said {line:?}");
        words
            .map(|w| {
                w.parse()
                    .unwrap_or_else(|_| panic!("{w:?} is not a number in {line:?}"))
            })
            .collect()
    }

    /// Waits for its `acquired <fence>` line; returns the fence.
    pub(crate) async fn acquired(&mut self, within: Duration) -> u64 {
        let numbers = self.expect("acquired", within).await;
        assert_eq!(numbers.len(), 1, "acquired {numbers:?}");
        numbers[0]
    }

    pub(crate) async fn tell(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    pub(crate) fn signal(&self, signal: i32) {
        let pid = self.pid();
        lock_testkit::process::signal(pid, signal)
            .unwrap_or_else(|e| panic!("kill({pid}, {signal}): {e}"));
    }

    /// Takes its stdin, so that [`exit_code`](Self::exit_code) does not close it: a test
    /// keeps the returned pipe open to prove the worker exits with its input still open.
    pub(crate) fn keep_stdin_open(&mut self) -> ChildStdin {
        self.child
            .stdin
            .take()
            .expect("stdin is piped and not taken yet")
    }

    /// Waits for it to exit; returns its exit code. Closes its stdin first, unless a test
    /// took it with [`keep_stdin_open`](Self::keep_stdin_open) (tokio's `wait` closes it).
    pub(crate) async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the worker exits in time")
            .unwrap()
            .code()
    }
}
