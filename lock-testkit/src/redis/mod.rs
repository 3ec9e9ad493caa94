//! Private Redis servers for tests.
//!
//! - [`RedisServer`]: one `redis-server` process on a free loopback port, without
//!   persistence, that a test can kill, pause, resume and restart. It is stopped by pid when
//!   dropped, also when a test panics, and a guardian shell kills it if the test process dies
//!   without dropping it (a `static` shared server, a crash), so no server outlives its test
//!   binary.
//! - [`RedisCluster`]: several such servers joined into a Redis Cluster, one master each.
//! - [`RedisReplicaPair`]: a primary and a replica of it; [`RedisSentinels`]: the same,
//!   watched by three `redis-server --sentinel` processes that fail over when asked to or
//!   when the primary dies. Every process has the same guardian as a [`RedisServer`].
//! - [`PrefixSnapshot`]: the conformance suite's write-loss hook for Redis: checkpoints the
//!   keys under one prefix (`DUMP`) and rolls them back (`RESTORE`), on one server or every
//!   master of a cluster.
//! - [`TestRedis`]: the server a test suite should use: `LOCK_TEST_REDIS_URL` if set, else a
//!   private `redis-server`, else a container (testcontainers) when the `docker` command is
//!   installed and its daemon answers; otherwise it panics with how to install Redis. A
//!   container is removed when the test binary exits, even if its `TestRedis` (kept in a
//!   `static`) is never dropped.
//! - [`shared`] and [`shared_cluster`]: one of each per test binary, started on first use.
//!
//! Everything here hands out URLs and is synchronous, so it can start from a `OnceLock`
//! shared by every test of a binary; connect a backend in each test, since each
//! `#[tokio::test]` has its own runtime and a connection belongs to the runtime it was
//! opened on.

mod cluster;
mod docker;
mod process;
mod replication;
mod server;
mod snapshot;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use cluster::RedisCluster;
pub use docker::DockerRedis;
pub use replication::{MASTER_NAME, RedisReplicaPair, RedisSentinels};
pub use server::RedisServer;
pub use snapshot::PrefixSnapshot;

/// The environment variable naming an existing server for [`TestRedis`].
pub const URL_ENV: &str = "LOCK_TEST_REDIS_URL";

/// What to do when no Redis server can be had.
pub const INSTALL_HINT: &str = "the Redis tests need a redis-server binary: install it \
    (Debian/Ubuntu: `apt-get install redis-server`; macOS: `brew install redis`), or set \
    LOCK_TEST_REDIS_URL=redis://host:port to use an existing server, or install the docker \
    command and run a Docker daemon (then a redis container is started)";

/// The panic message of [`TestRedis::from_env_or_start`] when it found nothing to use:
/// what it tried, why Docker could not be used (`docker`), and [`INSTALL_HINT`].
fn no_server_message(docker: &str) -> String {
    format!(
        "no Redis server for the tests: {URL_ENV} is not set, no redis-server binary was \
         found (on PATH, or at LOCK_TEST_REDIS_SERVER), and Docker cannot be used ({docker}). \
         {INSTALL_HINT}"
    )
}

/// A key prefix no other test (or test run) uses: `"{tag}:{pid}:{n}:"`.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{tag}:{}:{nanos:x}:{n}:", std::process::id())
}

/// The Redis server a test binary should use.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestRedis {
    /// The server named by `LOCK_TEST_REDIS_URL`.
    External(String),
    /// A private `redis-server` process.
    Local(RedisServer),
    /// A container started with testcontainers.
    Docker(Box<DockerRedis>),
}

impl TestRedis {
    /// `LOCK_TEST_REDIS_URL` if set; else a private `redis-server`; else a container when
    /// the `docker` command is installed and its daemon answers a ping within a few seconds.
    ///
    /// # Panics
    ///
    /// When none of these is possible, with a message saying how to install Redis. Tests
    /// never skip silently.
    pub fn from_env_or_start() -> Self {
        if let Ok(url) = std::env::var(URL_ENV)
            && !url.trim().is_empty()
        {
            return Self::External(url.trim().to_owned());
        }
        if process::redis_server_binary().is_some() {
            return Self::Local(RedisServer::start());
        }
        let docker = match docker::usable() {
            Ok(()) => return Self::Docker(Box::new(DockerRedis::start())),
            Err(why) => why,
        };
        panic!("{}", no_server_message(&docker));
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        match self {
            Self::External(url) => url.clone(),
            Self::Local(server) => server.url(),
            Self::Docker(container) => container.url(),
        }
    }

    /// The private process, when this is one (fault tests need it).
    pub fn server(&self) -> Option<&RedisServer> {
        match self {
            Self::Local(server) => Some(server),
            _ => None,
        }
    }
}

/// The [`TestRedis`] of this test binary, started on first use and shared by all its
/// tests (never dropped: its guardian stops a private server when the binary exits).
///
/// # Panics
///
/// As [`TestRedis::from_env_or_start`].
pub fn shared() -> &'static TestRedis {
    static REDIS: OnceLock<TestRedis> = OnceLock::new();
    REDIS.get_or_init(TestRedis::from_env_or_start)
}

/// The 3-master [`RedisCluster`] of this test binary, started on first use and shared by
/// all its tests.
///
/// # Panics
///
/// As [`RedisCluster::start`].
pub fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_any_server_the_message_says_what_was_tried_and_how_to_install() {
        let message = no_server_message("`\"docker\"` got no answer within 5s");
        for needle in [
            URL_ENV,
            "redis-server",
            "got no answer within 5s",
            "apt-get install redis-server",
            "brew install redis",
            "Docker daemon",
        ] {
            assert!(message.contains(needle), "{needle:?} missing: {message}");
        }
    }
}
