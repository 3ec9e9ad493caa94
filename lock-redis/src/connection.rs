//! Opening the command connection (a [`ConnectionManager`] for one server, a cluster
//! connection for a Redis Cluster) with bounded timeouts and retries.

use std::collections::HashMap;
use std::time::Duration;

use lock_core::{LockError, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::BACKEND;
use crate::address::Endpoint;
use crate::errors::{ErrorContext, from_redis, timed_out};
use crate::options::RedisOptions;

/// A cheap-to-clone handle on the command connection.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, reconnecting by itself.
    Standalone(ConnectionManager),
    /// A Redis Cluster, routing each command by its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to `endpoint` and checks with a `PING` that commands are accepted (so missing
/// credentials show up here, not at the first lock operation). Fails within
/// `opts.operation_timeout`, plus a short probe when TLS fails.
pub(crate) async fn open(
    endpoint: &Endpoint,
    opts: &RedisOptions,
    context: &ErrorContext,
) -> Result<Conn> {
    if endpoint.uses_tls() {
        install_tls_provider();
    }
    let connecting = async {
        let mut conn = match endpoint {
            Endpoint::Standalone(url) => {
                let client =
                    redis::Client::open(url.clone()).map_err(|e| from_redis(e, context))?;
                let manager = ConnectionManager::new_with_config(client, manager_config(opts))
                    .await
                    .map_err(|e| connect_error(endpoint, e, context))?;
                Conn::Standalone(manager)
            }
            Endpoint::Cluster(nodes) => {
                let client = cluster_builder(nodes.clone(), opts)
                    .build()
                    .map_err(|e| from_redis(e, context))?;
                let conn = client
                    .get_async_connection()
                    .await
                    .map_err(|e| connect_error(endpoint, e, context))?;
                Conn::Cluster(conn)
            }
        };
        redis::cmd("PING")
            .query_async::<Value>(&mut conn)
            .await
            .map_err(|e| from_redis(e, context))?;
        warn_if_evicting(&mut conn).await;
        Ok(conn)
    };
    let result = tokio::time::timeout(opts.operation_timeout, connecting)
        .await
        .unwrap_or_else(|_| Err(timed_out("connecting", opts.operation_timeout)));
    match result {
        Err(LockError::Unavailable { .. }) if endpoint.uses_tls() => {
            if let Some(plain) = plain_redis_among(endpoint).await {
                return Err(LockError::config(
                    BACKEND,
                    format!(
                        "the server at {plain} answers plain Redis, not TLS; use redis:// \
                         instead of rediss:// (or enable TLS on the server)"
                    ),
                ));
            }
            result
        }
        other => other,
    }
}

/// Logs a warning when the server may evict live leases to free memory (its
/// `maxmemory-policy` is not `noeviction`). Many users may not run `CONFIG` (an ACL, a
/// managed service): then nothing is checked.
async fn warn_if_evicting(conn: &mut Conn) {
    let config: redis::RedisResult<HashMap<String, String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    match config {
        Ok(config) => {
            if let Some(warning) = config
                .get("maxmemory-policy")
                .and_then(|p| eviction_warning(p))
            {
                tracing::warn!("{warning}");
            }
        }
        Err(error) => {
            tracing::debug!(%error, "cannot read maxmemory-policy; not checking for eviction");
        }
    }
}

/// What is wrong with a server whose `maxmemory-policy` is `policy`, if anything.
fn eviction_warning(policy: &str) -> Option<String> {
    let evicts = if policy.starts_with("volatile-") {
        "keys with an expiry, which every live lease is"
    } else if policy.starts_with("allkeys-") {
        "any key, live leases and fence counters included"
    } else {
        return None;
    };
    Some(format!(
        "the Redis server's maxmemory-policy is {policy}: once it reaches maxmemory it evicts \
         {evicts}, freeing a lock while its holder still works; set maxmemory-policy \
         noeviction on the server that keeps the locks"
    ))
}

/// The first node of `endpoint` that answers a plain-text `PING`, if any: a TLS client
/// talking to a plain server just sees its handshake go unanswered.
async fn plain_redis_among(endpoint: &Endpoint) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for node in endpoint.nodes() {
        let (Some(host), Some(port)) =
            (node.host_str(), node.port_or_known_default().or(Some(6379)))
        else {
            continue;
        };
        let address = format!("{host}:{port}");
        let probe = async {
            let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut reply = [0_u8; 16];
            let n = stream.read(&mut reply).await.ok()?;
            let reply = &reply[..n];
            (reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH")).then_some(())
        };
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(300), probe).await {
            return Some(address);
        }
    }
    None
}

fn manager_config(opts: &RedisOptions) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.connect_timeout))
        .set_response_timeout(Some(opts.response_timeout))
        .set_number_of_retries(opts.reconnect_retries)
        .set_min_delay(opts.reconnect_max_delay.min(Duration::from_millis(50)))
        .set_max_delay(opts.reconnect_max_delay)
}

fn cluster_builder(nodes: Vec<url::Url>, opts: &RedisOptions) -> ClusterClientBuilder {
    let max_wait = u64::try_from(opts.reconnect_max_delay.as_millis()).unwrap_or(u64::MAX);
    ClusterClientBuilder::new(nodes)
        .connection_timeout(opts.connect_timeout)
        .response_timeout(opts.response_timeout)
        .overall_response_timeout(Some(opts.operation_timeout))
        .retries(u32::try_from(opts.reconnect_retries).unwrap_or(u32::MAX))
        .min_retry_wait(max_wait.min(10))
        .max_retry_wait(max_wait)
}

/// A failed first connection: TLS spoken to a plain server (or the reverse), or a server
/// certificate this host does not trust, is a configuration problem, not an outage.
fn connect_error(
    endpoint: &Endpoint,
    error: redis::RedisError,
    context: &ErrorContext,
) -> LockError {
    let text = error.to_string();
    if endpoint.uses_tls() && text.to_ascii_lowercase().contains("certificate") {
        return LockError::config(
            BACKEND,
            format!(
                "the server's TLS certificate was not accepted ({text}); give the server a \
                 certificate for its host name from a CA this host trusts, or, for a test \
                 server only, append #insecure to the rediss:// URL to skip verification"
            ),
        );
    }
    let tls_mismatch = endpoint.uses_tls()
        && [
            "InvalidContentType",
            "CorruptMessage",
            "InvalidMessage",
            "tls",
            "TLS",
            "SSL",
        ]
        .iter()
        .any(|needle| text.contains(needle));
    if tls_mismatch {
        return LockError::config(
            BACKEND,
            format!(
                "the TLS handshake with {endpoint:?} failed ({text}); if the server does not \
                 speak TLS, use redis:// instead of rediss://"
            ),
        );
    }
    from_redis(error, context)
}

/// `rediss://` needs a process-wide rustls crypto provider; this crate builds with `ring`.
fn install_tls_provider() {
    // Fails only if a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_evicting_policies_are_warned_about() {
        assert_eq!(eviction_warning("noeviction"), None);
        for policy in [
            "volatile-lru",
            "volatile-ttl",
            "allkeys-lru",
            "allkeys-random",
        ] {
            let warning = eviction_warning(policy).unwrap();
            assert!(
                warning.contains(policy) && warning.contains("maxmemory-policy noeviction"),
                "{warning}"
            );
        }
    }
}
