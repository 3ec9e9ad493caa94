//! [`RedisBackend`]: the [`LockBackend`] implementation.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use lock_core::backend_kit::Driver;
use lock_core::backend_kit::time::{from_unix_millis, monotonic_now, validate_ttl};
use lock_core::{
    Capabilities, Holder, Lease, LeaseInfo, LockBackend, LockError, LockName, Result, async_trait,
};
use redis::{RedisResult, Value};

use crate::BACKEND;
use crate::address::Endpoint;
use crate::connection::{self, Conn};
use crate::errors::{ErrorContext, from_redis, timed_out};
use crate::keys::KeySpace;
use crate::notify::Notifier;
use crate::options::RedisOptions;
use crate::scan;
use crate::scripts::{
    ACQUIRE, FORCE_RELEASE, HEARTBEAT, HEARTBEAT_MANY, INSPECT, Invocation, RELEASE, Reply,
    failure, fence,
};

/// Leases in Redis (one server or a Redis Cluster). Clones share one connection.
///
/// Build it with [`connect`](crate::connect), [`RedisBackend::connect`] or
/// [`RedisBackend::connect_with`]. The connection is tied to
/// the Tokio runtime it was opened on.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    endpoint: Endpoint,
    keys: KeySpace,
    /// The release channel, encoded once.
    channel: String,
    opts: RedisOptions,
    errors: ErrorContext,
    notifier: Notifier,
}

/// This backend's entry in the `leaselock` facade's registry: `redis://`, `rediss://`,
/// `redis+cluster://` and `rediss+cluster://` URLs.
pub const DRIVER: Driver = Driver {
    name: BACKEND,
    schemes: crate::URL_SCHEMES,
    connect: |url| Box::pin(async move { Ok(Arc::new(RedisBackend::connect(&url).await?) as _) }),
};

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("endpoint", &self.inner.endpoint)
            .field("key_prefix", &self.inner.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to the server or cluster at `url` (see the crate docs for the format).
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] for a bad URL, refused credentials or a TLS mismatch;
    /// [`LockError::Unavailable`] when the server cannot be reached within the operation
    /// timeout.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url.parse()?).await
    }

    /// Connects with `opts` (parse them from a URL, or build a cluster's with
    /// [`RedisOptions::cluster`], then adjust them with their `with_*` setters).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(opts: RedisOptions) -> Result<Self> {
        let endpoint = opts.endpoint.clone();
        Self::open(endpoint, opts).await
    }

    async fn open(endpoint: Endpoint, opts: RedisOptions) -> Result<Self> {
        let keys = KeySpace::new(&opts.key_prefix)?;
        let channel = keys.channel(endpoint.database());
        let errors = ErrorContext {
            cluster: matches!(endpoint, Endpoint::Cluster(_)),
            key_prefix: opts.key_prefix.clone(),
            channel: channel.clone(),
        };
        let conn = connection::open(&endpoint, &opts, &errors).await?;
        let notifier = Notifier::new(endpoint.nodes(), channel.clone(), &opts, errors.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                endpoint,
                keys,
                channel,
                opts,
                errors,
                notifier,
            }),
        })
    }

    /// The prefix of every key this backend uses.
    pub fn key_prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// The options in force (after the URL's query was applied).
    pub fn options(&self) -> &RedisOptions {
        &self.inner.opts
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.endpoint, Endpoint::Cluster(_))
    }

    /// True while the release subscription is up, so
    /// [`wait_for_change`](LockBackend::wait_for_change) wakes on a release instead of
    /// polling. It starts in the background the first time this backend finds a lock held
    /// or waits (a process that never contends never subscribes, so its releases fan out to
    /// nobody), and is usually up within a few milliseconds; a waiter that started before
    /// it was up looks again the moment it is.
    pub fn is_subscribed(&self) -> bool {
        self.inner.notifier.is_live()
    }

    /// The Redis keys of `name`: its lease and its fence counter. Both share one Redis
    /// Cluster hash slot.
    pub fn keys_of(&self, name: &LockName) -> (String, String) {
        (
            self.inner.keys.lease_key(name),
            self.inner.keys.fence_key(name),
        )
    }

    /// Runs one round trip, bounded by the operation timeout.
    pub(crate) async fn run<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        let limit = self.inner.opts.operation_timeout;
        match tokio::time::timeout(limit, request).await {
            Ok(result) => result.map_err(|e| from_redis(e, &self.inner.errors)),
            Err(_) => Err(timed_out(operation, limit)),
        }
    }

    pub(crate) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Runs `script`, returning its raw reply.
    async fn eval(&self, operation: &'static str, script: Invocation) -> Result<Value> {
        let mut conn = self.conn();
        self.run(operation, script.invoke(&mut conn)).await
    }

    /// `inspect` of the lease stored at `key`, checking it belongs to `expected` (if given).
    pub(crate) async fn inspect_key(
        &self,
        key: &str,
        expected: Option<&LockName>,
    ) -> Result<Option<LeaseInfo>> {
        let mut script = INSPECT.call(1);
        script.arg(key);
        let reply = Reply::parse("inspect", self.eval("inspect", script).await?)?;
        match reply.status() {
            "free" => Ok(None),
            "ok" => {
                let raw_name = reply.text(0)?;
                let name = LockName::new(&raw_name).map_err(|e| {
                    LockError::corrupt(BACKEND, format!("the lease {key} names no valid lock: {e}"))
                })?;
                if self.inner.keys.lease_key(&name) != key
                    || expected.is_some_and(|want| *want != name)
                {
                    return Err(LockError::corrupt(
                        BACKEND,
                        format!("the lease {key} claims to be for another lock, {raw_name:?}"),
                    ));
                }
                Ok(Some(LeaseInfo::new(
                    name,
                    reply.text(1)?,
                    reply.number(2, "pid")?,
                    reply.text(3)?,
                    reply.number(4, "fence")?,
                    from_unix_millis(reply.millis(5, "acquired_at")?),
                    from_unix_millis(reply.millis(6, "expires_at")?),
                )))
            }
            _ => Err(reply.into_error()),
        }
    }

    /// The lease renewed by a heartbeat script's reply for it.
    fn renewed_from(
        script: &'static str,
        lease: &Lease,
        reply: Value,
        sent: std::time::Instant,
        ttl: Duration,
    ) -> Result<Lease> {
        match reply {
            Value::Int(0) => Err(LockError::LeaseLost {
                name: lease.name.clone(),
            }),
            Value::Int(expires_at) if expires_at > 0 => {
                Ok(lease.renewed(from_unix_millis(expires_at), sent, ttl))
            }
            other => Err(failure(script, other)),
        }
    }
}

/// Milliseconds for `PX`, rounded up so the store never expires a lease early.
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[async_trait]
impl LockBackend for RedisBackend {
    // The hot-path operations trace at debug level, so that an application logging at info
    // does not pay for a span per call.
    #[tracing::instrument(name = "try_acquire", level = "debug", skip_all, fields(lock = %name))]
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        validate_ttl(ttl)?;
        let (lease_key, fence_key) = self.inner.keys.lease_and_fence_keys(name);
        let mut script = ACQUIRE.call(2);
        script
            .arg(lease_key)
            .arg(fence_key)
            .arg(holder.token.to_hex())
            .arg(&holder.label)
            .arg(holder.pid)
            .arg(&holder.host)
            .arg(ttl_millis(ttl))
            .arg(name.as_str());
        let sent = monotonic_now();
        match self.eval("acquire", script).await? {
            Value::Array(items) => match items[..] {
                [Value::Int(fence_value), Value::Int(expires_at)] => Ok(Some(Lease::new(
                    name.clone(),
                    holder.clone(),
                    fence("acquire", fence_value)?,
                    from_unix_millis(expires_at),
                    sent,
                    ttl,
                ))),
                _ => Err(failure("acquire", Value::Array(items))),
            },
            Value::Int(0) => {
                // Contention: this process is likely to wait for the name next.
                self.inner.notifier.start();
                Ok(None)
            }
            other => Err(failure("acquire", other)),
        }
    }

    #[tracing::instrument(name = "heartbeat", level = "debug", skip_all, fields(lock = %lease.name))]
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_ttl(ttl)?;
        let mut script = HEARTBEAT.call(1);
        script
            .arg(self.inner.keys.lease_key(&lease.name))
            .arg(lease.holder.token.to_hex())
            .arg(ttl_millis(ttl));
        let sent = monotonic_now();
        let reply = self.eval("heartbeat", script).await?;
        Self::renewed_from("heartbeat", lease, reply, sent, ttl)
    }

    #[tracing::instrument(name = "release", level = "debug", skip_all, fields(lock = %lease.name))]
    async fn release(&self, lease: &Lease) -> Result<bool> {
        let mut script = RELEASE.call(1);
        script
            .arg(self.inner.keys.lease_key(&lease.name))
            .arg(lease.holder.token.to_hex())
            .arg(self.inner.channel.as_str())
            .arg(lease.name.as_str());
        match self.eval("release", script).await? {
            Value::Int(1) => {
                // Waiters on this backend need not wait for the notification's round trip.
                self.inner.notifier.record_own_release(&lease.name);
                Ok(true)
            }
            Value::Int(0) => Ok(false),
            other => Err(failure("release", other)),
        }
    }

    #[tracing::instrument(name = "inspect", skip_all, fields(lock = %name))]
    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        self.inspect_key(&self.inner.keys.lease_key(name), Some(name))
            .await
    }

    #[tracing::instrument(name = "force_release", skip_all, fields(lock = %name))]
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let (lease_key, fence_key) = self.inner.keys.lease_and_fence_keys(name);
        let mut script = FORCE_RELEASE.call(2);
        script
            .arg(lease_key)
            .arg(fence_key)
            .arg(self.inner.channel.as_str())
            .arg(name.as_str());
        let reply = Reply::parse("force_release", self.eval("force_release", script).await?)?;
        if let Some(problem) = reply.optional_text(0)? {
            tracing::warn!(lock = %name, %problem, "force_release replaced an unusable fence counter");
        }
        match reply.status() {
            "ok" => Ok(true),
            "free" => Ok(false),
            "cleared" => {
                tracing::warn!(lock = %name, "force_release removed an unreadable lease record");
                Ok(false)
            }
            _ => Err(reply.into_error()),
        }
    }

    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        self.inner
            .notifier
            .wait(name, since, max, self.inner.opts.fallback_poll)
            .await;
    }

    #[tracing::instrument(name = "list", skip_all, fields(prefix = %prefix))]
    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
        let pattern = self.inner.keys.lease_pattern(prefix);
        let keys = scan::lease_keys(self, &pattern).await?;
        let infos = join_all(keys.iter().map(|key| self.inspect_key(key, None))).await;
        let mut out = Vec::with_capacity(infos.len());
        for (key, info) in keys.iter().zip(infos) {
            match info {
                Ok(Some(info)) if info.name.as_str().starts_with(prefix) => out.push(info),
                Ok(_) => {}
                // One damaged or foreign record must not hide every other lease (nor break
                // `lockctl status`); inspecting or force-releasing that name reports it.
                Err(error @ LockError::Corrupt { .. }) => {
                    tracing::warn!(%key, %error, "skipping an unreadable lease record while listing");
                }
                Err(error) => return Err(error),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn heartbeat_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Lease>> {
        if let Err(LockError::InvalidTtl { ttl, reason }) = validate_ttl(ttl) {
            return leases
                .iter()
                .map(|_| Err(LockError::InvalidTtl { ttl, reason }))
                .collect();
        }
        if self.is_cluster() || leases.len() < 2 {
            // Keys of a batch may lie on different nodes: send them concurrently.
            return join_all(leases.iter().map(|lease| self.heartbeat(lease, ttl))).await;
        }
        let mut script = HEARTBEAT_MANY.call(leases.len());
        for lease in leases {
            script.arg(self.inner.keys.lease_key(&lease.name));
        }
        script.arg(ttl_millis(ttl));
        for lease in leases {
            script.arg(lease.holder.token.to_hex());
        }
        let sent = monotonic_now();
        let mut conn = self.conn();
        let replies = match self
            .run("heartbeat_many", script.invoke::<Vec<Value>>(&mut conn))
            .await
        {
            Ok(replies) if replies.len() == leases.len() => replies,
            Ok(replies) => {
                let got = replies.len();
                return leases
                    .iter()
                    .map(|_| {
                        Err(LockError::backend(
                            BACKEND,
                            format!(
                                "heartbeat_many answered {got} replies for {} leases",
                                leases.len()
                            ),
                        ))
                    })
                    .collect();
            }
            Err(e) => {
                return leases.iter().map(|_| Err(clone_error(&e))).collect();
            }
        };
        leases
            .iter()
            .zip(replies)
            .map(|(lease, value)| Self::renewed_from("heartbeat_many", lease, value, sent, ttl))
            .collect()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_notifies_release(true)
            .with_shared_across_hosts(true)
            .with_list(true)
            .with_batched_heartbeat(!self.is_cluster())
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

/// The same failure for every lease of a batch (errors are not `Clone`).
fn clone_error(e: &LockError) -> LockError {
    match e {
        LockError::Unavailable { source, .. } => {
            LockError::unavailable(BACKEND, source.to_string())
        }
        LockError::Backend { source, .. } => LockError::backend(BACKEND, source.to_string()),
        LockError::Corrupt { detail, .. } => LockError::corrupt(BACKEND, detail.clone()),
        LockError::Config { detail, .. } => LockError::config(BACKEND, detail.clone()),
        other => LockError::backend(BACKEND, other.to_string()),
    }
}
