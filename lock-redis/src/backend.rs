//! [`RedisBackend`]: the [`LockBackend`] implementation.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use lock_core::backend_kit::Driver;
use lock_core::backend_kit::batch::all_failed;
use lock_core::backend_kit::permits::{limit_mismatch, validate_limit};
use lock_core::backend_kit::time::{from_unix_millis, monotonic_now, validate_ttl};
use lock_core::{
    Capabilities, Holder, Lease, LeaseInfo, LockBackend, LockError, LockName, OwnerToken, Result,
    async_trait,
};
use redis::{RedisResult, Value};

use crate::BACKEND;
use crate::address::Endpoint;
use crate::connection::{self, Conn};
use crate::errors::{ErrorContext, from_redis, timed_out};
use crate::functions::Scripting;
use crate::keys::{FENCE, KeySpace, LEASE, QUEUE};
use crate::notify::{NodeSource, Notifier, Registration};
use crate::options::RedisOptions;
use crate::scan;
use crate::scripts::{
    ACQUIRE, ACQUIRE_PERMIT, FORCE_RELEASE, HEARTBEAT, HEARTBEAT_MANY, INSPECT, Invocation,
    PASS_ON, REGISTER, RELEASE, Reply, failure, fence,
};

/// Leases in Redis (one server, the primary Sentinels name, or a Redis Cluster). Clones
/// share one connection.
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
    /// This backend value's id as a waiting client.
    client_id: String,
    /// The acquire scripts' last argument for each way of registering (`-`, `w` or `q`),
    /// then this client as a member of a queue (see [`member`](Self::member)).
    client_args: [String; 3],
    /// This client as a member of a queue: `1` when a publication on its channel that
    /// nobody hears proves it gone (its subscription is on the one server the publications
    /// reach: not so on a cluster, whose publications count one node's listeners, nor
    /// behind Sentinel, where the subscription may still be on the old primary), else `0`;
    /// then its id.
    member: String,
    opts: RedisOptions,
    errors: ErrorContext,
    notifier: Notifier,
    /// Whether scripts are called as functions.
    scripting: Scripting,
}

/// This backend's entry in the `leaselock` facade's registry: `redis://`, `rediss://`,
/// `redis+cluster://`, `rediss+cluster://`, `redis+sentinel://` and `rediss+sentinel://`
/// URLs.
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
    /// Connects to the server, cluster or Sentinel-managed primary at `url` (see the crate
    /// docs for the format).
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
        opts.validate()?;
        let endpoint = opts.endpoint.clone();
        let keys = KeySpace::new(&opts.key_prefix)?;
        let channel = keys.channel(endpoint.database());
        let wake_prefix = keys.wake_channel_prefix();
        let errors = ErrorContext {
            cluster: matches!(endpoint, Endpoint::Cluster(_)),
            sentinel: matches!(endpoint, Endpoint::Sentinel(_)),
            key_prefix: opts.key_prefix.clone(),
            channel: channel.clone(),
            wake_prefix: wake_prefix.clone(),
        };
        let conn = connection::open(&endpoint, &opts, &errors).await?;
        let source = match &conn {
            Conn::Sentinel(sentinel) => NodeSource::Sentinel(Arc::clone(sentinel)),
            _ => NodeSource::Nodes(endpoint.nodes()),
        };
        let client_id = format!("{:016x}", rand_u64());
        let notifier = Notifier::new(
            source,
            format!("{wake_prefix}{client_id}"),
            channel,
            &opts,
            errors.clone(),
        );
        let trust = if matches!(endpoint, Endpoint::Standalone(_)) {
            "1"
        } else {
            "0"
        };
        let client_args = ["-", "w", "q"].map(|how| format!("{how}{trust}{client_id}"));
        let member = format!("{trust}{client_id}");
        let backend = Self {
            inner: Arc::new(Inner {
                conn,
                endpoint,
                keys,
                client_id,
                client_args,
                member,
                opts,
                errors,
                notifier,
                scripting: Scripting::default(),
            }),
        };
        let weak: Weak<Inner> = Arc::downgrade(&backend.inner);
        backend
            .inner
            .notifier
            .set_pass_on(Arc::new(move |name: String| {
                let weak = weak.clone();
                Box::pin(async move {
                    if let Some(inner) = weak.upgrade() {
                        RedisBackend { inner }.pass_on(&name).await;
                    }
                })
            }));
        Ok(backend)
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

    /// True while the subscription that hands this backend its turns is up, so
    /// [`wait_for_change`](LockBackend::wait_for_change) wakes on a hand-off instead of
    /// polling. It starts in the background the first time this backend finds a lock held
    /// or waits (a process that never contends never subscribes), and is usually up within
    /// a few milliseconds; a waiter that started before it was up looks again the moment it
    /// is.
    pub fn is_subscribed(&self) -> bool {
        self.inner.notifier.is_live()
    }

    /// The Redis keys of `name`: its lease and its fence counter. Every key of a name
    /// shares one Redis Cluster hash slot.
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
    async fn eval(&self, operation: &'static str, script: Invocation<'_>) -> Result<Value> {
        let mut conn = self.conn();
        self.run(operation, script.invoke(&mut conn)).await
    }

    /// Runs `script` (a grant or a renewal of `name`), then, when replicas must confirm,
    /// `WAIT`s for them; returns the reply and, with replicas, how many confirmed.
    async fn eval_confirmed(
        &self,
        operation: &'static str,
        name: &LockName,
        script: Invocation<'_>,
    ) -> Result<(Value, Option<usize>)> {
        let replicas = self.inner.opts.replicas;
        if replicas == 0 {
            return Ok((self.eval(operation, script).await?, None));
        }
        let key = self.inner.keys.lease_key(name);
        let mut conn = self.conn();
        let wait = conn.invoke_and_wait(
            &script,
            key.as_bytes(),
            replicas,
            self.inner.opts.replica_timeout,
        );
        let (reply, acked) = self.run(operation, wait).await?;
        Ok((reply, Some(usize::try_from(acked).unwrap_or(0))))
    }

    /// The error for a grant or renewal of `name` that only `acked` replicas confirmed.
    fn unconfirmed(&self, name: &LockName, what: &str, acked: usize) -> LockError {
        LockError::unavailable(
            BACKEND,
            format!(
                "only {acked} of the {} replicas asked for confirmed the {what} of lock \
                 \"{name}\" within {:?} (replication is lagging or a replica is down); \
                 retry later, or lower ?replicas= to what the deployment can confirm",
                self.inner.opts.replicas, self.inner.opts.replica_timeout
            ),
        )
    }

    /// The live leases stored at `key`, by fence, checking they belong to `expected` (if
    /// given).
    pub(crate) async fn inspect_key(
        &self,
        key: &str,
        expected: Option<&LockName>,
    ) -> Result<Vec<LeaseInfo>> {
        let mut script = INSPECT.call(1, &self.inner.scripting);
        script.arg(key);
        let reply = Reply::parse("inspect", self.eval("inspect", script).await?)?;
        if reply.status() != "ok" {
            return Err(reply.into_error());
        }
        let mut out = Vec::with_capacity(reply.fields() / 8);
        for at in (0..reply.fields()).step_by(8) {
            let raw_name = reply.text(at)?;
            let name = LockName::new(&raw_name).map_err(|e| {
                LockError::corrupt(BACKEND, format!("the lease {key} names no valid lock: {e}"))
            })?;
            if self.inner.keys.lease_key(&name) != key || expected.is_some_and(|want| *want != name)
            {
                return Err(LockError::corrupt(
                    BACKEND,
                    format!("the lease {key} claims to be for another lock, {raw_name:?}"),
                ));
            }
            out.push(
                LeaseInfo::new(
                    name,
                    reply.text(at + 1)?,
                    reply.number(at + 2, "pid")?,
                    reply.text(at + 3)?,
                    reply.number(at + 4, "fence")?,
                    from_unix_millis(reply.millis(at + 5, "acquired_at")?),
                    from_unix_millis(reply.millis(at + 6, "expires_at")?),
                )
                .with_limit(reply.number(at + 7, "limit")?),
            );
        }
        out.sort_by_key(|info| info.fence);
        Ok(out)
    }

    /// The lease renewed by a heartbeat script's reply for it.
    fn renewed_from(
        script: &'static str,
        lease: &Lease,
        reply: Value,
        sent: Instant,
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

    /// Takes a lock (`limit` 1) or one of `limit` permits of `name`.
    async fn acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
    ) -> Result<Option<Lease>> {
        validate_ttl(ttl)?;
        let how = self.inner.notifier.registration(name);
        let mut script = if limit == 1 {
            ACQUIRE.call(3, &self.inner.scripting)
        } else {
            ACQUIRE_PERMIT.call(3, &self.inner.scripting)
        };
        self.inner
            .keys
            .push_keys(&mut script, name, &[LEASE, FENCE, QUEUE]);
        script
            .arg(record_head(holder, limit, name))
            .arg(ttl_millis(ttl))
            .arg(self.inner.client_args[how as usize].as_str());
        if limit > 1 {
            script.arg(limit);
        }
        let epoch = self.inner.notifier.epoch();
        let sent = monotonic_now();
        let (reply, acked) = self.eval_confirmed("acquire", name, script).await?;
        // A grant is the fence and the server's time in µs at the grant: one integer when
        // the fence is that time, as it is unless the counter was ahead of the clock.
        let granted = match &reply {
            Value::Int(fence_value) if *fence_value > 0 => Some((*fence_value, *fence_value)),
            Value::Array(items) => match items[..] {
                [Value::Int(fence_value), Value::Int(micros)] => Some((fence_value, micros)),
                _ => None,
            },
            _ => None,
        };
        let Some((fence_value, micros)) = granted else {
            return match reply {
                Value::Int(held) if held < 0 => {
                    // Contention: this process is likely to wait for the name next.
                    self.inner.notifier.start();
                    let left = Duration::from_millis(u64::try_from(-1 - held).unwrap_or(0));
                    let registered = (how != Registration::None).then_some(epoch);
                    self.inner.notifier.held(name, left, registered);
                    Ok(None)
                }
                other => Err(self.refusal(name, limit, other)),
            };
        };
        let expires_at = (micros / 1000).saturating_add_unsigned(ttl_millis(ttl));
        let lease = Lease::new(
            name.clone(),
            holder.clone(),
            fence("acquire", fence_value)?,
            from_unix_millis(expires_at),
            sent,
            ttl,
        );
        if let Some(acked) = acked
            && acked < self.inner.opts.replicas
        {
            // Not confirmed: give it back, so that a failover to a replica that lacks it
            // cannot let a second holder in while the first believes it holds the lock.
            let _ = self.release(&lease).await;
            return Err(self.unconfirmed(name, "grant", acked));
        }
        self.inner
            .notifier
            .acquired(name, how == Registration::RequeueAfterClaim);
        Ok(Some(lease))
    }

    /// The error for an acquire's reply other than a grant or "held".
    fn refusal(&self, name: &LockName, limit: u32, reply: Value) -> LockError {
        match Reply::parse("acquire", reply) {
            Ok(reply) if reply.status() == "limit" => match reply.number::<u32>(0, "limit") {
                Ok(held) => limit_mismatch(BACKEND, name, held, limit),
                Err(error) => error,
            },
            Ok(reply) => reply.into_error(),
            Err(error) => error,
        }
    }

    /// Registers this client as waiting for `name`; `None` when the name can be taken now.
    async fn register(&self, name: &LockName) -> Result<Option<Duration>> {
        let mut script = REGISTER.call(2, &self.inner.scripting);
        self.inner
            .keys
            .push_keys(&mut script, name, &[LEASE, QUEUE]);
        script.arg(self.inner.member.as_str());
        match self.eval("wait", script).await? {
            Value::Int(left) if left >= 0 => Ok(Some(Duration::from_millis(
                u64::try_from(left).unwrap_or(0),
            ))),
            Value::Int(_) => Ok(None),
            other => Err(failure("register", other)),
        }
    }

    /// Passes a turn for `name` that no caller of this client will use on to the next
    /// waiting client.
    async fn pass_on(&self, name: &str) {
        let Ok(name) = LockName::new(name) else {
            return;
        };
        let mut script = PASS_ON.call(2, &self.inner.scripting);
        self.inner
            .keys
            .push_keys(&mut script, &name, &[LEASE, QUEUE]);
        script.arg(self.inner.client_id.as_str());
        if let Err(error) = self.eval("pass_on", script).await {
            tracing::debug!(lock = %name, %error, "passing an unused turn on failed; it lapses after the claim window");
        }
    }
}

/// Milliseconds for `PX`, rounded up so the store never expires a lease early.
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The owner token as 32 lowercase hex digits, without allocating.
fn token_hex(token: OwnerToken) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let value = token.as_u128();
    std::array::from_fn(|i| DIGITS[usize::try_from((value >> (124 - 4 * i)) & 0xf).unwrap_or(0)])
}

/// The part of a lease record the client writes, before the fence and the time of the
/// grant that the server appends: `<token> <limit> <pid> <label_len> <host_len> <name_len>
/// <label><host><name> ` (lengths in bytes).
fn record_head(holder: &Holder, limit: u32, name: &LockName) -> Vec<u8> {
    let (label, host, name) = (&holder.label, &holder.host, name.as_str());
    let mut head = Vec::with_capacity(96 + label.len() + host.len() + name.len());
    head.extend_from_slice(&token_hex(holder.token));
    for number in [
        u64::from(limit),
        u64::from(holder.pid),
        label.len() as u64,
        host.len() as u64,
        name.len() as u64,
    ] {
        head.push(b' ');
        push_decimal(&mut head, number);
    }
    head.push(b' ');
    head.extend_from_slice(label.as_bytes());
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(name.as_bytes());
    head.push(b' ');
    head
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0_u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A random 64-bit client id.
fn rand_u64() -> u64 {
    u64::try_from(OwnerToken::random().as_u128() >> 64).unwrap_or(0)
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
        self.acquire(name, holder, ttl, 1).await
    }

    #[tracing::instrument(name = "try_acquire_permit", level = "debug", skip_all, fields(lock = %name, limit))]
    async fn try_acquire_permit(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
    ) -> Result<Option<Lease>> {
        validate_limit(limit)?;
        self.acquire(name, holder, ttl, limit).await
    }

    #[tracing::instrument(name = "heartbeat", level = "debug", skip_all, fields(lock = %lease.name))]
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_ttl(ttl)?;
        let mut script = HEARTBEAT.call(1, &self.inner.scripting);
        self.inner
            .keys
            .push_keys(&mut script, &lease.name, &[LEASE]);
        script
            .arg(&token_hex(lease.holder.token)[..])
            .arg(ttl_millis(ttl));
        let sent = monotonic_now();
        let (reply, acked) = self
            .eval_confirmed("heartbeat", &lease.name, script)
            .await?;
        let renewed = Self::renewed_from("heartbeat", lease, reply, sent, ttl)?;
        match acked {
            // The holder keeps the deadline of its last confirmed renewal.
            Some(acked) if acked < self.inner.opts.replicas => {
                Err(self.unconfirmed(&lease.name, "renewal", acked))
            }
            _ => Ok(renewed),
        }
    }

    #[tracing::instrument(name = "release", level = "debug", skip_all, fields(lock = %lease.name))]
    async fn release(&self, lease: &Lease) -> Result<bool> {
        let mut script = RELEASE.call(2, &self.inner.scripting);
        self.inner
            .keys
            .push_keys(&mut script, &lease.name, &[LEASE, QUEUE]);
        script.arg(&token_hex(lease.holder.token)[..]);
        match self.eval("release", script).await? {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            other => Err(failure("release", other)),
        }
    }

    #[tracing::instrument(name = "inspect", skip_all, fields(lock = %name))]
    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        Ok(self.inspect_all(name).await?.pop())
    }

    #[tracing::instrument(name = "inspect_all", skip_all, fields(lock = %name))]
    async fn inspect_all(&self, name: &LockName) -> Result<Vec<LeaseInfo>> {
        self.inspect_key(&self.inner.keys.lease_key(name), Some(name))
            .await
    }

    #[tracing::instrument(name = "force_release", skip_all, fields(lock = %name))]
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let mut script = FORCE_RELEASE.call(3, &self.inner.scripting);
        self.inner
            .keys
            .push_keys(&mut script, name, &[LEASE, FENCE, QUEUE]);
        script.arg(name.as_str());
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
        let notifier = &self.inner.notifier;
        notifier.start();
        if notifier.needs_registration(name) {
            // Usually up within a few milliseconds; one that does not come up within a poll
            // interval (the server is unreachable, an ACL refuses the channel) leaves the
            // waiter polling, as it would have anyway.
            notifier
                .until_live(max.min(self.inner.opts.fallback_poll))
                .await;
            let epoch = notifier.epoch();
            match self.register(name).await {
                // Free now: look again at once.
                Ok(None) => return,
                Ok(Some(left)) => notifier.held(name, left, Some(epoch)),
                Err(error) => {
                    tracing::debug!(lock = %name, %error, "registering as a waiter failed; waiting unregistered");
                }
            }
        }
        notifier
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
                Ok(infos) => out.extend(
                    infos
                        .into_iter()
                        .filter(|info| info.name.as_str().starts_with(prefix)),
                ),
                // One damaged or foreign record must not hide every other lease (nor break
                // `lockctl status`); inspecting or force-releasing that name reports it.
                Err(error @ LockError::Corrupt { .. }) => {
                    tracing::warn!(%key, %error, "skipping an unreadable lease record while listing");
                }
                Err(error) => return Err(error),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.fence.cmp(&b.fence)));
        Ok(out)
    }

    async fn heartbeat_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Lease>> {
        if let Err(LockError::InvalidTtl { ttl, reason }) = validate_ttl(ttl) {
            return leases
                .iter()
                .map(|_| Err(LockError::InvalidTtl { ttl, reason }))
                .collect();
        }
        if self.is_cluster() || leases.len() < 2 || self.inner.opts.replicas > 0 {
            // Keys of a batch may lie on different nodes: send them concurrently. (With
            // replicas to confirm, each renewal is confirmed on its own.)
            return join_all(leases.iter().map(|lease| self.heartbeat(lease, ttl))).await;
        }
        let mut script = HEARTBEAT_MANY.call(leases.len(), &self.inner.scripting);
        for lease in leases {
            self.inner
                .keys
                .push_keys(&mut script, &lease.name, &[LEASE]);
        }
        script.arg(ttl_millis(ttl));
        for lease in leases {
            script.arg(&token_hex(lease.holder.token)[..]);
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
                return all_failed(e, leases.len());
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
            .with_batched_heartbeat(!self.is_cluster() && self.inner.opts.replicas == 0)
            .with_semaphores(true)
            .with_queues_waiters(true)
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_lowercase_hex_digits_as_to_hex_writes_them() {
        for _ in 0..100 {
            let token = OwnerToken::random();
            assert_eq!(&token_hex(token)[..], token.to_hex().as_bytes());
        }
    }

    #[test]
    fn a_record_head_gives_lengths_in_bytes() {
        let token = OwnerToken::random();
        let holder = Holder::new(token, "lâbel", 42, "hôst");
        let name = LockName::new("n é").unwrap();
        assert_eq!(
            record_head(&holder, 3, &name),
            format!("{} 3 42 6 5 4 lâbelhôstn é ", token.to_hex()).into_bytes()
        );
        let mut s = Vec::new();
        for n in [0, 7, 10, 12345, u64::MAX] {
            s.clear();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string().into_bytes());
        }
    }
}
