//! Sending statements, and retrying what may be retried inside an operation's budget.
//!
//! A statement goes out either bound to a server-side prepared statement (sqlx's statement
//! cache: one round trip once prepared), or, when prepared statements are off, as one simple
//! query with its parameters inlined as literals (one round trip, no session state: what
//! PgBouncer in transaction mode needs).
//!
//! Serialization failures, deadlocks, lock and statement timeouts, an administrator's
//! `pg_terminate_backend` and dropped connections are retried with jittered backoff until the
//! operation's budget runs out; only then does the caller see [`LockError::Unavailable`].
//! Nothing else is retried: a read-only server, a missing privilege or a damaged table is a
//! typed error at once.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lock_core::backend_kit::Backoff;
use lock_core::backend_kit::time::instant_after;
use lock_core::{BoxError, LockError};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Executor, PgPool, Postgres};
use tokio::time::{Instant, sleep, timeout_at};

use crate::BACKEND;
use crate::sql::{Param, inline};

/// The first delay after a failure that may be retried; it doubles up to [`MAX_DELAY`].
const MIN_DELAY: Duration = Duration::from_millis(2);
/// The longest delay between attempts.
const MAX_DELAY: Duration = Duration::from_millis(100);

/// How statements reach the server.
#[derive(Clone)]
pub(crate) struct Db {
    pub(crate) pool: PgPool,
    /// Prepared statements (sqlx's cache), or simple queries with inlined literals.
    pub(crate) prepared: bool,
    /// The budget of one operation.
    pub(crate) timeout: Duration,
    /// The server as messages name it.
    pub(crate) shown: Arc<str>,
    /// The lease table as messages name it.
    pub(crate) table: Arc<str>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("server", &self.shown)
            .field("table", &self.table)
            .field("prepared", &self.prepared)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A driver or server error, to classify.
    Sql(sqlx::Error),
    /// A final answer.
    Lock(LockError),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<LockError> for Failure {
    fn from(e: LockError) -> Self {
        Self::Lock(e)
    }
}

/// What to do about a failed attempt.
enum Verdict {
    /// Try again. `ambiguous`: the statement may have committed before the answer was lost.
    Retry { ambiguous: bool },
    /// Give up with this error.
    Final(LockError),
}

impl Db {
    /// Runs `attempt` until it succeeds, fails for good, or the budget runs out. `attempt`
    /// is told whether an earlier attempt's outcome is unknown (its connection dropped after
    /// the statement was sent), so that it can recognise its own earlier success.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        mut attempt: F,
    ) -> Result<T, LockError>
    where
        F: FnMut(bool) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let start = Instant::now();
        let deadline = Instant::from_std(instant_after(start.into_std(), self.timeout));
        let mut backoff = Backoff::new(MIN_DELAY, MAX_DELAY);
        let mut attempts = 0u32;
        let mut unknown = false;
        // The last failure the server or driver reported, kept when a later attempt is cut
        // short by the deadline: it says why the operation kept failing.
        let mut last: Option<BoxError> = None;
        loop {
            attempts += 1;
            let failed = match timeout_at(deadline, attempt(unknown)).await {
                Ok(Ok(out)) => return Ok(out),
                Ok(Err(Failure::Lock(e))) => return Err(e),
                Ok(Err(Failure::Sql(e))) => match self.classify(e) {
                    (Verdict::Final(e), _) => return Err(e),
                    (Verdict::Retry { ambiguous }, source) => {
                        unknown |= ambiguous;
                        last = Some(source);
                        true
                    }
                },
                // Cut short at the deadline: whatever was sent may have been done.
                Err(_) => {
                    unknown = true;
                    false
                }
            };
            let now = Instant::now();
            if !failed || now >= deadline {
                return Err(LockError::unavailable(
                    BACKEND,
                    OutOfTime {
                        operation,
                        server: Arc::clone(&self.shown),
                        waited: start.elapsed(),
                        attempts,
                        last: last.take(),
                        cut_short: !failed,
                    },
                ));
            }
            let delay = backoff.next_delay().min(deadline - now);
            tracing::debug!(operation, attempts, ?delay, error = ?last, "retrying");
            sleep(delay).await;
        }
    }

    /// Sorts a driver error into "retry" or a final [`LockError`]; also returns it boxed.
    fn classify(&self, e: sqlx::Error) -> (Verdict, BoxError) {
        use sqlx::Error as E;
        let verdict = match &e {
            E::Database(db) => {
                let code = db.code().unwrap_or_default().into_owned();
                match code.as_str() {
                    // serialization_failure, deadlock_detected, lock_not_available,
                    // query_canceled (statement_timeout), admin/crash shutdown,
                    // cannot_connect_now, too_many_connections, insufficient_resources:
                    // the statement was rolled back, nothing was done.
                    "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03"
                    | "53300" | "53400" => Verdict::Retry { ambiguous: false },
                    c if c.starts_with("08") => Verdict::Retry { ambiguous: true },
                    // invalid_password, invalid_authorization, invalid_catalog_name.
                    "28P01" | "28000" | "3D000" => Verdict::Final(LockError::config(
                        BACKEND,
                        format!(
                            "the server {} refused this connection ({}): check the user, \
                             password and database in the URL",
                            self.shown,
                            db.message()
                        ),
                    )),
                    "25006" => Verdict::Final(LockError::config(
                        BACKEND,
                        format!(
                            "the server {} is read-only ({}): it refuses to take or free \
                             leases; point the URL at the primary, or turn off \
                             default_transaction_read_only for this role or database",
                            self.shown,
                            db.message()
                        ),
                    )),
                    "42501" => Verdict::Final(LockError::config(
                        BACKEND,
                        format!(
                            "this role may not use the lease tables {} on {} ({}): GRANT \
                             SELECT, INSERT, UPDATE, DELETE on {} and its _fences table to it",
                            self.table,
                            self.shown,
                            db.message(),
                            self.table
                        ),
                    )),
                    "42P01" | "42703" | "3F000" => Verdict::Final(LockError::config(
                        BACKEND,
                        format!(
                            "the lease tables {} on {} were dropped or changed while in use \
                             ({}); connect again to recreate them",
                            self.table,
                            self.shown,
                            db.message()
                        ),
                    )),
                    "23514" | "23502" | "22003" => Verdict::Final(LockError::corrupt(
                        BACKEND,
                        format!(
                            "the server refused a value for {} ({}): a fence counter \
                             reached its limit or a row was changed by hand",
                            self.table,
                            db.message()
                        ),
                    )),
                    _ => Verdict::Final(LockError::backend(BACKEND, e.to_string())),
                }
            }
            E::PoolTimedOut => Verdict::Retry { ambiguous: false },
            E::Io(_) | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed => {
                Verdict::Retry { ambiguous: true }
            }
            E::PoolClosed => Verdict::Final(LockError::config(
                BACKEND,
                "the connection pool was closed (PgPool::close): this backend can no longer \
                 reach the server; build a new one",
            )),
            E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) => Verdict::Final(
                LockError::corrupt(BACKEND, format!("cannot read a row of {}: {e}", self.table)),
            ),
            E::Configuration(_) => Verdict::Final(LockError::config(BACKEND, e.to_string())),
            _ => Verdict::Final(LockError::backend(BACKEND, e.to_string())),
        };
        (verdict, Box::new(e))
    }

    /// Every row `sql` returns with `params`, on `executor` (the pool, or a transaction).
    pub(crate) async fn fetch_all<'e, E>(
        &self,
        executor: E,
        sql: &Arc<str>,
        params: &[Param],
    ) -> Result<Vec<PgRow>, sqlx::Error>
    where
        E: Executor<'e, Database = Postgres>,
    {
        if self.prepared {
            bind(sqlx::query(AssertSqlSafe(Arc::clone(sql))), params)
                .fetch_all(executor)
                .await
        } else {
            sqlx::raw_sql(AssertSqlSafe(inline(sql, params)))
                .fetch_all(executor)
                .await
        }
    }

    /// The one row `sql` returns.
    pub(crate) async fn fetch_one<'e, E>(
        &self,
        executor: E,
        sql: &Arc<str>,
        params: &[Param],
    ) -> Result<PgRow, sqlx::Error>
    where
        E: Executor<'e, Database = Postgres>,
    {
        self.fetch_all(executor, sql, params)
            .await?
            .pop()
            .ok_or(sqlx::Error::RowNotFound)
    }
}

fn bind<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    params: &[Param],
) -> Query<'q, Postgres, PgArguments> {
    for param in params {
        query = match param {
            Param::Text(s) => query.bind(s.clone()),
            Param::Int(n) => query.bind(*n),
            Param::BigInt(n) => query.bind(*n),
            Param::Bool(b) => query.bind(*b),
            Param::TextArray(items) => query.bind(items.clone()),
        };
    }
    query
}

/// An operation's budget ran out while the server kept failing, or did not answer.
#[derive(Debug)]
struct OutOfTime {
    operation: &'static str,
    server: Arc<str>,
    waited: Duration,
    attempts: u32,
    last: Option<BoxError>,
    /// The last attempt got no answer before the deadline.
    cut_short: bool,
}

impl fmt::Display for OutOfTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} did not complete within {} ({} attempt(s)",
            self.operation,
            self.server,
            humantime_ms(self.waited),
            self.attempts
        )?;
        match (&self.last, self.cut_short) {
            (Some(e), false) => write!(f, "; last: {e}")?,
            (Some(e), true) => write!(
                f,
                "; the last got no answer in time, the one before failed with: {e}"
            )?,
            (None, _) => f.write_str("; the server did not answer")?,
        }
        f.write_str(
            "); if the server is up but slow or busy, raise the operation budget (URL option \
             ?timeout=5s, PostgresOptions::with_timeout)",
        )
    }
}

impl std::error::Error for OutOfTime {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.last
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

fn humantime_ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
