//! [`Observer`]: every change of leader of an election, as [`LeaderEvent`]s.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::backend::LockBackend;
use crate::backend_kit::time::monotonic_now;
use crate::error::Result;
use crate::lease::LeaseInfo;
use crate::name::LockName;
use crate::telemetry::Labels;

/// The bounds of an observer's poll interval, a tenth of the election's TTL.
const MIN_POLL: Duration = Duration::from_millis(10);
const MAX_POLL: Duration = Duration::from_secs(1);

/// A change of leader, as [`Observer::next`] reports it.
///
/// Events come in pairs per term, in order: a term's `Stopped` always follows its `Started`,
/// and is never reported for a term that was not (an observer that starts while nobody
/// leads reports nothing until somebody does). A term is identified by its fence.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaderEvent {
    /// A term began: this holder leads. For a term already under way when the observer
    /// started, the first event.
    Started(LeaseInfo),
    /// The term reported by the last `Started` ended: its leader resigned, lost its lease,
    /// or died and its lease expired. The `Started` of the next term, if there is one yet,
    /// comes right after.
    Stopped(LeaseInfo),
}

impl LeaderEvent {
    /// The leader whose term started or stopped.
    pub fn leader(&self) -> &LeaseInfo {
        match self {
            Self::Started(info) | Self::Stopped(info) => info,
        }
    }
}

/// Watches who leads an election, from any process: see
/// [`Election::observe`](super::Election::observe).
///
/// It reads the election's lease from the store, waking on release notifications when the
/// backend sends them ([`Capabilities::notifies_release`](crate::Capabilities::notifies_release))
/// and at least every poll interval (a tenth of the election's TTL, from 10 ms to 1 s). A term
/// shorter than that interval can therefore go unseen: then neither its `Started` nor its
/// `Stopped` is reported, and the pairs stay intact.
#[derive(Debug)]
pub struct Observer {
    backend: Arc<dyn LockBackend>,
    name: LockName,
    labels: Labels,
    poll: Duration,
    /// The leader of the last `Started` not yet followed by its `Stopped`.
    current: Option<LeaseInfo>,
    /// Events found but not yet returned.
    pending: VecDeque<LeaderEvent>,
}

impl Observer {
    pub(crate) fn new(
        backend: Arc<dyn LockBackend>,
        name: LockName,
        labels: Labels,
        ttl: Duration,
    ) -> Self {
        Self {
            backend,
            name,
            labels,
            poll: (ttl / 10).clamp(MIN_POLL, MAX_POLL),
            current: None,
            pending: VecDeque::new(),
        }
    }

    /// The next change of leader, waiting as long as it takes.
    ///
    /// Cancel-safe: an event found while this future was being dropped is returned by the
    /// next call.
    ///
    /// # Errors
    ///
    /// The store's error when reading the lease failed; the observer stays usable, and the
    /// next call reads again.
    pub async fn next(&mut self) -> Result<LeaderEvent> {
        let span = tracing::debug_span!("observe", lock = %self.name);
        self.next_change().instrument(span).await
    }

    async fn next_change(&mut self) -> Result<LeaderEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let since = monotonic_now();
            let inspect = self.backend.inspect(&self.name);
            let seen = self.labels.store_call("inspect", inspect).await?;
            self.see(seen);
            if self.pending.is_empty() {
                self.backend
                    .wait_for_change(&self.name, since, self.poll)
                    .await;
            }
        }
    }

    /// The leader as last seen: that of the last `Started` returned or pending, if its
    /// `Stopped` was not found yet.
    pub fn leader(&self) -> Option<&LeaseInfo> {
        self.current.as_ref()
    }

    /// Queues the events that lead from the last leader seen to `seen`.
    fn see(&mut self, seen: Option<LeaseInfo>) {
        let same_term = match (&self.current, &seen) {
            (Some(was), Some(now)) => was.fence == now.fence,
            (None, None) => true,
            _ => false,
        };
        if same_term {
            if seen.is_some() {
                self.current = seen; // a renewal: the same term, a later expiry
            }
            return;
        }
        if let Some(was) = self.current.take() {
            self.pending.push_back(LeaderEvent::Stopped(was));
        }
        if let Some(now) = seen {
            self.pending.push_back(LeaderEvent::Started(now.clone()));
            self.current = Some(now);
        }
    }
}
