//! Retrying a busy database inside the busy budget, the same way for both drivers.
//!
//! Each attempt is one short transaction. When another connection holds the write lock,
//! SQLite answers `SQLITE_BUSY`; the attempt is rolled back, the task sleeps a jittered,
//! growing delay on the Tokio timer (never inside SQLite), and tries again until the
//! budget is spent. Only then does the caller see [`LockError::Unavailable`].

use std::fmt;
use std::future::Future;
use std::time::Duration;

use lock_core::backend_kit::Backoff;
use lock_core::{BoxError, LockError};
use tokio::time::{Instant, sleep, timeout_at};

use crate::BACKEND;
use crate::driver::{DbError, Driver, Statements, TxKind};
use crate::now::Cx;

/// The first delay after a busy answer; it doubles up to [`MAX_DELAY`].
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
        // The last attempt is made at the deadline: the caller gets the whole budget.
        let delay = backoff.next_delay().min(deadline - now);
        tracing::trace!(db, attempts, ?delay, "database busy, retrying");
        sleep(delay).await;
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
