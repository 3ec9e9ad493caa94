//! Opening the command connection (a [`ConnectionManager`] for one server or for the
//! primary Sentinels name, a cluster connection for a Redis Cluster) with bounded timeouts
//! and retries.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use lock_core::{LockError, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, TlsMode, Value,
};

use crate::BACKEND;
use crate::address::{Endpoint, SentinelEndpoint};
use crate::errors::{ErrorContext, from_redis, timed_out};
use crate::options::RedisOptions;
use crate::scripts::Invocation;

/// A cheap-to-clone handle on the command connection.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, reconnecting by itself.
    Standalone(ConnectionManager),
    /// A Redis Cluster, routing each command by its key's slot.
    Cluster(ClusterConnection),
    /// The primary the Sentinels name, asked again after a failover.
    Sentinel(Arc<SentinelConn>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => {
                let c = Arc::clone(c);
                Box::pin(async move {
                    c.following_failovers(|mut primary| async move {
                        primary.req_packed_command(cmd).await
                    })
                    .await
                })
            }
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
            Self::Sentinel(c) => {
                let c = Arc::clone(c);
                Box::pin(async move {
                    c.following_failovers(|mut primary| async move {
                        primary.req_packed_commands(pipeline, offset, count).await
                    })
                    .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.primary().1.get_db(),
        }
    }
}

impl Conn {
    /// Runs `script`, then `WAIT replicas timeout` on the same connection (one round trip
    /// on a single server); returns the script's reply and how many replicas confirmed.
    /// `key` is one of the script's keys, to find the node on a cluster.
    pub(crate) async fn invoke_and_wait(
        &mut self,
        script: &Invocation<'_>,
        key: &[u8],
        replicas: usize,
        timeout: Duration,
    ) -> RedisResult<(Value, i64)> {
        let timeout_ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Self::Cluster(conn) = self {
            // The WAIT must reach the master that ran the script: the one owning its slot.
            let reply: Value = script.invoke(conn).await?;
            let route = Route::with_key(key, SlotAddr::Master);
            let mut wait = redis::cmd("WAIT");
            wait.arg(replicas).arg(timeout_ms);
            let acked = conn
                .route_command(
                    wait,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await?;
            return Ok((reply, redis::from_redis_value(acked)?));
        }
        let with_wait = |script: Cmd| {
            let mut pipe = redis::pipe();
            pipe.add_command(script)
                .cmd("WAIT")
                .arg(replicas)
                .arg(timeout_ms);
            pipe
        };
        let first = with_wait(script.command().clone());
        match first.query_async(self).await {
            Err(error) => match script.instead(&error, self).await {
                Some(retry) => with_wait(retry).query_async(self).await,
                None => Err(error),
            },
            done => done,
        }
    }
}

/// The connection to the primary the Sentinels name: a [`ConnectionManager`] (which
/// reconnects to the same address by itself), replaced when a command meets a replica
/// (`READONLY`) or cannot reach the server, and the Sentinels name another primary.
pub(crate) struct SentinelConn {
    sentinel: tokio::sync::Mutex<Sentinel>,
    master: String,
    node: SentinelNodeConnectionInfo,
    config: ConnectionManagerConfig,
    /// The primary in use, and how many times it was replaced.
    current: RwLock<(u64, ConnectionManager, Client)>,
}

impl SentinelConn {
    async fn open(endpoint: &SentinelEndpoint, opts: &RedisOptions) -> RedisResult<Self> {
        let mut sentinel = Sentinel::build(endpoint.sentinels.clone())?;
        let node_info = endpoint.node.clone().into_connection_info()?;
        let mut node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(node_info.redis_settings().clone());
        if endpoint.node.scheme() == "rediss" {
            node = node.set_tls_mode(if endpoint.node.fragment() == Some("insecure") {
                TlsMode::Insecure
            } else {
                TlsMode::Secure
            });
        }
        let config = manager_config(opts);
        let client = sentinel
            .async_master_for(&endpoint.master, Some(&node))
            .await?;
        let manager = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
        Ok(Self {
            sentinel: tokio::sync::Mutex::new(sentinel),
            master: endpoint.master.clone(),
            node,
            config,
            current: RwLock::new((0, manager, client)),
        })
    }

    /// The primary in use: its generation and connection.
    fn primary(&self) -> (u64, ConnectionManager) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (current.0, current.1.clone())
    }

    /// A client of the primary the Sentinels name now (for the release subscription).
    pub(crate) async fn primary_client(&self) -> RedisResult<Client> {
        let mut sentinel = self.sentinel.lock().await;
        sentinel
            .async_master_for(&self.master, Some(&self.node))
            .await
    }

    /// Runs `request` on the primary. When it meets a replica (`READONLY`: nothing was
    /// written) or cannot reach the server, asks the Sentinels again and, if they name
    /// another primary, switches to it; a `READONLY` request is then sent again (a request
    /// whose connection failed may have run, so it is not: the caller sees the error and
    /// the next request goes to the new primary).
    async fn following_failovers<T, F, Fut>(&self, request: F) -> RedisResult<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, primary) = self.primary();
        match request(primary).await {
            Err(error) if follows_failover(&error) => {
                let switched = self.rediscover(generation).await;
                if error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
                    && matches!(switched, Ok(true))
                {
                    return request(self.primary().1).await;
                }
                Err(error)
            }
            other => other,
        }
    }

    /// Asks the Sentinels for the primary, unless another request already switched since
    /// `seen`; returns whether the connection now goes to another server.
    async fn rediscover(&self, seen: u64) -> RedisResult<bool> {
        let mut sentinel = self.sentinel.lock().await;
        if self.primary().0 != seen {
            return Ok(true);
        }
        let client = sentinel
            .async_master_for(&self.master, Some(&self.node))
            .await?;
        let same = {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            current.2.get_connection_info().addr() == client.get_connection_info().addr()
        };
        if same {
            return Ok(false);
        }
        let manager =
            ConnectionManager::new_with_config(client.clone(), self.config.clone()).await?;
        tracing::info!(master = %self.master, address = %client.get_connection_info().addr(), "the Sentinels name a new primary; switching to it");
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = (seen + 1, manager, client);
        Ok(true)
    }
}

/// An error after which the primary may have changed: a replica refused a write, or the
/// server could not be reached.
fn follows_failover(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
    ) || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
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
            Endpoint::Sentinel(sentinel) => {
                let conn = SentinelConn::open(sentinel, opts)
                    .await
                    .map_err(|e| sentinel_error(sentinel, e, endpoint, context))?;
                Conn::Sentinel(Arc::new(conn))
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

/// A failed first connection through Sentinels: no Sentinel answers, or none names a
/// primary by that name, is `Unavailable` with what was asked; anything else as
/// [`connect_error`].
fn sentinel_error(
    sentinel: &SentinelEndpoint,
    error: RedisError,
    endpoint: &Endpoint,
    context: &ErrorContext,
) -> LockError {
    match error.kind() {
        ErrorKind::MasterNameNotFoundBySentinel | ErrorKind::NoValidReplicasFoundBySentinel => {
            LockError::unavailable(
                BACKEND,
                format!(
                    "no Sentinel of {endpoint:?} names a reachable primary called {:?} ({error}); \
                     check the master name in the URL, or wait for a failover to finish",
                    sentinel.master
                ),
            )
        }
        _ => connect_error(endpoint, error, context),
    }
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
