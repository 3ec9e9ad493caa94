//! Retrying a busy database inside the busy budget, the same way for both drivers.
//!
//! Each attempt is one short transaction. When another connection holds the write lock,
//! SQLite answers `SQLITE_BUSY`; the attempt is rolled back, and the task waits and tries
//! again until the budget is spent. Only then does the caller see
//! [`LockError::Unavailable`].
//!
//! The write transactions of lock operations last tens of microseconds (without an fsync),
//! but the Tokio timer counts whole milliseconds. A holder's operation (a release, a
//! heartbeat) that slept 1-2 ms after a collision kept its lease held all that time: with
//! eight processes looping on one name, the release that ended a turn took 0.7 ms at p80
//! and 2.1 ms at p90, though 50 us at p50. So a holder's
//! first retries wait briefly on the calling thread ([`BRIEF_FIRST`] doubling, at most
//! [`BRIEF_BUDGET`] in all per operation, never inside SQLite), then sleep a jittered,
//! growing delay on the Tokio timer. Acquisitions sleep on the timer from the first retry:
//! retrying them sooner made contenders collide more, and eight processes on eight names
//! lost a third of their throughput (19-22k to 13-15k a second) to failed attempts.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use lock_core::backend_kit::Backoff;
use lock_core::{BoxError, LockError};
use tokio::time::{Instant, sleep, timeout_at};

use crate::BACKEND;
use crate::driver::{DbError, Driver, Statements, TxKind};
use crate::now::Cx;

/// The first brief wait on the calling thread after a holder's operation found the
/// database busy; it doubles.
const BRIEF_FIRST: Duration = Duration::from_micros(20);
/// How long the brief waits of one operation may take in all (as measured, timer slack
/// included): a few of another connection's transactions without an fsync, and no more
/// than one such transaction with one (`synchronous=FULL`). Past it, retries sleep on the
/// Tokio timer, so a long writer never holds up this thread for longer.
const BRIEF_BUDGET: Duration = Duration::from_micros(500);
/// The first delay on the Tokio timer (after a holder's brief waits); it doubles up to
/// [`MAX_DELAY`].
const MIN_DELAY: Duration = Duration::from_millis(1);
/// The longest delay between attempts.
const MAX_DELAY: Duration = Duration::from_millis(50);
/// The longest delay between attempts of an operation on a lease already held
/// ([`Op::FOR_A_HOLDER`]): SQLite's lock has no queue, so under contention these retry
/// more often than acquisitions, and a holder is not starved into losing its lease.
const HOLDER_MAX_DELAY: Duration = Duration::from_millis(5);

/// What an operation can fail with inside its transaction.
#[derive(Debug)]
pub(crate) enum OpError {
    /// The driver failed; busy failures are retried.
    Db(DbError),
    /// A final answer (lease lost, corrupt row, foreign schema).
    Lock(LockError),
}

impl From<DbError> for OpError {
    fn from(e: DbError) -> Self {
        Self::Db(e)
    }
}

impl From<LockError> for OpError {
    fn from(e: LockError) -> Self {
        Self::Lock(e)
    }
}

/// One operation: the statements of one transaction, and the decisions between them.
pub(crate) trait Op: Sync {
    /// What the operation returns.
    type Output: Send;
    /// How its transaction starts.
    const KIND: TxKind;
    /// Renews or frees a lease already held (heartbeat, release): retried sooner when busy.
    const FOR_A_HOLDER: bool = false;
    /// Grants or renews a lease (acquire, heartbeat): its answer is given only once the
    /// database file is known to be still the one the backend opened (see `file_identity`).
    const GRANTS: bool = false;

    /// Runs the operation inside `tx`; `cx` names the database in messages and gives the
    /// clocks.
    fn run<S: Statements>(
        &self,
        tx: &mut S,
        cx: &Cx<'_>,
    ) -> impl Future<Output = Result<Self::Output, OpError>> + Send;
}

/// Runs `op` in its own transaction on `driver`, retrying while the database is busy, for at
/// most `budget`.
pub(crate) async fn run<D: Driver, O: Op>(
    driver: &D,
    cx: &Cx<'_>,
    budget: Duration,
    op: &O,
) -> Result<O::Output, LockError> {
    let db = cx.db;
    let start = Instant::now();
    let deadline = Instant::from_std(lock_core::backend_kit::time::instant_after(
        start.into_std(),
        budget,
    ));
    let max_delay = if O::FOR_A_HOLDER {
        HOLDER_MAX_DELAY
    } else {
        MAX_DELAY
    };
    let mut brief = BriefWaits::new();
    let mut backoff = Backoff::new(MIN_DELAY, max_delay);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match attempt(driver, cx, op, deadline).await {
            Ok(out) => return Ok(out),
            Err(Failure::Busy(e)) => Some(e.into_source()),
            Err(Failure::OutOfTime) => None,
            Err(Failure::Final(e)) => return Err(e),
        };
        let now = Instant::now();
        if last.is_none() || now >= deadline {
            return Err(LockError::unavailable(
                BACKEND,
                StillBusy {
                    db: db.to_owned(),
                    waited: start.elapsed(),
                    attempts,
                    last,
                },
            ));
        }
        if O::FOR_A_HOLDER && brief.wait(deadline - now) {
            continue;
        }
        // The last attempt is made at the deadline: the caller gets the whole budget.
        let delay = backoff.next_delay().min(deadline - now);
        tracing::trace!(db, attempts, ?delay, "database busy, retrying");
        sleep(delay).await;
    }
}

/// The brief waits of one operation on the calling thread (see the module docs).
#[derive(Debug)]
struct BriefWaits {
    backoff: Backoff,
    spent: Duration,
}

impl BriefWaits {
    fn new() -> Self {
        Self {
            backoff: Backoff::new(BRIEF_FIRST, BRIEF_BUDGET),
            spent: Duration::ZERO,
        }
    }

    /// Waits briefly on this thread and returns `true`, or returns `false` at once when the
    /// next wait would take the operation past [`BRIEF_BUDGET`] or `left` (then the caller
    /// sleeps on the timer).
    fn wait(&mut self, left: Duration) -> bool {
        let delay = self.backoff.next_delay();
        if self.spent + delay > BRIEF_BUDGET || delay >= left {
            self.spent = BRIEF_BUDGET;
            return false;
        }
        let start = std::time::Instant::now();
        std::thread::sleep(delay);
        self.spent += start.elapsed();
        true
    }
}

enum Failure {
    Busy(DbError),
    OutOfTime,
    Final(LockError),
}

/// One attempt. Starting the transaction and running the statements are bounded by the
/// deadline (a driver whose connection has its own `busy_timeout` may wait inside SQLite);
/// dropping them there rolls the transaction back. The commit is not cut short: its
/// outcome must be known.
async fn attempt<D: Driver, O: Op>(
    driver: &D,
    cx: &Cx<'_>,
    op: &O,
    deadline: Instant,
) -> Result<O::Output, Failure> {
    let db = cx.db;
    let classify = |e: OpError| match e {
        OpError::Db(e) if e.is_busy() => Failure::Busy(e),
        OpError::Db(e) => Failure::Final(e.into_lock_error(db)),
        OpError::Lock(e) => Failure::Final(e),
    };
    let work = async {
        let mut tx = driver.begin(O::KIND).await?;
        let out = op.run(&mut tx, cx).await?;
        Ok::<_, OpError>((tx, out))
    };
    let (tx, out) = match timeout_at(deadline, work).await {
        Ok(done) => done.map_err(classify)?,
        Err(_) => return Err(Failure::OutOfTime),
    };
    tx.commit().await.map_err(|e| classify(e.into()))?;
    Ok(out)
}

/// The database stayed busy for the whole budget.
#[derive(Debug)]
struct StillBusy {
    db: String,
    waited: Duration,
    attempts: u32,
    last: Option<BoxError>,
}

impl fmt::Display for StillBusy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database {} stayed busy (locked by another connection) for {} over {} attempt(s)",
            self.db,
            humantime::format_duration(Duration::from_millis(
                u64::try_from(self.waited.as_millis()).unwrap_or(u64::MAX)
            )),
            self.attempts
        )?;
        match &self.last {
            Some(e) => write!(f, " (last: {e})")?,
            None => {
                f.write_str(" (still waiting for a connection or for SQLite's busy handler)")?
            }
        }
        f.write_str(
            "; a long write transaction on it holds the lock (another process, or another \
             connection of this one): keep such transactions short, or raise the busy budget \
             (URL option ?busy_timeout=60s, SqliteOptions::busy_timeout)",
        )
    }
}

impl std::error::Error for StillBusy {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.last
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brief_waits_double_and_stop_within_their_budget() {
        let mut brief = BriefWaits::new();
        let start = std::time::Instant::now();
        let mut waits = 0;
        while brief.wait(Duration::from_secs(1)) {
            waits += 1;
            assert!(waits < 10, "brief waits never end");
        }
        // 20 µs doubling (each jittered to half or more) fits a few times into 0.5 ms; the
        // timer slack of each sleep (50 µs by default) may cut that short, never extend it.
        assert!(waits >= 1, "no brief wait at all");
        assert!(brief.spent >= BRIEF_BUDGET);
        // Bounded: the budget counts the time each sleep really took, so only the last one
        // can run over (by however long this thread waited for a CPU).
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "brief waits took {:?}",
            start.elapsed()
        );
        assert!(
            !brief.wait(Duration::from_secs(1)),
            "the budget is spent for good"
        );
    }

    #[test]
    fn no_brief_wait_reaches_past_what_is_left_of_the_busy_budget() {
        let mut brief = BriefWaits::new();
        assert!(!brief.wait(Duration::from_micros(5)));
        assert!(
            !brief.wait(Duration::from_secs(1)),
            "the budget is spent for good"
        );
    }
}
