//! Release notifications: one pub/sub subscription per backend value, fanned out in
//! process to every `wait_for_change` caller.
//!
//! Releases publish the lock name on the prefix's channel (inside the release script). A
//! background task, started the first time the backend finds a lock held or waits, keeps
//! one subscription to that channel, pings it to notice a dead connection, and re-subscribes
//! (rotating through the known nodes) when it drops. While it is down, waiters fall back to
//! polling with jitter, and when it comes (back) up they look again at once, since a
//! release in between went unseen.
//!
//! A process that never contends never subscribes: every subscriber receives every release
//! under the prefix, its own included, which costs the server a write and the subscriber a
//! wake-up per release.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use lock_core::backend_kit::{Backoff, ReleaseLog, jitter};
use lock_core::{LockError, LockName};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;

use crate::errors::{ErrorContext, from_redis};
use crate::options::RedisOptions;

/// How often an idle subscription is pinged.
const KEEPALIVE: Duration = Duration::from_secs(2);

/// The subscription of one backend value.
#[derive(Debug)]
pub(crate) struct Notifier {
    config: Arc<SubscriberConfig>,
    released: Arc<ReleaseLog>,
    live: Arc<watch::Sender<bool>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Set once anyone waited or contended here: until then nobody in this process can be
    /// waiting on this backend, and releases need not be recorded.
    started: AtomicBool,
}

#[derive(Debug)]
struct SubscriberConfig {
    nodes: Vec<Url>,
    channel: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    errors: ErrorContext,
}

impl Notifier {
    /// A notifier for `channel` on `nodes` (any of them will do); nothing runs until
    /// [`start`](Self::start) or the first wait.
    pub(crate) fn new(
        nodes: Vec<Url>,
        channel: String,
        opts: &RedisOptions,
        errors: ErrorContext,
    ) -> Self {
        let released = Arc::new(ReleaseLog::new());
        let (live, _) = watch::channel(false);
        Self {
            config: Arc::new(SubscriberConfig {
                nodes,
                channel,
                connect_timeout: opts.connect_timeout,
                response_timeout: opts.response_timeout,
                errors,
            }),
            released,
            live: Arc::new(live),
            task: Mutex::new(None),
            started: AtomicBool::new(false),
        }
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

    /// Records a release this process made itself, waking its waiters without the round
    /// trip through the server.
    pub(crate) fn record_own_release(&self, name: &LockName) {
        if self.started.load(Ordering::Relaxed) {
            self.released.record(name);
        }
    }

    /// Waits until `name` is released after `since`, `max` passes, or (while the
    /// subscription is down) a jittered `poll` interval passes. Also returns as soon as the
    /// subscription comes back up after being down during this wait: a release in between
    /// was not seen, so the caller should look again.
    pub(crate) async fn wait(
        &self,
        name: &LockName,
        since: std::time::Instant,
        max: Duration,
        poll: Duration,
    ) {
        let deadline =
            tokio::time::Instant::from_std(lock_core::backend_kit::time::deadline_in(max));
        self.ensure_running();
        let mut live = self.live.subscribe();
        let mut was_down = false;
        loop {
            if !*live.borrow_and_update() {
                was_down = true;
                let fallback = tokio::time::Instant::now() + jitter(poll);
                tokio::select! {
                    () = tokio::time::sleep_until(fallback.min(deadline)) => return,
                    changed = live.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep_until(fallback.min(deadline)).await;
                            return;
                        }
                        continue;
                    }
                }
            }
            if was_down {
                return;
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                // A release seen after the caller's attempt, even before this wait began.
                () = self.released.wait(name, since, remaining) => return,
                changed = live.changed() => {
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
        self.started.store(true, Ordering::Relaxed);
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        // A task that finished belonged to a runtime that has shut down.
        self.live.send_replace(false);
        *task = Some(tokio::spawn(subscribe_forever(
            Arc::clone(&self.config),
            Arc::clone(&self.released),
            Arc::clone(&self.live),
        )));
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// Keeps one subscription up until aborted.
async fn subscribe_forever(
    config: Arc<SubscriberConfig>,
    released: Arc<ReleaseLog>,
    live: Arc<watch::Sender<bool>>,
) {
    let mut retry = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    let mut node = 0;
    let mut warned = false;
    loop {
        let url = &config.nodes[node % config.nodes.len()];
        match subscribe(url, &config).await {
            Ok(pubsub) => {
                live.send_replace(true);
                warned = false;
                tracing::debug!(channel = %config.channel, "subscribed to lock releases");
                retry = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
                forward(pubsub, &config, &released).await;
                live.send_replace(false);
                tracing::debug!(channel = %config.channel, "release subscription dropped; waiters poll until it is back");
            }
            Err(error) => {
                live.send_replace(false);
                node += 1;
                let error = from_redis(error, &config.errors);
                if matches!(error, LockError::Config { .. }) && !warned {
                    // Not an outage: it will not go away by itself, so say what to change.
                    warned = true;
                    tracing::warn!(channel = %config.channel, %error, "cannot subscribe to lock releases; waiters poll instead of being woken");
                } else {
                    tracing::debug!(channel = %config.channel, %error, "subscribing to lock releases failed; retrying");
                }
            }
        }
        tokio::time::sleep(retry.next_delay()).await;
    }
}

async fn subscribe(url: &Url, config: &SubscriberConfig) -> redis::RedisResult<redis::aio::PubSub> {
    let connecting = async {
        let client = redis::Client::open(url.clone())?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&config.channel).await?;
        Ok(pubsub)
    };
    tokio::time::timeout(config.connect_timeout + config.response_timeout, connecting)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "subscribing timed out").into())
        })
}

/// Forwards released names until the connection drops or stops answering pings.
async fn forward(pubsub: redis::aio::PubSub, config: &SubscriberConfig, released: &ReleaseLog) {
    let (mut sink, mut stream) = pubsub.split();
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    let name = String::from_utf8_lossy(message.get_payload_bytes());
                    released.record_str(&name);
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
