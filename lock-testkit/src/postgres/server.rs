//! [`PostgresServer`]: one private PostgreSQL cluster.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{INSTALL_HINT, bin_dir};
use crate::process::{Guarded, alive, children, free_port, is_root, signal};

/// How long a starting server may take to accept connections.
const STARTUP: Duration = Duration::from_secs(30);

/// The user servers run as when the tests run as root (PostgreSQL refuses root).
pub(crate) const RUN_AS: &str = "postgres";

/// A private PostgreSQL cluster (`initdb` + `postgres`) on a free loopback port, in a
/// temporary directory, with trust authentication for the `postgres` user and a database
/// `postgres`. Durability is off (`fsync=off`): a kill loses nothing a test relies on, since
/// the server still writes its WAL before it answers.
///
/// When the tests run as root, `initdb` and the server run as the `postgres` user
/// (`runuser -u postgres --`), in a directory that user owns. Dropping it shuts the server
/// down (immediate shutdown) and removes the directory; a guardian shell does the same if
/// the test process dies first.
///
/// ```no_run
/// use lock_testkit::postgres::PostgresServer;
///
/// let mut server = PostgresServer::start();
/// let url = server.url(); // postgres://postgres@127.0.0.1:<port>/postgres
/// server.pause(); // SIGSTOP, postmaster and backends
/// server.resume();
/// server.kill(); // SIGKILL, postmaster and backends
/// server.restart(); // same port, same data
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    port: u16,
    dir: TempDir,
    process: Option<Guarded>,
}

/// The directory a server's files go in, and the wrapper that runs its programs.
fn as_server_user() -> &'static [&'static str] {
    if is_root() {
        &["runuser", "-u", RUN_AS, "--"]
    } else {
        &[]
    }
}

/// A temporary directory the server's user owns and can reach: under `TMPDIR` if that user
/// can enter it, else under `/tmp`.
pub(crate) fn server_dir(prefix: &str) -> TempDir {
    let make = |parent: Option<&Path>| {
        let mut builder = tempfile::Builder::new();
        builder.prefix(prefix);
        match parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .unwrap_or_else(|e| panic!("cannot create a directory for {prefix}: {e}"))
    };
    let dir = make(None);
    if !is_root() {
        return dir;
    }
    hand_to_server_user(dir.path());
    if reachable_by_server_user(dir.path()) {
        return dir;
    }
    drop(dir);
    let dir = make(Some(Path::new("/tmp")));
    hand_to_server_user(dir.path());
    assert!(
        reachable_by_server_user(dir.path()),
        "the {RUN_AS} user cannot write to {}",
        dir.path().display()
    );
    dir
}

fn hand_to_server_user(dir: &Path) {
    let status = Command::new("chown")
        .arg(format!("{RUN_AS}:"))
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("chown {RUN_AS} {}: {e}", dir.display()));
    assert!(
        status.success(),
        "chown {RUN_AS} {} failed: is there a `{RUN_AS}` user? ({INSTALL_HINT})",
        dir.display()
    );
}

fn reachable_by_server_user(dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", RUN_AS, "--", "test", "-w"])
        .arg(dir)
        .current_dir("/")
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `program args...` from the server's binaries as the server's user; panics with its
/// output if it fails.
pub(crate) fn run_tool(bin: &Path, program: &str, args: &[&str], cwd: &Path) {
    let wrapper = as_server_user();
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin.join(program));
            c
        }
        None => Command::new(bin.join(program)),
    };
    let out = command
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "{program} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PostgresServer {
    /// Creates a cluster and starts it.
    ///
    /// # Panics
    ///
    /// When no PostgreSQL server binaries are installed (with how to install them) or the
    /// server does not start.
    pub fn start() -> Self {
        let bin = bin_dir().unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let dir = server_dir("lock-postgres-test-");
        let data = dir.path().join("data");
        run_tool(
            &bin,
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ],
            dir.path(),
        );
        let mut server = Self {
            bin,
            port: 0,
            dir,
            process: None,
        };
        let mut last_error = None;
        // Another process may take the free port between the probe and the bind.
        for _ in 0..5 {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return server,
                Err(e) => last_error = Some(e),
            }
        }
        panic!(
            "postgres did not start: {}; log:\n{}",
            last_error.map_or_else(String::new, |e| e.to_string()),
            server.log()
        );
    }

    fn launch(&mut self) -> std::io::Result<()> {
        let dir = self.dir.path().display().to_string();
        let args: Vec<String> = [
            "-D",
            &format!("{dir}/data"),
            "-p",
            &self.port.to_string(),
            "-k",
            &dir,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=400",
            "-c",
            "shared_buffers=32MB",
            "-c",
            "dynamic_shared_memory_type=mmap",
            "-c",
            "log_min_messages=warning",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Immediate shutdown (SIGQUIT) removes the shared memory; SIGKILL after 5 s.
        let stop = "kill -CONT $pid 2>/dev/null; kill -QUIT $pid 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 \
31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50; do
  kill -0 $pid 2>/dev/null || break; sleep 0.1
done";
        let log = self.dir.path().join("postgres.log");
        let process = Guarded::spawn_as(
            as_server_user(),
            stop,
            &self.bin.join("postgres"),
            &args,
            &log,
            self.dir.path(),
        )?;
        if let Err(e) = self.wait_until_ready(process.pid()) {
            process.stop();
            return Err(e);
        }
        self.process = Some(process);
        Ok(())
    }

    fn wait_until_ready(&self, pid: u32) -> std::io::Result<()> {
        let start = Instant::now();
        loop {
            if !alive(pid) {
                return Err(std::io::Error::other("postgres exited during startup"));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .current_dir("/")
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if start.elapsed() > STARTUP {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "postgres on port {} did not start within {STARTUP:?}",
                        self.port
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Guarded::pid)
    }

    /// The cluster's directory (its log is `postgres.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// True while the postmaster exists (running or paused).
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(alive)
    }

    /// The postmaster and its children (backends, background workers).
    fn processes(&self) -> Vec<u32> {
        match self.pid() {
            Some(pid) => {
                let mut all = vec![pid];
                all.extend(children(pid));
                all
            }
            None => Vec::new(),
        }
    }

    /// SIGKILLs the postmaster and every backend, and waits until they are gone: the
    /// server dies as in a power cut (its data stays, for [`restart`](Self::restart)).
    /// Harmless if it is not running.
    pub fn kill(&mut self) {
        let all = self.processes();
        for pid in &all {
            let _ = signal(*pid, libc::SIGKILL);
        }
        if let Some(process) = self.process.take() {
            process.stop();
        }
        let start = Instant::now();
        while all.iter().any(|p| alive(*p)) && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGSTOPs the postmaster and every backend: connections stay open, nothing answers.
    ///
    /// # Panics
    ///
    /// When the server is not running.
    pub fn pause(&self) {
        assert!(self.is_running(), "pause: the server is not running");
        let Some(postmaster) = self.pid() else {
            return;
        };
        // The postmaster first, and once it is stopped (it forks no more backends), every
        // child it has.
        let _ = signal(postmaster, libc::SIGSTOP);
        let start = Instant::now();
        while alive(postmaster)
            && !crate::process::is_stopped(postmaster)
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        for pid in children(postmaster) {
            let _ = signal(pid, libc::SIGSTOP);
        }
    }

    /// SIGCONTs a paused server.
    ///
    /// # Panics
    ///
    /// When the server is not running.
    pub fn resume(&self) {
        assert!(self.is_running(), "resume: the server is not running");
        for pid in self.processes() {
            let _ = signal(pid, libc::SIGCONT);
        }
        // `runuser` stops itself when its child stops: let it run again too.
        if let Some(wrapper) = self.pid().and_then(crate::process::stat).map(|s| s.ppid)
            && crate::process::is_stopped(wrapper)
        {
            let _ = signal(wrapper, libc::SIGCONT);
        }
    }

    /// Kills the server if it runs and starts it again on the same port and data (after
    /// crash recovery, it has every committed write).
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.launch() {
            panic!(
                "postgres did not restart on port {}: {e}; log:\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// Shuts the server down (immediate shutdown, so it removes its shared memory), and
    /// SIGKILLs whatever is left after a few seconds.
    fn shut_down(&mut self) {
        let Some(pid) = self.pid() else {
            return;
        };
        for p in self.processes() {
            let _ = signal(p, libc::SIGCONT);
        }
        let _ = signal(pid, libc::SIGQUIT);
        let start = Instant::now();
        while alive(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}
