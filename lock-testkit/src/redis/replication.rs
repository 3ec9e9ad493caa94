//! Replication: [`RedisReplicaPair`] (a primary and a replica) and [`RedisSentinels`] (the
//! same, watched by three Sentinels that fail over when the primary is lost).

use std::time::{Duration, Instant};

use super::RedisServer;

/// How long a replica may take to sync, or Sentinels to agree on a failover.
const SETTLE: Duration = Duration::from_secs(30);

/// The master name the Sentinels of a [`RedisSentinels`] monitor.
pub const MASTER_NAME: &str = "leaselock-test";

/// A private primary and a replica of it (`--replicaof`), both without persistence.
/// Dropping it stops both.
///
/// ```no_run
/// use lock_testkit::redis::RedisReplicaPair;
///
/// let pair = RedisReplicaPair::start(); // the replica is in sync when this returns
/// pair.detach_replica(); // REPLICAOF NO ONE: the replica becomes a primary of its own
/// ```
#[derive(Debug)]
pub struct RedisReplicaPair {
    primary: RedisServer,
    replica: RedisServer,
}

impl RedisReplicaPair {
    /// Starts a primary and a replica and waits until the replica is in sync.
    ///
    /// # Panics
    ///
    /// When no `redis-server` is installed, or the replica does not sync within 30 s.
    pub fn start() -> Self {
        let primary = RedisServer::start();
        let replica = RedisServer::start_replica_of(&primary);
        let pair = Self { primary, replica };
        pair.wait_in_sync();
        pair
    }

    /// The primary.
    pub fn primary(&self) -> &RedisServer {
        &self.primary
    }

    /// The primary, to kill or restart.
    pub fn primary_mut(&mut self) -> &mut RedisServer {
        &mut self.primary
    }

    /// The replica.
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// Waits until the replica's link is up and it has every write the primary has.
    ///
    /// # Panics
    ///
    /// When that does not happen within 30 s.
    pub fn wait_in_sync(&self) {
        let start = Instant::now();
        loop {
            let primary = info(&self.primary, "replication").unwrap_or_default();
            let replica = info(&self.replica, "replication").unwrap_or_default();
            let offset =
                |text: &str, key: &str| field(text, key).and_then(|v| v.parse::<u64>().ok());
            let synced = field(&replica, "master_link_status").as_deref() == Some("up")
                && offset(&primary, "master_repl_offset").is_some()
                && offset(&primary, "master_repl_offset") == offset(&replica, "slave_repl_offset");
            if synced {
                return;
            }
            assert!(
                start.elapsed() < SETTLE,
                "the replica did not sync within {SETTLE:?}: primary {primary:?}, replica {replica:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Makes the replica a primary of its own (`REPLICAOF NO ONE`): it keeps what it had
    /// and gets nothing the old primary is written from now on, as a replica that lagged and
    /// was promoted.
    ///
    /// # Panics
    ///
    /// When the replica does not answer.
    pub fn detach_replica(&self) {
        let mut conn = connect(&self.replica).expect("the replica answers");
        redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .exec(&mut conn)
            .unwrap_or_else(|e| panic!("REPLICAOF NO ONE: {e}"));
    }
}

/// A primary, a replica and three Sentinels (`redis-server --sentinel`) that monitor them as
/// [`MASTER_NAME`] with a quorum of 2, declaring a server down after 1 s without an answer.
/// Every process is private, on free loopback ports, and stopped when this is dropped (or
/// by its guardian if the test binary dies).
///
/// ```no_run
/// use lock_testkit::redis::RedisSentinels;
///
/// let mut group = RedisSentinels::start();
/// let url = group.url(); // redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/leaselock-test
/// let old = group.primary_port();
/// group.failover(); // SENTINEL FAILOVER: the replica becomes the primary
/// assert_ne!(group.primary_port(), old);
/// ```
#[derive(Debug)]
pub struct RedisSentinels {
    servers: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinels {
    /// Starts the group and waits until every Sentinel knows the primary, the replica and
    /// the two other Sentinels.
    ///
    /// # Panics
    ///
    /// When no `redis-server` is installed or the group does not settle within 30 s.
    pub fn start() -> Self {
        let pair = RedisReplicaPair::start();
        let master_port = pair.primary.port();
        let sentinels = (0..3)
            .map(|_| RedisServer::start_sentinel(MASTER_NAME, master_port))
            .collect();
        let group = Self {
            servers: vec![pair.primary, pair.replica],
            sentinels,
        };
        group.wait_until_settled(master_port);
        group
    }

    /// `redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/<MASTER_NAME>`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The Sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The primary and the replica, in the order they were started (roles change with
    /// failovers: see [`primary_port`](Self::primary_port)).
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The port of the server the Sentinels name as primary now.
    ///
    /// # Panics
    ///
    /// When no Sentinel answers.
    pub fn primary_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| master_addr(s).ok())
            .unwrap_or_else(|| panic!("no Sentinel names a primary"))
    }

    /// The server the Sentinels name as primary now.
    pub fn primary(&self) -> &RedisServer {
        let port = self.primary_port();
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .unwrap_or_else(|| panic!("the primary on port {port} is not one of ours"))
    }

    /// Asks a Sentinel to fail over at once (`SENTINEL FAILOVER`), and waits until the
    /// Sentinels name the other server, which answers as a primary.
    ///
    /// # Panics
    ///
    /// When the failover does not complete within 30 s.
    pub fn failover(&self) {
        let old = self.primary_port();
        let mut conn = connect(&self.sentinels[0]).expect("the Sentinel answers");
        redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .exec(&mut conn)
            .unwrap_or_else(|e| panic!("SENTINEL FAILOVER: {e}"));
        self.wait_for_new_primary(old);
    }

    /// SIGKILLs the primary; returns its port. The Sentinels notice within about a second
    /// and promote the replica (see [`wait_for_new_primary`](Self::wait_for_new_primary)).
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        if let Some(server) = self.servers.iter_mut().find(|s| s.port() == port) {
            server.kill();
        }
        port
    }

    /// Waits until the Sentinels name a primary other than the one on `old` and it answers
    /// as a primary; returns its port.
    ///
    /// # Panics
    ///
    /// When that does not happen within 30 s.
    pub fn wait_for_new_primary(&self, old: u16) -> u16 {
        let start = Instant::now();
        loop {
            let named: Vec<u16> = self
                .sentinels
                .iter()
                .filter_map(|s| master_addr(s).ok())
                .collect();
            if let Some(&port) = named.first()
                && port != old
                && named.iter().all(|p| *p == port)
                && let Some(server) = self.servers.iter().find(|s| s.port() == port)
                && field(&info(server, "replication").unwrap_or_default(), "role").as_deref()
                    == Some("master")
            {
                return port;
            }
            assert!(
                start.elapsed() < SETTLE,
                "no failover from port {old} within {SETTLE:?}: the Sentinels name {named:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_until_settled(&self, master_port: u16) {
        let start = Instant::now();
        loop {
            let settled = self.sentinels.iter().all(|s| {
                let Ok(mut conn) = connect(s) else {
                    return false;
                };
                let master: redis::RedisResult<Vec<String>> = redis::cmd("SENTINEL")
                    .arg("MASTER")
                    .arg(MASTER_NAME)
                    .query(&mut conn);
                let master = master.unwrap_or_default();
                let value = |key: &str| {
                    master
                        .iter()
                        .position(|k| k == key)
                        .and_then(|i| master.get(i + 1))
                        .cloned()
                        .unwrap_or_default()
                };
                value("port") == master_port.to_string()
                    && value("num-slaves") == "1"
                    && value("num-other-sentinels") == "2"
                    && !value("flags").contains("down")
            });
            if settled {
                return;
            }
            assert!(
                start.elapsed() < SETTLE,
                "the Sentinels did not settle within {SETTLE:?}; logs:\n{}",
                self.sentinels
                    .iter()
                    .map(RedisServer::log)
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn connect(server: &RedisServer) -> redis::RedisResult<redis::Connection> {
    let conn =
        redis::Client::open(server.url())?.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(conn)
}

/// `INFO <section>` of `server`.
fn info(server: &RedisServer, section: &str) -> redis::RedisResult<String> {
    redis::cmd("INFO").arg(section).query(&mut connect(server)?)
}

/// The value of `key` in `INFO` text.
fn field(info: &str, key: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// The port of the primary a Sentinel names.
fn master_addr(sentinel: &RedisServer) -> redis::RedisResult<u16> {
    let (_host, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(MASTER_NAME)
        .query(&mut connect(sentinel)?)?;
    Ok(port)
}
