//! A Redis container for machines without `redis-server` but with a Docker daemon.

use testcontainers::Container;
use testcontainers::runners::SyncRunner;
use testcontainers_modules::redis::Redis;

/// True when a Docker daemon looks reachable (`DOCKER_HOST` set, or the default socket).
pub(crate) fn daemon_reachable() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}

/// A `redis` container, removed when dropped.
pub struct DockerRedis {
    container: Container<Redis>,
    port: u16,
}

impl std::fmt::Debug for DockerRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRedis")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl DockerRedis {
    /// Starts a container (on a thread of its own, since the blocking runner cannot run
    /// inside a Tokio runtime).
    ///
    /// # Panics
    ///
    /// When the container does not start.
    pub(crate) fn start() -> Self {
        std::thread::spawn(|| {
            let container = Redis::default()
                .start()
                .unwrap_or_else(|e| panic!("starting a Redis container failed: {e}"));
            let port = container
                .get_host_port_ipv4(6379)
                .unwrap_or_else(|e| panic!("the Redis container has no port: {e}"));
            Self { container, port }
        })
        .join()
        .unwrap_or_else(|_| panic!("starting a Redis container panicked"))
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        let _ = &self.container;
        format!("redis://127.0.0.1:{}", self.port)
    }
}
