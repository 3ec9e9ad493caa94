//! Release notifications: one `LISTEN` connection per backend value, fanned out in process to
//! every `wait_for_change` caller through a [`ReleaseLog`].
//!
//! A release `NOTIFY`s the table's channel with the lock name (inside the releasing
//! statement, so only a committed release is heard). A background task, started the first
//! time the backend finds a lock held or waits, keeps one [`PgListener`] on a connection of
//! its own (a direct session: not one of the pool's), and checks it every few seconds by
//! notifying a channel only it listens on and waiting to hear it. That check is also how it
//! finds out that it cannot hold a session at all (PgBouncer in transaction mode hands the
//! `LISTEN` to whichever server connection ran it, and the notifications never come back):
//! then it stays down, retrying rarely, and waiters poll.
//!
//! While it is down, waiters return after a jittered `poll` interval, so the `Locker` looks
//! again; when it comes (back) up they return at once, since a release in between went
//! unheard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lock_core::LockName;
use lock_core::backend_kit::time::deadline_in;
use lock_core::backend_kit::{BackgroundTask, Backoff, ReleaseLog, jitter, listening};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::exec::Db;
use crate::sql::Param;

/// How often a quiet `LISTEN` connection is checked.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// The longest pause between attempts to (re)open the `LISTEN` connection.
const MAX_RETRY: Duration = Duration::from_secs(2);
/// The pause after a connection that opened but never heard its own check (a pooler that
/// cannot hold a session): waiters poll meanwhile.
const NO_SESSION_RETRY: Duration = Duration::from_secs(30);

/// The `LISTEN` connection of one backend value.
#[derive(Debug)]
pub(crate) struct Notifier {
    config: Arc<ListenConfig>,
    released: Arc<ReleaseLog>,
    live: Arc<watch::Sender<bool>>,
    task: BackgroundTask,
    /// Set once anyone waited or contended here.
    started: AtomicBool,
}

#[derive(Debug)]
struct ListenConfig {
    /// Statements (the checks go out through the backend's pool).
    db: Db,
    /// The pool the `LISTEN` connection comes from: its own, never the application's.
    listen_pool: PgPool,
    channel: String,
    /// How long a check may take to come back.
    answer_within: Duration,
    enabled: bool,
}

impl Notifier {
    /// A notifier for `channel`; nothing runs until [`start`](Self::start) or the first
    /// wait, and nothing ever runs when `enabled` is false.
    pub(crate) fn new(
        db: Db,
        listen_pool: PgPool,
        channel: String,
        answer_within: Duration,
        enabled: bool,
    ) -> Self {
        let (live, _) = watch::channel(false);
        Self {
            config: Arc::new(ListenConfig {
                db,
                listen_pool,
                channel,
                answer_within,
                enabled,
            }),
            released: Arc::new(ReleaseLog::new()),
            live: Arc::new(live),
            task: BackgroundTask::new(),
            started: AtomicBool::new(false),
        }
    }

    /// True while the `LISTEN` connection is up and has heard its own check.
    pub(crate) fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    /// Starts the listener in the background unless it runs.
    pub(crate) fn start(&self) {
        self.ensure_running();
    }

    /// Records a release this process made, waking its waiters without the round trip.
    pub(crate) fn record_own_release(&self, name: &LockName) {
        if self.started.load(Ordering::Relaxed) {
            self.released.record(name);
        }
    }

    /// Waits until `name` is released after `since`, `max` passes, or (while the listener
    /// is down) a jittered `poll` interval passes; returns at once when the listener comes
    /// back up after being down during this wait.
    pub(crate) async fn wait(
        &self,
        name: &LockName,
        since: std::time::Instant,
        max: Duration,
        poll: Duration,
    ) {
        let deadline = Instant::from_std(deadline_in(max));
        self.ensure_running();
        let mut live = self.live.subscribe();
        loop {
            if !listening(&mut live, deadline, poll).await {
                return;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
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

    fn ensure_running(&self) {
        self.started.store(true, Ordering::Relaxed);
        if !self.config.enabled {
            return;
        }
        self.task.ensure_running(|| {
            // A task that finished belonged to a runtime that has shut down.
            self.live.send_replace(false);
            listen_forever(
                Arc::clone(&self.config),
                Arc::clone(&self.released),
                Arc::clone(&self.live),
            )
        });
    }
}

/// How a listening session ended.
enum Ended {
    /// The connection dropped or stopped answering after it had worked.
    Lost,
    /// It opened but never heard its own check: no session can be held.
    NeverHeard,
}

/// Keeps one `LISTEN` connection up until aborted.
async fn listen_forever(
    config: Arc<ListenConfig>,
    released: Arc<ReleaseLog>,
    live: Arc<watch::Sender<bool>>,
) {
    let fresh = || Backoff::new(Duration::from_millis(10), MAX_RETRY);
    let mut retry = fresh();
    let mut warned = false;
    loop {
        let pause = match open(&config).await {
            Ok((listener, probe_channel)) => {
                match forward(listener, &probe_channel, &config, &released, &live).await {
                    Ended::Lost => {
                        retry = fresh();
                        tracing::debug!(channel = %config.channel, "LISTEN connection lost; waiters poll until it is back");
                        retry.next_delay()
                    }
                    Ended::NeverHeard => {
                        if !warned {
                            warned = true;
                            tracing::warn!(channel = %config.channel, "the LISTEN connection never heard its own NOTIFY (a pooler in transaction mode?); waiters poll instead of being woken");
                        }
                        jitter(NO_SESSION_RETRY)
                    }
                }
            }
            Err(error) => {
                tracing::debug!(channel = %config.channel, %error, "opening the LISTEN connection failed; retrying");
                retry.next_delay()
            }
        };
        live.send_replace(false);
        tokio::time::sleep(pause).await;
    }
}

/// Opens a listener on the release channel and on a check channel of its own.
async fn open(config: &ListenConfig) -> Result<(PgListener, String), sqlx::Error> {
    let probe_channel = format!("leaselock:check:{:016x}", rand_u64());
    let connecting = async {
        let mut listener = PgListener::connect_with(&config.listen_pool).await?;
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener
            .listen_all([config.channel.as_str(), probe_channel.as_str()])
            .await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match tokio::time::timeout(config.answer_within * 2, connecting).await {
        Ok(listener) => Ok((listener?, probe_channel)),
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// 64 random bits (the low half of a fresh owner token: the crate needs no RNG of its own).
fn rand_u64() -> u64 {
    lock_core::OwnerToken::random().as_u128() as u64
}

/// What the reader task hands over: a notification, or the end of the connection.
type Heard = Option<PgNotification>;

/// Forwards released names until the connection drops or a check goes unheard.
async fn forward(
    mut listener: PgListener,
    probe_channel: &str,
    config: &ListenConfig,
    released: &ReleaseLog,
    live: &watch::Sender<bool>,
) -> Ended {
    // The listener is read in a task of its own: reading it is not cancel-safe, and this
    // loop must also keep time.
    let (tx, mut rx) = mpsc::unbounded_channel::<Heard>();
    let reader = tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if tx.send(Some(n)).is_err() {
                        return;
                    }
                }
                Ok(None) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    let _abort = AbortOnDrop(reader);
    let mut heard_once = false;
    let mut next_check = Instant::now();
    // The payload of the check in flight, and when it must have come back.
    let mut awaiting: Option<(String, Instant)> = None;
    loop {
        let wake = match &awaiting {
            Some((_, by)) => *by,
            None => next_check,
        };
        tokio::select! {
            heard = rx.recv() => match heard {
                Some(Some(n)) if n.channel() == probe_channel => {
                    if awaiting.as_ref().is_some_and(|(p, _)| p == n.payload()) {
                        awaiting = None;
                        next_check = Instant::now() + KEEPALIVE;
                        if !heard_once {
                            heard_once = true;
                            live.send_replace(true);
                            tracing::debug!(channel = %config.channel, "listening for lock releases");
                        }
                    }
                }
                Some(Some(n)) => released.record_str(n.payload()),
                Some(None) | None => return Ended::Lost,
            },
            () = tokio::time::sleep_until(wake) => {
                if awaiting.is_some() {
                    return if heard_once { Ended::Lost } else { Ended::NeverHeard };
                }
                let payload = format!("{:016x}", rand_u64());
                awaiting = Some((payload.clone(), Instant::now() + config.answer_within));
                let sent = tokio::time::timeout(config.answer_within, send_check(config, probe_channel, payload)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return Ended::Lost;
                }
            }
        }
    }
}

/// Notifies the check channel through the backend's pool.
async fn send_check(
    config: &ListenConfig,
    probe_channel: &str,
    payload: String,
) -> Result<(), sqlx::Error> {
    let sql: Arc<str> = Arc::from("SELECT pg_notify($1::text, $2::text)::text");
    config
        .db
        .fetch_all(
            &config.db.pool,
            &sql,
            &[Param::Text(probe_channel.to_owned()), Param::Text(payload)],
        )
        .await
        .map(|_| ())
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
