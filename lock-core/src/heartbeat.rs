//! [`Heartbeater`]: keeps every lease of a [`Locker`](crate::Locker) alive from one task.
//!
//! One scheduler task per locker holds the renewal time of every guard's lease. When leases
//! fall due it renews them together: those due within a quarter of their heartbeat interval
//! join the batch (renewing a little early is always safe), so leases acquired at different
//! moments line up after their first renewal. A backend that can batch
//! ([`Capabilities::batched_heartbeat`](crate::Capabilities::batched_heartbeat)) renews a
//! whole batch in one [`heartbeat_many`](LockBackend::heartbeat_many) round trip; any other
//! backend gets one [`heartbeat`](LockBackend::heartbeat) per lease, all in flight at once.
//!
//! Holding many leases thus costs one timer and a few store calls per interval, instead of a
//! task, a timer and a store call per lease.
//!
//! The scheduler only renews. Deciding that a lease is lost when its local deadline passes
//! belongs to the guard itself (see `guard.rs`), so a stuck store call can never delay it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::timeout_at;

use crate::backend::LockBackend;
use crate::backend_kit::Backoff;
use crate::backend_kit::time::{deadline_in, instant_after, local_deadline, monotonic_now};
use crate::error::{LockError, Result};
use crate::guard::Shared;
use crate::lease::Lease;
use crate::telemetry::Labels;

/// The most leases renewed by one `heartbeat_many` call, so that one call never holds a
/// store (a Redis script, a SQLite write transaction) for long.
const MAX_BATCH: usize = 500;

/// How far ahead of its due time a lease may be renewed to join a batch, as a fraction of its
/// heartbeat interval.
const EARLY_FRACTION: u32 = 4;

/// A handle on the scheduler of one locker. Cloning it shares the scheduler; the scheduler
/// task ends once every handle is gone and every lease it renews has ended.
#[derive(Clone, Debug)]
pub(crate) struct Heartbeater {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Arc<dyn LockBackend>,
    /// The scheduler's inbox; `None` until the first lease, and replaced if the task died
    /// with the runtime it ran on.
    inbox: Mutex<Option<mpsc::UnboundedSender<Track>>>,
}

/// A lease to keep alive.
struct Track {
    shared: Weak<Shared>,
    interval: Duration,
}

impl Heartbeater {
    /// A scheduler for leases of `backend`. Its task starts with the first lease.
    pub(crate) fn new(backend: Arc<dyn LockBackend>) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                inbox: Mutex::new(None),
            }),
        }
    }

    /// Starts renewing `shared`'s lease every `interval`, the first time one interval from
    /// now.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (only when the scheduler task must be started).
    pub(crate) fn track(&self, shared: &Arc<Shared>, interval: Duration) {
        let mut track = Track {
            shared: Arc::downgrade(shared),
            interval,
        };
        let mut inbox = self
            .inner
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = inbox.as_ref() {
            match tx.send(track) {
                Ok(()) => return,
                // The task is gone (its runtime shut down): start another below.
                Err(mpsc::error::SendError(returned)) => track = returned,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(schedule(Arc::clone(&self.inner.backend), rx));
        // The receiver is alive: it was just handed to the task.
        let _ = tx.send(track);
        *inbox = Some(tx);
    }
}

/// A lease the scheduler knows, between renewals.
struct Tracked {
    shared: Weak<Shared>,
    interval: Duration,
    retry: Backoff,
}

fn retry_backoff(interval: Duration) -> Backoff {
    Backoff::new((interval / 10).max(Duration::from_millis(1)), interval)
}

/// What became of one lease in a batch.
struct Outcome {
    id: u64,
    next: Next,
}

enum Next {
    /// Renewed by a call sent at `sent`: due again one interval after that.
    Renewed { sent: Instant },
    /// The call failed but the deadline has not passed: try again soon.
    Retry,
    /// The lease ended (lost, released, or past its deadline): stop renewing it.
    Forget,
}

/// The scheduler task.
async fn schedule(backend: Arc<dyn LockBackend>, mut inbox: mpsc::UnboundedReceiver<Track>) {
    let (done_tx, mut done) = mpsc::unbounded_channel::<Outcome>();
    let mut tracked: HashMap<u64, Tracked> = HashMap::new();
    let mut due: BTreeSet<(Instant, u64)> = BTreeSet::new();
    let mut next_id = 0_u64;
    let mut open = true;
    // One timer, moved only when the earliest due time changes.
    let far = || monotonic_now() + Duration::from_secs(3600);
    let timer = tokio::time::sleep_until(far().into());
    tokio::pin!(timer);
    let mut armed = None;
    // Leases in flight stay in `tracked` (not in `due`), so this also waits for them.
    while open || !tracked.is_empty() {
        let wake = due.first().map(|&(at, _)| at);
        if wake != armed {
            timer.as_mut().reset(wake.unwrap_or_else(far).into());
            armed = wake;
        }
        tokio::select! {
            biased;
            Some(outcome) = done.recv() => {
                // A batch reports its leases in a burst: take them all in one go.
                reschedule(&mut tracked, &mut due, outcome);
                while let Ok(outcome) = done.try_recv() {
                    reschedule(&mut tracked, &mut due, outcome);
                }
            }
            track = inbox.recv(), if open => match track {
                Some(track) => {
                    let id = next_id;
                    next_id += 1;
                    due.insert((deadline_in(track.interval), id));
                    tracked.insert(id, Tracked {
                        shared: track.shared,
                        interval: track.interval,
                        retry: retry_backoff(track.interval),
                    });
                }
                None => open = false,
            },
            () = &mut timer, if wake.is_some() => {
                armed = None;
                for (ttl, batch) in take_due(&mut tracked, &mut due) {
                    for chunk in batch.chunks(MAX_BATCH) {
                        tokio::spawn(renew(
                            Arc::clone(&backend),
                            chunk.to_vec(),
                            ttl,
                            done_tx.clone(),
                        ));
                    }
                }
            }
        }
    }
}

fn reschedule(
    tracked: &mut HashMap<u64, Tracked>,
    due: &mut BTreeSet<(Instant, u64)>,
    Outcome { id, next }: Outcome,
) {
    let Some(entry) = tracked.get_mut(&id) else {
        return;
    };
    match next {
        Next::Renewed { sent } => {
            entry.retry = retry_backoff(entry.interval);
            due.insert((instant_after(sent, entry.interval), id));
        }
        Next::Retry => {
            due.insert((deadline_in(entry.retry.next_delay()), id));
        }
        Next::Forget => {
            tracked.remove(&id);
        }
    }
}

/// Takes every lease that is due, or due soon enough to join, out of the schedule, grouped
/// by TTL (one `heartbeat_many` call renews leases to one TTL). Ended leases are forgotten.
fn take_due(
    tracked: &mut HashMap<u64, Tracked>,
    due: &mut BTreeSet<(Instant, u64)>,
) -> HashMap<Duration, Vec<(u64, Arc<Shared>)>> {
    let now = monotonic_now();
    let mut batches: HashMap<Duration, Vec<(u64, Arc<Shared>)>> = HashMap::new();
    while let Some(&(at, id)) = due.first() {
        let Some(entry) = tracked.get(&id) else {
            due.pop_first();
            continue;
        };
        if at > now + entry.interval / EARLY_FRACTION {
            break;
        }
        due.pop_first();
        match entry.shared.upgrade().filter(|s| s.renewable()) {
            Some(shared) => batches.entry(shared.ttl()).or_default().push((id, shared)),
            None => {
                tracked.remove(&id);
            }
        }
    }
    batches
}

/// Renews one batch of leases to `ttl` and reports each outcome.
async fn renew(
    backend: Arc<dyn LockBackend>,
    batch: Vec<(u64, Arc<Shared>)>,
    ttl: Duration,
    done: mpsc::UnboundedSender<Outcome>,
) {
    let leases: Vec<Lease> = batch.iter().map(|(_, shared)| shared.lease()).collect();
    let sent = monotonic_now();
    let report = |id: u64, shared: &Shared, answer: Option<Result<Lease>>| {
        let next = settle(shared, answer, sent, ttl);
        // The scheduler outlives every batch it started, except when its runtime shuts down.
        let _ = done.send(Outcome { id, next });
    };
    // Each lease's loss at its own deadline is reported by its guard; the calls may run
    // until the last deadline, after which nobody could use their answers.
    let latest = leases.iter().map(|l| l.deadline).max().unwrap_or(sent);
    if batch.len() > 1 && backend.capabilities().batched_heartbeat {
        let labels = Labels::backend_only(backend.backend_name());
        let call = labels.store_call("heartbeat_many", backend.heartbeat_many(&leases, ttl));
        let answers = timeout_at(latest.into(), call).await.ok();
        let mut answers = answers.map(Vec::into_iter);
        for (id, shared) in &batch {
            let answer = answers.as_mut().map(|a| {
                a.next().unwrap_or_else(|| {
                    Err(LockError::backend(
                        "leaselock",
                        "heartbeat_many answered fewer results than leases; this is a bug in \
                         the backend",
                    ))
                })
            });
            report(*id, shared, answer);
        }
    } else {
        // One call per lease, all in flight at once, each reported as soon as it answers.
        let mut answered = vec![false; batch.len()];
        let mut pending: FuturesUnordered<_> = leases
            .iter()
            .enumerate()
            .map(|(i, lease)| {
                let backend = &backend;
                let labels = batch[i].1.labels();
                async move {
                    let call = labels.store_call("heartbeat", backend.heartbeat(lease, ttl));
                    (i, call.await)
                }
            })
            .collect();
        let all = async {
            while let Some((i, answer)) = pending.next().await {
                answered[i] = true;
                report(batch[i].0, &batch[i].1, Some(answer));
            }
        };
        if timeout_at(latest.into(), all).await.is_err() {
            for ((id, shared), _) in batch.iter().zip(&answered).filter(|(_, done)| !**done) {
                report(*id, shared, None);
            }
        }
    }
}

/// Applies the store's answer (`None`: no answer before the lease's deadline) to a lease.
fn settle(shared: &Shared, answer: Option<Result<Lease>>, sent: Instant, ttl: Duration) -> Next {
    match answer {
        Some(Ok(mut renewed)) => {
            // Never trust a deadline later than our own rule allows.
            renewed.deadline = renewed.deadline.min(local_deadline(sent, ttl));
            if shared.renew(renewed) {
                tracing::trace!(lock = %shared.name(), "heartbeat");
                Next::Renewed { sent }
            } else {
                Next::Forget
            }
        }
        Some(Err(LockError::LeaseLost { .. })) => {
            tracing::warn!(lock = %shared.name(), "the store says the lease was lost");
            shared.end_revoked();
            Next::Forget
        }
        Some(Err(error)) => {
            shared.labels().heartbeat_failed();
            tracing::warn!(lock = %shared.name(), %error, "heartbeat failed; retrying until the lease deadline");
            if shared.renewable() {
                Next::Retry
            } else {
                Next::Forget
            }
        }
        None => {
            shared.labels().heartbeat_failed();
            tracing::warn!(lock = %shared.name(), "heartbeat unanswered until the lease deadline");
            if shared.renewable() {
                Next::Retry
            } else {
                Next::Forget
            }
        }
    }
}
