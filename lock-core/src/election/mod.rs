//! [`Election`]: leader election on one lock name. The leader is simply the holder of the
//! election's lease, so every backend supports it and `lockctl status NAME` shows the leader.

mod leadership;
mod observer;

use std::future::Future;
use std::task::Poll;

use tracing::Instrument;

use crate::backend_kit::Backoff;
use crate::error::{LockError, Result};
use crate::guard::{LeaseWatch, LossReason};
use crate::lease::LeaseInfo;
use crate::locker::Locker;
use crate::name::{IntoLockName, LockName};
use crate::options::LockOptions;

pub use leadership::Leadership;
pub use observer::{LeaderEvent, Observer};

/// Leader election on one lock name: of all the processes campaigning on it, one leads at a
/// time, and another takes over when it resigns, dies, or loses its lease.
///
/// The scheduler problem: a job that must run on exactly one instance. Every instance runs
/// the same code; one runs the job, and if it goes away another picks it up.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lock_core::{Election, LockOptions, Locker, memory::MemoryBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), lock_core::LockError> {
/// let locker = Locker::new(Arc::new(MemoryBackend::new()));
/// let opts = LockOptions::default().with_ttl(Duration::from_secs(10));
/// let election = Election::new(locker, "scheduler", opts)?;
///
/// // Campaigns, runs the work while leading (cancelled if leadership is lost, then
/// // campaigns again), and returns the work's output.
/// let ran = election
///     .run(|leadership| async move {
///         // run_due_jobs(leadership.fence()).await
///         leadership.fence()
///     })
///     .await?;
/// assert!(ran > 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Election {
    locker: Locker,
    name: LockName,
    opts: LockOptions,
}

impl Election {
    /// An election on `name`: campaigning takes its lease with `opts` (TTL, label, wait,
    /// minimum hold).
    ///
    /// # Errors
    ///
    /// [`LockError::InvalidName`], or the errors of
    /// [`LockOptions::validate`]; [`LockError::Config`] for a limit other than 1 (an
    /// election has one leader).
    pub fn new(locker: Locker, name: impl IntoLockName, opts: LockOptions) -> Result<Self> {
        let name = name.into_lock_name()?;
        opts.validate()?;
        if opts.limit != 1 {
            return Err(LockError::config(
                "leaselock",
                format!(
                    "an election has one leader, but its options have a limit of {}: leave \
                     LockOptions::with_limit out of an election's options",
                    opts.limit
                ),
            ));
        }
        Ok(Self { locker, name, opts })
    }

    /// The election's lock name.
    pub fn name(&self) -> &LockName {
        &self.name
    }

    /// Waits until this process leads, and returns its term.
    ///
    /// With `wait` set in the options, gives up after it; without, waits as long as it
    /// takes, retrying transient store errors. Cancel-safe, as
    /// [`Locker::lock`].
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`] when the options' `wait` passed; transient errors only when a
    /// `wait` is set and the store kept failing until it passed; any other store error.
    pub async fn campaign(&self) -> Result<Leadership> {
        let span = tracing::debug_span!("campaign", lock = %self.name);
        async {
            let mut backoff = Backoff::new(
                self.opts.max_backoff,
                self.opts
                    .effective_heartbeat_interval()
                    .max(self.opts.max_backoff),
            );
            loop {
                match self.locker.lock(&self.name, &self.opts).await {
                    Ok(guard) => {
                        tracing::info!(fence = guard.fence(), "started leading");
                        return Ok(Leadership::new(guard));
                    }
                    Err(error) if error.is_transient() && self.opts.wait.is_none() => {
                        tracing::warn!(%error, "the store failed while campaigning; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Who leads now, from any process (campaigning or not): the holder of the election's
    /// lease, or `None`.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn leader(&self) -> Result<Option<LeaseInfo>> {
        let span = tracing::debug_span!("leader", lock = %self.name);
        let labels = self.locker.labels(&self.name, &self.opts);
        let inspect = self.locker.backend().inspect(&self.name);
        labels.store_call("inspect", inspect).instrument(span).await
    }

    /// Watches every change of leader from now on, from any process: an [`Observer`] whose
    /// [`next`](Observer::next) returns [`LeaderEvent::Started`] for the current leader, if
    /// any, then a `Stopped` and `Started` for each change, in order.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use lock_core::{Election, LeaderEvent, LockOptions, Locker, memory::MemoryBackend};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lock_core::LockError> {
    /// # let locker = Locker::new(Arc::new(MemoryBackend::new()));
    /// let election = Election::new(locker, "scheduler", LockOptions::default())?;
    /// let mut changes = election.observe();
    /// let term = election.campaign().await?;
    /// match changes.next().await? {
    ///     LeaderEvent::Started(leader) => assert_eq!(leader.fence, term.fence()),
    ///     other => unreachable!("{other:?}"),
    /// }
    /// term.resign().await?;
    /// assert!(matches!(changes.next().await?, LeaderEvent::Stopped(_)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn observe(&self) -> Observer {
        Observer::new(
            std::sync::Arc::clone(self.locker.backend()),
            self.name.clone(),
            self.locker.labels(&self.name, &self.opts),
            self.opts.ttl,
        )
    }

    /// Campaigns, runs `work(leadership)` while this process leads, and returns its output
    /// once it completes. If leadership is lost first (the lease was revoked or could not
    /// be renewed), the work is cancelled (dropped) at once and this process campaigns
    /// again, then starts `work` anew with the new term's higher fence.
    ///
    /// The work gets the [`Leadership`]: it may [`resign`](Leadership::resign), which does
    /// not cancel it (only a loss does). Its leadership ends at the latest when the work
    /// completes and drops it.
    ///
    /// Work is only ever cancelled after it was started: a process that never led never
    /// runs nor stops anything.
    ///
    /// # Errors
    ///
    /// As [`campaign`](Self::campaign).
    pub async fn run<F, Fut>(&self, mut work: F) -> Result<Fut::Output>
    where
        F: FnMut(Leadership) -> Fut,
        Fut: Future,
    {
        let span = tracing::debug_span!("run", lock = %self.name);
        async {
            loop {
                let leadership = self.campaign().await?;
                let (watch, fence) = (leadership.watch(), leadership.fence());
                match while_leading(&watch, work(leadership)).await {
                    Some(out) => return Ok(out),
                    None => tracing::warn!(
                        fence,
                        "stopped leading: the lease was lost; the work was cancelled, campaigning again"
                    ),
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Runs `work` until it completes (`Some`) or the term behind `watch` is lost (`None`). The
/// deadline is checked before every poll, so a process resumed after a pause longer than
/// the TTL does no more work. A resignation (the lease released) does not stop it.
async fn while_leading<F: Future>(watch: &LeaseWatch, work: F) -> Option<F::Output> {
    let lost_now = || {
        matches!(
            watch.loss_reason(),
            Some(LossReason::Revoked | LossReason::DeadlinePassed)
        )
    };
    let lost = watch.lost();
    let lost = async move {
        if lost.await == LossReason::Released {
            std::future::pending::<()>().await;
        }
    };
    let mut work = std::pin::pin!(work);
    let while_held = std::future::poll_fn(|cx| {
        if lost_now() {
            return Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    });
    tokio::select! {
        biased;
        () = lost => None,
        out = while_held => out,
    }
}
