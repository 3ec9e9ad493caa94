//! [`RedisServer`]: one private `redis-server` process.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use super::INSTALL_HINT;
use super::process::{Guarded, redis_server_binary, wait_until_ready};
use crate::process::{alive, free_ports, signal};

/// How long a starting server may take to answer.
const STARTUP: Duration = Duration::from_secs(20);

/// A private `redis-server` on a free loopback port, without persistence
/// (`--save '' --appendonly no`), so a restart loses every key.
///
/// Dropping it SIGKILLs the process by pid and reaps it.
///
/// ```no_run
/// use lock_testkit::redis::RedisServer;
///
/// let mut server = RedisServer::start();
/// let url = server.url(); // redis://127.0.0.1:<port>
/// server.pause(); // SIGSTOP
/// server.resume(); // SIGCONT
/// server.restart(); // same port, empty data
/// ```
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    /// The cluster bus port of a cluster node (`--cluster-port`).
    cluster_port: Option<u16>,
    extra_args: Vec<String>,
    /// For a Sentinel: the master it monitors (name, port); `None` for a data server.
    sentinel: Option<(String, u16)>,
    dir: TempDir,
    process: Option<Guarded>,
}

impl RedisServer {
    /// Starts a server with the default settings.
    ///
    /// # Panics
    ///
    /// When no `redis-server` binary is installed (with how to install it) or it does not
    /// start.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments, such as
    /// `["--requirepass", "secret"]`.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_on(extra_args, false, free_ports)
    }

    /// Starts a node of a Redis Cluster (`extra_args` should enable cluster mode), on a free
    /// port and a free cluster bus port.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub(crate) fn start_cluster_node(extra_args: &[&str]) -> Self {
        Self::start_on(extra_args, true, free_ports)
    }

    /// Starts a replica of `primary` (`--replicaof 127.0.0.1 <port>`), without waiting for
    /// it to sync.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        let port = primary.port().to_string();
        Self::start_with(&["--replicaof", "127.0.0.1", &port])
    }

    /// Starts a Sentinel (`redis-server <dir>/sentinel.conf --sentinel`) that monitors the
    /// master `master_name` at `127.0.0.1:<master_port>` with a quorum of 2, and declares it
    /// down after 1 s without an answer.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub(crate) fn start_sentinel(master_name: &str, master_port: u16) -> Self {
        let binary = redis_server_binary().unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let mut server = Self::unstarted(binary, &[]);
        server.sentinel = Some((master_name.to_owned(), master_port));
        server.launch_on_free_ports(false)
    }

    /// Starts a server on the port (and, for a cluster node, the bus port) `ports` gives,
    /// asking it for new ones for each attempt.
    fn start_on(extra_args: &[&str], cluster: bool, ports: impl FnMut() -> [u16; 2]) -> Self {
        let binary = redis_server_binary().unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        Self::unstarted(binary, extra_args).launch_with_ports(cluster, ports)
    }

    /// A server not started yet, with its own directory.
    fn unstarted(binary: PathBuf, extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lock-redis-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a directory for redis-server: {e}"));
        Self {
            binary,
            port: 0,
            cluster_port: None,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            sentinel: None,
            dir,
            process: None,
        }
    }

    fn launch_on_free_ports(self, cluster: bool) -> Self {
        self.launch_with_ports(cluster, free_ports)
    }

    fn launch_with_ports(mut self, cluster: bool, mut ports: impl FnMut() -> [u16; 2]) -> Self {
        // Another process may take a free port between our probe and redis binding it;
        // then try other ports (both of them: either may be the one taken).
        let mut last_error = None;
        for _ in 0..5 {
            let [port, bus] = ports();
            self.port = port;
            self.cluster_port = cluster.then_some(bus);
            match self.launch() {
                Ok(()) => return self,
                Err(e) => last_error = Some(e),
            }
        }
        panic!(
            "redis-server did not start: {}; log:\n{}",
            last_error.map_or_else(String::new, |e| e.to_string()),
            self.log()
        );
    }

    fn launch(&mut self) -> std::io::Result<()> {
        if let Some((master, master_port)) = &self.sentinel {
            // A Sentinel rewrites its configuration file, so it gets one of its own; it is
            // kept across restarts (with what the Sentinel learnt), and written anew for
            // another port (a start that found its port taken).
            let conf = self.dir.path().join("sentinel.conf");
            let current = std::fs::read_to_string(&conf).unwrap_or_default();
            if !current.starts_with(&format!("port {}\n", self.port)) {
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n\
                         dir {dir}\n\
                         sentinel monitor {master} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {master} 1000\n\
                         sentinel failover-timeout {master} 10000\n\
                         sentinel parallel-syncs {master} 1\n",
                        port = self.port,
                        dir = self.dir.path().display(),
                    ),
                )?;
            }
            let args = vec![conf.display().to_string(), "--sentinel".to_owned()];
            return self.spawn(&args);
        }
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--dir",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(self.dir.path().display().to_string());
        if let Some(bus) = self.cluster_port {
            args.extend(["--cluster-port".to_owned(), bus.to_string()]);
        }
        args.extend(self.extra_args.iter().cloned());
        self.spawn(&args)
    }

    fn spawn(&mut self, args: &[String]) -> std::io::Result<()> {
        let log = self.dir.path().join("redis.log");
        let process = Guarded::spawn(&self.binary, args, &log, self.dir.path())?;
        let ready = wait_until_ready(self.port, process.pid(), STARTUP);
        if let Err(e) = ready {
            process.stop();
            return Err(e);
        }
        self.process = Some(process);
        Ok(())
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster bus port, for a node of a [`RedisCluster`](super::RedisCluster).
    pub(crate) fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Guarded::pid)
    }

    /// The server's directory (its log is `redis.log` there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// True while the process exists (running or paused).
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(alive)
    }

    /// SIGKILLs the server and waits until it is gone. Harmless if it is not running.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }

    /// SIGSTOPs the server: it keeps its connections but answers nothing.
    ///
    /// # Panics
    ///
    /// When the server is not running.
    pub fn pause(&self) {
        let pid = self.pid().expect("pause: the server is not running");
        signal(pid, libc::SIGSTOP).unwrap_or_else(|e| panic!("SIGSTOP {pid}: {e}"));
    }

    /// SIGCONTs a paused server.
    ///
    /// # Panics
    ///
    /// When the server is not running.
    pub fn resume(&self) {
        let pid = self.pid().expect("resume: the server is not running");
        signal(pid, libc::SIGCONT).unwrap_or_else(|e| panic!("SIGCONT {pid}: {e}"));
    }

    /// Kills the server if it runs and starts a fresh one on the same port, with no data
    /// (there is no persistence).
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.launch() {
            panic!(
                "redis-server did not restart on port {}: {e}; log:\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_taken_bus_port_is_replaced_on_the_next_attempt() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let mut attempts = 0;
        let node = RedisServer::start_on(
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ],
            true,
            || {
                attempts += 1;
                let [port, bus] = free_ports();
                [port, if attempts == 1 { taken_port } else { bus }]
            },
        );
        assert_eq!(
            attempts, 2,
            "the first attempt, on a taken bus port, failed"
        );
        let bus = node.cluster_port().unwrap();
        assert_ne!(bus, taken_port);
        assert!(node.is_running());
        drop(taken);
    }
}
