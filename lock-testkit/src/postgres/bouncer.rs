//! [`PgBouncer`]: a private PgBouncer in transaction pooling mode.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::server::{RUN_AS, server_dir};
use crate::process::{Guarded, alive, free_port, is_root};

/// What to do when no `pgbouncer` binary can be found.
pub const PGBOUNCER_HINT: &str = "the PgBouncer tests need a pgbouncer binary: install it \
    (Debian/Ubuntu: `apt-get install pgbouncer`; macOS: `brew install pgbouncer`), or set \
    LOCK_TEST_PGBOUNCER to its path";

/// The `pgbouncer` to run: `LOCK_TEST_PGBOUNCER` if set, else `/usr/sbin/pgbouncer`, else
/// the first on `PATH`.
fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LOCK_TEST_PGBOUNCER") {
        return Some(PathBuf::from(path));
    }
    let sbin = PathBuf::from("/usr/sbin/pgbouncer");
    if sbin.is_file() {
        return Some(sbin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("pgbouncer"))
        .find(|candidate| candidate.is_file())
}

/// A private `pgbouncer` on a free loopback port in front of a PostgreSQL server, in
/// **transaction pooling** mode: a client's statements outside a transaction may run on a
/// different server connection each, so nothing a session remembers (prepared statements,
/// `LISTEN`) can be relied on. Trust authentication; any database name maps to the same
/// name on the server. Stopped by pid on drop, and by its guardian if the test process
/// dies.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    server_url: String,
    dir: TempDir,
    process: Option<Guarded>,
}

impl PgBouncer {
    /// Starts one in front of the server at `host:port`, with at most `pool_size` server
    /// connections per database and user.
    ///
    /// # Panics
    ///
    /// When no `pgbouncer` binary is installed (with how to install it) or it does not
    /// start.
    pub fn start(server_host: &str, server_port: u16, pool_size: u32) -> Self {
        let binary = binary().unwrap_or_else(|| panic!("{PGBOUNCER_HINT}"));
        let dir = server_dir("lock-pgbouncer-test-");
        let port = free_port();
        let config = dir.path().join("pgbouncer.ini");
        let users = dir.path().join("users.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n")
            .unwrap_or_else(|e| panic!("writing {}: {e}", users.display()));
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host={server_host} port={server_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
                 default_pool_size = {pool_size}\nmax_client_conn = 2000\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 server_reset_query =\nlog_connections = 0\nlog_disconnections = 0\n",
                users = users.display()
            ),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        if is_root() {
            for file in [&config, &users] {
                let _ = std::process::Command::new("chown")
                    .arg(format!("{RUN_AS}:"))
                    .arg(file)
                    .status();
            }
        }
        let wrapper: &[&str] = if is_root() {
            &["runuser", "-u", RUN_AS, "--"]
        } else {
            &[]
        };
        let log = dir.path().join("pgbouncer.log");
        let process = Guarded::spawn_as(
            wrapper,
            "kill -9 $pid 2>/dev/null",
            &binary,
            &[config.display().to_string()],
            &log,
            dir.path(),
        )
        .unwrap_or_else(|e| panic!("cannot start pgbouncer: {e}; {PGBOUNCER_HINT}"));
        let bouncer = Self {
            port,
            server_url: format!("{server_host}:{server_port}"),
            dir,
            process: Some(process),
        };
        bouncer.wait_until_listening();
        bouncer
    }

    fn wait_until_listening(&self) {
        let start = Instant::now();
        loop {
            let pid = self.pid().unwrap_or(0);
            assert!(
                alive(pid),
                "pgbouncer exited during startup; log:\n{}",
                self.log()
            );
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "pgbouncer did not listen on port {} within 20 s; log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`, through the pooler.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server it pools (`host:port`).
    pub fn server(&self) -> &str {
        &self.server_url
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Guarded::pid)
    }

    /// Its directory (its log is `pgbouncer.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }
}
