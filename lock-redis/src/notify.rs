//! Waking waiters: each backend value is a *client* with an id and a channel of its own.
//!
//! A caller that finds a name held is registered in the name's queue in the store (by its
//! failed attempt, or by [`RedisBackend::wait_for_change`](crate::RedisBackend)), as its
//! client. A release that finds the queue non-empty hands the freed lock (or permit) to the
//! client at its head: it reserves it for that client for a short claim window and
//! publishes the name on that client's channel, and only there. The client wakes *one* of
//! its callers waiting for that name, which claims the reservation. So a release wakes one
//! waiter, not all of them, and a caller that is not woken need not poll: it waits until its
//! turn, until what holds the name may have expired (learnt from its failed attempt), or at
//! most [`SAFETY_WAIT`].
//!
//! A turn that reaches a client none of whose callers waits any more (they gave up or were
//! cancelled) is passed on to the next client in the queue after [`UNCLAIMED_GRACE`]. A
//! client whose process is gone is skipped by the release itself on one server (its
//! publication reaches nobody); on a cluster, whose publications count one node's listeners
//! only, its reservation lapses after the claim window and waiters look again within
//! [`SAFETY_WAIT`].
//!
//! One background task per backend value keeps the subscription (its own channel, and the
//! channel on which version 1 of this library announced every release), pings it to notice
//! a dead connection, and subscribes again when it drops. While it is down, waiters poll
//! with jitter, and when it comes (back) up they look again at once, since a turn in between
//! went unheard. A process that never contends never subscribes.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lock_core::backend_kit::time::{deadline_in, monotonic_now};
use lock_core::backend_kit::{BackgroundTask, Backoff, listening};
use lock_core::{LockError, LockName};
use tokio::sync::{oneshot, watch};
use url::Url;

use crate::connection::SentinelConn;
use crate::errors::{ErrorContext, from_redis};
use crate::options::RedisOptions;

/// How often an idle subscription is pinged.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// The longest a waiting caller sleeps without being woken: the bound on how late it
/// notices a turn that was lost (a client that died while queued on a cluster, a
/// notification lost with its connection).
pub(crate) const SAFETY_WAIT: Duration = Duration::from_secs(2);

/// How long a turn that found no waiting caller is kept for one that is about to wait,
/// before it is passed on to the next client.
pub(crate) const UNCLAIMED_GRACE: Duration = Duration::from_millis(20);

/// How long this client counts as registered in a name's queue after registering (the
/// store keeps a registration 6 s; the margin covers the round trip and clock drift).
pub(crate) const REGISTERED_FOR: Duration = Duration::from_secs(5);

/// After what holds a name was due to expire, how long a waiter sleeps on before it looks
/// (the server's clock and this host's may differ by a little).
const EXPIRY_MARGIN: Duration = Duration::from_millis(2);

/// Passes a turn this client cannot use on to the next client (runs the `pass_on` script).
pub(crate) type PassOn =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Where to subscribe.
pub(crate) enum NodeSource {
    /// One of these nodes (the server, or any node of a cluster).
    Nodes(Vec<Url>),
    /// The primary the Sentinels name.
    Sentinel(Arc<SentinelConn>),
}

impl std::fmt::Debug for NodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nodes(nodes) => write!(f, "{} node(s)", nodes.len()),
            Self::Sentinel(_) => f.write_str("the primary the Sentinels name"),
        }
    }
}

impl NodeSource {
    /// A client for attempt `attempt` (rotating through the nodes).
    async fn client(&self, attempt: usize) -> redis::RedisResult<redis::Client> {
        match self {
            Self::Nodes(nodes) => redis::Client::open(nodes[attempt % nodes.len()].clone()),
            Self::Sentinel(conn) => conn.primary_client().await,
        }
    }
}

/// The waiting side of one backend value.
pub(crate) struct Notifier {
    config: Arc<SubscriberConfig>,
    local: Arc<Local>,
    live: Arc<watch::Sender<bool>>,
    /// How many times the subscription came up: a registration made under another epoch
    /// (or while it was down) may have been skipped by a release that found nobody
    /// listening, so its waiter looks again.
    epoch: Arc<AtomicU64>,
    task: BackgroundTask,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channel", &self.config.wake_channel)
            .field("live", &self.is_live())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct SubscriberConfig {
    source: NodeSource,
    /// This client's own channel: turns handed to it.
    wake_channel: String,
    /// Where version 1 of this library announced every release.
    legacy_channel: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    errors: ErrorContext,
}

/// This client's callers, by name.
#[derive(Default)]
struct Local {
    names: Mutex<HashMap<String, Waiting>>,
    pass_on: OnceLock<PassOn>,
    next_id: AtomicU64,
}

/// What this client knows about one name.
#[derive(Default)]
struct Waiting {
    /// Callers inside `wait`, oldest first.
    callers: VecDeque<(u64, oneshot::Sender<()>)>,
    /// Turns that came when no caller was inside `wait`: when each came.
    turns: Vec<Instant>,
    /// The last release a version 1 client announced.
    announced: Option<Instant>,
    /// When what holds the name expires unless renewed (from the last failed attempt).
    held_until: Option<Instant>,
    /// Until when this client is registered in the name's queue.
    registered_until: Option<Instant>,
    /// The subscription's epoch when the registration was sent (0: it was down).
    registered_epoch: u64,
    /// The last time a caller waited for the name.
    last_wait: Option<Instant>,
}

/// How an acquire registers this client when it finds the name held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Registration {
    /// Not at all: nobody here waited for the name lately, so a failed attempt is likely a
    /// one-off `try_lock`.
    None = 0,
    /// As waiting.
    Waiting = 1,
    /// As waiting, and again after claiming a turn: more callers of this client wait.
    RequeueAfterClaim = 2,
}

impl Local {
    /// Runs `f` on what is known about `name`, if anything (no entry is made).
    fn peek<T>(&self, name: &str, f: impl FnOnce(&mut Waiting) -> T) -> Option<T> {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.get_mut(name).map(f)
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Waiting) -> T) -> T {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if names.len() > 4096 {
            // Forget names nobody waited for lately.
            let now = monotonic_now();
            names.retain(|_, w| {
                !w.callers.is_empty()
                    || w.last_wait
                        .is_some_and(|t| now.saturating_duration_since(t) < REGISTERED_FOR)
            });
        }
        f(names.entry(name.to_owned()).or_default())
    }

    /// A turn for `name` reached this client: wakes the caller that has waited longest, or
    /// keeps the turn for one about to wait, passing it on if none claims it in time.
    fn turn(self: &Arc<Self>, name: &str) {
        let came = monotonic_now();
        let kept = self.with(name, |w| {
            while let Some((_, caller)) = w.callers.pop_front() {
                if caller.send(()).is_ok() {
                    return false;
                }
            }
            w.turns.push(came);
            true
        });
        if !kept {
            return;
        }
        let (local, name) = (Arc::clone(self), name.to_owned());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            tokio::time::sleep(UNCLAIMED_GRACE).await;
            let unclaimed = local.with(&name, |w| {
                let before = w.turns.len();
                w.turns.retain(|t| *t != came);
                w.turns.len() != before
            });
            if unclaimed && let Some(pass_on) = local.pass_on.get() {
                pass_on(name).await;
            }
        });
    }

    /// A version 1 client announced a release of `name`: every caller looks.
    fn announced(&self, name: &str) {
        self.with(name, |w| {
            w.announced = Some(monotonic_now());
            for (_, caller) in w.callers.drain(..) {
                let _ = caller.send(());
            }
        });
    }
}

/// A caller inside [`Notifier::wait`]; leaving the queue when dropped, and handing on a
/// turn that reached it if it will not try to acquire (it gave up, or was cancelled).
struct Caller<'a> {
    local: &'a Arc<Local>,
    name: &'a str,
    id: u64,
    turn: oneshot::Receiver<()>,
    will_attempt: bool,
}

impl Drop for Caller<'_> {
    fn drop(&mut self) {
        self.local
            .with(self.name, |w| w.callers.retain(|(id, _)| *id != self.id));
        if !self.will_attempt && self.turn.try_recv().is_ok() {
            self.local.turn(self.name);
        }
    }
}

impl Notifier {
    /// A notifier for `client_id` (channel `wake_prefix` + id) and the version 1 channel;
    /// nothing runs until [`start`](Self::start) or the first wait.
    pub(crate) fn new(
        source: NodeSource,
        wake_channel: String,
        legacy_channel: String,
        opts: &RedisOptions,
        errors: ErrorContext,
    ) -> Self {
        let (live, _) = watch::channel(false);
        Self {
            config: Arc::new(SubscriberConfig {
                source,
                wake_channel,
                legacy_channel,
                connect_timeout: opts.connect_timeout,
                response_timeout: opts.response_timeout,
                errors,
            }),
            local: Arc::new(Local::default()),
            live: Arc::new(live),
            epoch: Arc::new(AtomicU64::new(0)),
            task: BackgroundTask::new(),
        }
    }

    /// Waits up to `max` for the subscription to be up (a fresh backend's starts when it
    /// first finds a lock held): a registration sent before it is up could be skipped by a
    /// release that finds nobody listening, and cost the caller another attempt.
    pub(crate) async fn until_live(&self, max: Duration) {
        let mut live = self.live.subscribe();
        let _ = tokio::time::timeout(max, live.wait_for(|up| *up)).await;
    }

    /// The subscription's epoch if it is up now, else 0: read before sending a request
    /// that registers this client, and given back to [`held`](Self::held).
    pub(crate) fn epoch(&self) -> u64 {
        if self.is_live() {
            self.epoch.load(Ordering::SeqCst)
        } else {
            0
        }
    }

    /// Sets what runs when a turn must be passed on (once; the backend holds the
    /// connection it needs).
    pub(crate) fn set_pass_on(&self, pass_on: PassOn) {
        let _ = self.local.pass_on.set(pass_on);
    }

    /// True while the subscription is confirmed by the server.
    pub(crate) fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    /// Starts the subscription in the background (on the current Tokio runtime) unless it
    /// runs: called when a lock was found held, so that it is usually up by the time the
    /// caller waits.
    pub(crate) fn start(&self) {
        self.ensure_running();
    }

    /// How an acquire of `name` registers this client when it finds the name held.
    pub(crate) fn registration(&self, name: &LockName) -> Registration {
        let now = monotonic_now();
        self.local
            .peek(name.as_str(), |w| {
                if !w.callers.is_empty() {
                    Registration::RequeueAfterClaim
                } else if w
                    .last_wait
                    .is_some_and(|t| now.saturating_duration_since(t) < REGISTERED_FOR)
                {
                    Registration::Waiting
                } else {
                    Registration::None
                }
            })
            .unwrap_or(Registration::None)
    }

    /// An attempt found `name` held, with `left` until what holds it expires unless
    /// renewed; `registered` with the [`epoch`](Self::epoch) read before it was sent, if
    /// the attempt registered this client as waiting.
    pub(crate) fn held(&self, name: &LockName, left: Duration, registered: Option<u64>) {
        let now = monotonic_now();
        self.local.with(name.as_str(), |w| {
            w.held_until = Some(now + left);
            if let Some(epoch) = registered {
                w.registered_until = Some(now + REGISTERED_FOR);
                w.registered_epoch = epoch;
            }
        });
    }

    /// An attempt acquired `name`; `requeued` if it registered this client again (other
    /// callers of it wait).
    pub(crate) fn acquired(&self, name: &LockName, requeued: bool) {
        let now = monotonic_now();
        self.local.peek(name.as_str(), |w| {
            w.turns.clear();
            w.held_until = None;
            w.registered_until = requeued.then_some(now + REGISTERED_FOR);
        });
    }

    /// Whether a caller about to wait for `name` must register this client first (no
    /// recent attempt did).
    pub(crate) fn needs_registration(&self, name: &LockName) -> bool {
        let now = monotonic_now();
        self.local.with(name.as_str(), |w| {
            w.registered_until.is_none_or(|t| t <= now)
        })
    }

    /// Waits until this client's turn for `name` comes (a turn that came at or after
    /// `since` counts), what holds the name may have expired, [`SAFETY_WAIT`] or `max`
    /// passes, or (while the subscription is down) a jittered `poll` interval passes. Also
    /// returns as soon as the subscription comes back up after being down during this
    /// wait, and at once when this client registered while the subscription was down or
    /// before it last came up: a turn in between may have gone unheard (a release on one
    /// server skips a client nobody listens for), so the caller should look again.
    pub(crate) async fn wait(
        &self,
        name: &LockName,
        since: Instant,
        max: Duration,
        poll: Duration,
    ) {
        let deadline = tokio::time::Instant::from_std(deadline_in(max));
        self.ensure_running();
        let mut live = self.live.subscribe();
        loop {
            if !listening(&mut live, deadline, poll).await {
                return;
            }
            let now = monotonic_now();
            let id = self.local.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            let epoch = self.epoch.load(Ordering::SeqCst);
            let queued = self.local.with(name.as_str(), |w| {
                w.last_wait = Some(now);
                if w.registered_epoch != epoch {
                    // Registered under an older subscription, or while it was down: look
                    // again (the next attempt registers anew).
                    w.registered_until = None;
                    return None;
                }
                // A turn older than the caller's attempt was there for that attempt.
                w.turns.retain(|t| *t >= since);
                if !w.turns.is_empty() {
                    w.turns.remove(0);
                    return None;
                }
                if w.announced.is_some_and(|t| t >= since) {
                    return None;
                }
                w.callers.push_back((id, tx));
                let looks = w.held_until.map_or(now + SAFETY_WAIT, |t| {
                    (t + EXPIRY_MARGIN).min(now + SAFETY_WAIT)
                });
                Some(looks)
            });
            let Some(looks) = queued else {
                return;
            };
            let looks = tokio::time::Instant::from_std(looks);
            let mut caller = Caller {
                local: &self.local,
                name: name.as_str(),
                id,
                turn: rx,
                will_attempt: true,
            };
            tokio::select! {
                _ = &mut caller.turn => return,
                () = tokio::time::sleep_until(looks.min(deadline)) => {
                    // At the caller's deadline it gives up without another attempt: a turn
                    // that reached it meanwhile goes to someone else.
                    caller.will_attempt = looks < deadline;
                    return;
                }
                changed = live.changed() => {
                    drop(caller);
                    if changed.is_err() {
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                }
            }
        }
    }

    /// Starts the subscriber task on the current runtime unless it is running.
    fn ensure_running(&self) {
        self.task.ensure_running(|| {
            // A task that finished belonged to a runtime that has shut down.
            self.live.send_replace(false);
            subscribe_forever(
                Arc::clone(&self.config),
                Arc::clone(&self.local),
                Arc::clone(&self.live),
                Arc::clone(&self.epoch),
            )
        });
    }
}

/// Keeps one subscription up until aborted.
async fn subscribe_forever(
    config: Arc<SubscriberConfig>,
    local: Arc<Local>,
    live: Arc<watch::Sender<bool>>,
    epoch: Arc<AtomicU64>,
) {
    let mut retry = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    let mut attempt = 0;
    let mut warned = false;
    loop {
        match subscribe(attempt, &config).await {
            Ok(pubsub) => {
                epoch.fetch_add(1, Ordering::SeqCst);
                live.send_replace(true);
                warned = false;
                tracing::debug!(channel = %config.wake_channel, "subscribed for lock hand-offs");
                retry = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
                forward(pubsub, &config, &local).await;
                live.send_replace(false);
                tracing::debug!(channel = %config.wake_channel, "hand-off subscription dropped; waiters poll until it is back");
            }
            Err(error) => {
                live.send_replace(false);
                attempt += 1;
                let error = from_redis(error, &config.errors);
                if matches!(error, LockError::Config { .. }) && !warned {
                    // Not an outage: it will not go away by itself, so say what to change.
                    warned = true;
                    tracing::warn!(channel = %config.wake_channel, %error, "cannot subscribe for lock hand-offs; waiters poll instead of being woken");
                } else {
                    tracing::debug!(channel = %config.wake_channel, %error, "subscribing for lock hand-offs failed; retrying");
                }
            }
        }
        tokio::time::sleep(retry.next_delay()).await;
    }
}

async fn subscribe(
    attempt: usize,
    config: &SubscriberConfig,
) -> redis::RedisResult<redis::aio::PubSub> {
    let connecting = async {
        let client = config.source.client(attempt).await?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub
            .subscribe(&[config.wake_channel.as_str(), config.legacy_channel.as_str()])
            .await?;
        Ok(pubsub)
    };
    tokio::time::timeout(config.connect_timeout + config.response_timeout, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "subscribing timed out").into())
        })
}

/// Forwards turns and announcements until the connection drops or stops answering pings.
async fn forward(pubsub: redis::aio::PubSub, config: &SubscriberConfig, local: &Arc<Local>) {
    let (mut sink, mut stream) = pubsub.split();
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    let payload = message.get_payload_bytes();
                    if message.get_channel_name() == config.wake_channel {
                        // A hand-off names the lock by its hash tag.
                        if let Some(name) = crate::keys::name_of_tag(payload) {
                            local.turn(&name);
                        }
                    } else {
                        local.announced(&String::from_utf8_lossy(payload));
                    }
                }
                None => return,
            },
            () = tokio::time::sleep(KEEPALIVE) => {
                let ping = tokio::time::timeout(config.response_timeout, sink.ping::<redis::Value>());
                if !matches!(ping.await, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
