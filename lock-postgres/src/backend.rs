//! [`PostgresBackend`]: the [`LockBackend`] implementation.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lock_core::backend_kit::Driver;
use lock_core::backend_kit::batch::all_failed;
use lock_core::backend_kit::fence::MAX_FENCE;
use lock_core::backend_kit::permits::{limit_mismatch, validate_limit};
use lock_core::backend_kit::time::{monotonic_now, validate_ttl};
use lock_core::{
    Capabilities, Holder, Lease, LeaseInfo, LockBackend, LockError, LockName, Result, async_trait,
};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};

use crate::BACKEND;
use crate::exec::{Db, Failure};
use crate::notify::Notifier;
use crate::options::PostgresOptions;
use crate::schema;
use crate::sql::{Param, Statements, clean};

/// Leases in PostgreSQL tables. Clones share one pool and one `LISTEN` connection.
///
/// Build it with [`connect`](crate::connect), [`PostgresBackend::connect`],
/// [`PostgresBackend::connect_with`], or on an application's own pool with
/// [`PostgresBackend::new`] / [`PostgresBackend::from_pool`]. The first connection creates
/// the tables if they are missing.
#[derive(Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    sql: Statements,
    opts: PostgresOptions,
    notifier: Notifier,
}

/// This backend's entry in the `leaselock` facade's registry: `postgres://` and
/// `postgresql://` URLs.
pub const DRIVER: Driver = Driver {
    name: BACKEND,
    schemes: crate::URL_SCHEMES,
    connect: |url| {
        Box::pin(async move { Ok(Arc::new(PostgresBackend::connect(&url).await?) as _) })
    },
};

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("server", &self.inner.opts.shown())
            .field("schema", &self.inner.sql.schema)
            .field("table", &self.inner.sql.table)
            .field("prepared_statements", &self.inner.db.prepared)
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// Connects to the server at `url` (see the crate docs for the format and options) and
    /// creates the lease tables if they are missing.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] for a bad URL, refused credentials, a missing database, tables
    /// of another shape or a newer version, or a role that may not create them (the message
    /// has the DDL to run); [`LockError::Unavailable`] when the server cannot be reached
    /// within the operation timeout.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url.parse()?).await
    }

    /// Connects with `opts` (parse them from a URL, then adjust them with their `with_*`
    /// setters), on a pool of its own.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn connect_with(opts: PostgresOptions) -> Result<Self> {
        opts.validate()?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.connect_timeout)
            // A dead connection fails its statement, which is retried on another: a ping
            // before every statement would double the round trips.
            .test_before_acquire(false)
            .connect_lazy_with(opts.connect.clone());
        Self::open(pool, opts).await
    }

    /// Keeps the locks in the database of an application's own pool, in the default schema
    /// and table.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn new(pool: PgPool) -> Result<Self> {
        let opts = PostgresOptions::new((*pool.connect_options()).clone());
        Self::open(pool, opts).await
    }

    /// As [`new`](Self::new), with the schema, table, timeouts and statement mode of `opts`
    /// (its connection settings and pool size are the pool's own).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn from_pool(pool: PgPool, opts: PostgresOptions) -> Result<Self> {
        opts.validate()?;
        Self::open(pool, opts).await
    }

    async fn open(pool: PgPool, opts: PostgresOptions) -> Result<Self> {
        let sql = Statements::new(&opts.schema, &opts.table);
        let db = Db {
            pool: pool.clone(),
            prepared: opts.statement_cache,
            timeout: opts.timeout,
            shown: Arc::from(opts.shown()),
            table: Arc::from(format!("{}.{}", sql.schema, sql.table)),
        };
        schema::ensure(&db, &sql).await?;
        // The LISTEN connection is a session of its own, never one of the pool's.
        let listen_pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(opts.connect_timeout)
            .connect_lazy_with(
                opts.listen_url
                    .clone()
                    .unwrap_or_else(|| (*pool.connect_options()).clone()),
            );
        let notifier = Notifier::new(
            db.clone(),
            listen_pool,
            sql.channel.clone(),
            opts.connect_timeout,
            opts.listen,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                sql,
                opts,
                notifier,
            }),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &PostgresOptions {
        &self.inner.opts
    }

    /// The pool statements go through.
    pub fn pool(&self) -> &PgPool {
        &self.inner.db.pool
    }

    /// The schema-qualified lease table and fence counter table, quoted.
    pub fn tables(&self) -> (String, String) {
        let s = &self.inner.sql;
        let q = crate::sql::ident;
        (
            format!("{}.{}", q(&s.schema), q(&s.table)),
            format!("{}.{}", q(&s.schema), q(&s.fences_table)),
        )
    }

    /// The `NOTIFY` channel releases are announced on.
    pub fn channel(&self) -> &str {
        &self.inner.sql.channel
    }

    /// True while the `LISTEN` connection is up and has heard its own check, so
    /// [`wait_for_change`](LockBackend::wait_for_change) wakes on a release instead of
    /// polling. It starts in the background the first time this backend finds a lock held
    /// or waits.
    pub fn is_listening(&self) -> bool {
        self.inner.notifier.is_live()
    }

    fn acquire_params(
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
        serialized: bool,
        reclaim: bool,
    ) -> Vec<Param> {
        vec![
            Param::Text(name.as_str().to_owned()),
            Param::Int(i32::try_from(limit).unwrap_or(i32::MAX)),
            Param::Text(holder.token.to_hex()),
            Param::Text(clean(&holder.label)),
            Param::BigInt(i64::from(holder.pid)),
            Param::Text(clean(&holder.host)),
            Param::BigInt(ttl_micros(ttl)),
            Param::Bool(serialized),
            Param::Bool(reclaim),
        ]
    }

    /// One acquisition attempt. A lock (limit 1) takes the one-statement lock path; a
    /// semaphore, or a lock whose name still has rows of another limit, takes the general
    /// statement inside a short transaction that holds the name's advisory lock.
    async fn attempt_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
        reclaim: bool,
    ) -> std::result::Result<Acquired, Failure> {
        let db = &self.inner.db;
        let sql = &self.inner.sql;
        let mut serialized = limit > 1;
        if !serialized {
            let params = [
                Param::Text(name.as_str().to_owned()),
                Param::Text(holder.token.to_hex()),
                Param::Text(clean(&holder.label)),
                Param::BigInt(i64::from(holder.pid)),
                Param::Text(clean(&holder.host)),
                Param::BigInt(ttl_micros(ttl)),
                Param::Bool(reclaim),
            ];
            let row = db.fetch_one(&db.pool, &sql.acquire_lock, &params).await?;
            match Self::outcome(name, limit, &row)? {
                // The lease this token already holds: the general statement reads it.
                Outcome::Mine => {}
                Outcome::Serialize => serialized = true,
                // The slot looked free but was taken live before this statement got to it.
                Outcome::Raced => return Ok(Acquired::Held),
                Outcome::Done(acquired) => return Ok(acquired),
            }
        }
        // A lock on slot 0 may be taken under a serialized grant's feet: look again.
        for _ in 0..4 {
            let params = Self::acquire_params(name, holder, ttl, limit, serialized, reclaim);
            let row = if serialized {
                let mut tx = db.pool.begin().await?;
                db.fetch_all(
                    &mut *tx,
                    &sql.serialize,
                    &[Param::Text(sql.advisory_key(name.as_str()))],
                )
                .await?;
                db.fetch_all(
                    &mut *tx,
                    &sql.sweep,
                    &[Param::Text(name.as_str().to_owned())],
                )
                .await?;
                let row = db.fetch_one(&mut *tx, &sql.acquire, &params).await?;
                tx.commit().await?;
                row
            } else {
                db.fetch_one(&db.pool, &sql.acquire, &params).await?
            };
            match Self::outcome(name, limit, &row)? {
                Outcome::Done(acquired) => return Ok(acquired),
                Outcome::Serialize => serialized = true,
                Outcome::Raced if !serialized => return Ok(Acquired::Held),
                Outcome::Raced | Outcome::Mine => {}
            }
        }
        Ok(Acquired::Held)
    }

    /// What an acquire statement's row says.
    fn outcome(name: &LockName, limit: u32, row: &PgRow) -> std::result::Result<Outcome, Failure> {
        let status: String = row.try_get("status")?;
        Ok(match status.as_str() {
            "granted" => {
                let fence = fence_of(row.try_get::<Option<i64>, _>("fence")?)?;
                let expires = row
                    .try_get::<Option<i64>, _>("expires_us")?
                    .map(from_micros)
                    .ok_or_else(|| LockError::corrupt(BACKEND, "a grant without an expiry time"))?;
                Outcome::Done(Acquired::Granted { fence, expires })
            }
            // The general statement reports this token's own live lease with its fence.
            "mine" if row.try_get::<Option<i64>, _>("fence")?.is_some() => {
                let fence = fence_of(row.try_get::<Option<i64>, _>("fence")?)?;
                let expires = row
                    .try_get::<Option<i64>, _>("expires_us")?
                    .map(from_micros)
                    .ok_or_else(|| LockError::corrupt(BACKEND, "a lease without an expiry time"))?;
                Outcome::Done(Acquired::Granted { fence, expires })
            }
            "mine" => Outcome::Mine,
            "held" => Outcome::Done(Acquired::Held),
            "mismatch" => {
                let held: Option<i32> = row.try_get("other_permits")?;
                let held = held.and_then(|h| u32::try_from(h).ok()).unwrap_or(0);
                return Err(limit_mismatch(BACKEND, name, held, limit).into());
            }
            "serialize" => Outcome::Serialize,
            "raced" => Outcome::Raced,
            other => {
                return Err(LockError::backend(
                    BACKEND,
                    format!("the acquire statement answered {other:?}"),
                )
                .into());
            }
        })
    }

    fn info_of(&self, row: &PgRow) -> std::result::Result<LeaseInfo, Failure> {
        let raw: String = row.try_get(0)?;
        let name = LockName::new(&raw).map_err(|e| {
            LockError::corrupt(
                BACKEND,
                format!("a lease row names no valid lock ({raw:?}): {e}"),
            )
        })?;
        let permits: i32 = row.try_get(1)?;
        let fence = fence_of(Some(row.try_get(5)?))?;
        let pid: i64 = row.try_get(3)?;
        let pid = u32::try_from(pid).map_err(|_| {
            LockError::corrupt(BACKEND, format!("the lease of {name} has pid {pid}"))
        })?;
        Ok(LeaseInfo::new(
            name,
            row.try_get::<String, _>(2)?,
            pid,
            row.try_get::<String, _>(4)?,
            fence,
            from_micros(row.try_get(6)?),
            from_micros(row.try_get(7)?),
        )
        .with_limit(u32::try_from(permits).unwrap_or(1)))
    }
}

/// What one acquire statement said.
enum Outcome {
    /// Granted, or held by others.
    Done(Acquired),
    /// This token's own live lease (a retry after a lost answer): read it.
    Mine,
    /// The name has rows of another limit: take the serialized path.
    Serialize,
    /// The slot was taken between the statement's look and its insert.
    Raced,
}

/// What an acquisition attempt found.
enum Acquired {
    Granted { fence: u64, expires: SystemTime },
    Held,
}

/// Microseconds for the lease's TTL, rounded up so the store never expires it early.
fn ttl_micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_nanos().div_ceil(1_000)).unwrap_or(i64::MAX)
}

fn from_micros(us: i64) -> SystemTime {
    match u64::try_from(us) {
        Ok(us) => UNIX_EPOCH + Duration::from_micros(us),
        Err(_) => UNIX_EPOCH - Duration::from_micros(us.unsigned_abs()),
    }
}

fn fence_of(fence: Option<i64>) -> std::result::Result<u64, LockError> {
    fence
        .and_then(|f| u64::try_from(f).ok())
        .filter(|f| (1..=MAX_FENCE).contains(f))
        .ok_or_else(|| {
            LockError::corrupt(
                BACKEND,
                format!("a lease has fence {fence:?}, outside 1..=2^53-1"),
            )
        })
}

#[async_trait]
impl LockBackend for PostgresBackend {
    #[tracing::instrument(name = "try_acquire", level = "debug", skip_all, fields(lock = %name))]
    async fn try_acquire(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.try_acquire_permit(name, holder, ttl, 1).await
    }

    #[tracing::instrument(name = "try_acquire_permit", level = "debug", skip_all, fields(lock = %name, limit))]
    async fn try_acquire_permit(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
        limit: u32,
    ) -> Result<Option<Lease>> {
        validate_ttl(ttl)?;
        validate_limit(limit)?;
        let sent = monotonic_now();
        let acquired = self
            .inner
            .db
            .run("acquire", |unknown| {
                self.attempt_acquire(name, holder, ttl, limit, unknown)
            })
            .await?;
        match acquired {
            Acquired::Granted { fence, expires } => Ok(Some(Lease::new(
                name.clone(),
                holder.clone(),
                fence,
                expires,
                sent,
                ttl,
            ))),
            Acquired::Held => {
                // Contention: this process is likely to wait for the name next.
                self.inner.notifier.start();
                Ok(None)
            }
        }
    }

    #[tracing::instrument(name = "heartbeat", level = "debug", skip_all, fields(lock = %lease.name))]
    async fn heartbeat(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        validate_ttl(ttl)?;
        let db = &self.inner.db;
        let params = [
            Param::Text(lease.name.as_str().to_owned()),
            Param::Text(lease.holder.token.to_hex()),
            Param::BigInt(ttl_micros(ttl)),
        ];
        let sent = monotonic_now();
        let rows = db
            .run("heartbeat", |_| async {
                Ok::<_, Failure>(
                    db.fetch_all(&db.pool, &self.inner.sql.heartbeat, &params)
                        .await?,
                )
            })
            .await?;
        match rows.first() {
            Some(row) => {
                let expires: i64 = row.try_get(0).map_err(|e| {
                    LockError::corrupt(BACKEND, format!("cannot read a heartbeat's answer: {e}"))
                })?;
                Ok(lease.renewed(from_micros(expires), sent, ttl))
            }
            None => Err(LockError::LeaseLost {
                name: lease.name.clone(),
            }),
        }
    }

    #[tracing::instrument(name = "release", level = "debug", skip_all, fields(lock = %lease.name))]
    async fn release(&self, lease: &Lease) -> Result<bool> {
        let db = &self.inner.db;
        let params = [
            Param::Text(lease.name.as_str().to_owned()),
            Param::Text(lease.holder.token.to_hex()),
            Param::Text(self.inner.sql.channel.clone()),
        ];
        let freed = db
            .run("release", |_| async {
                let rows = db
                    .fetch_all(&db.pool, &self.inner.sql.release, &params)
                    .await?;
                match rows.first() {
                    // Not there (released, taken over and released, never ours): false.
                    None => Ok::<bool, Failure>(false),
                    Some(row) => Ok(row.try_get("freed")?),
                }
            })
            .await?;
        if freed {
            self.inner.notifier.record_own_release(&lease.name);
        }
        Ok(freed)
    }

    #[tracing::instrument(name = "inspect", skip_all, fields(lock = %name))]
    async fn inspect(&self, name: &LockName) -> Result<Option<LeaseInfo>> {
        Ok(self.inspect_all(name).await?.pop())
    }

    #[tracing::instrument(name = "inspect_all", skip_all, fields(lock = %name))]
    async fn inspect_all(&self, name: &LockName) -> Result<Vec<LeaseInfo>> {
        let db = &self.inner.db;
        let params = [Param::Text(name.as_str().to_owned())];
        db.run("inspect", |_| async {
            let rows = db
                .fetch_all(&db.pool, &self.inner.sql.inspect, &params)
                .await?;
            rows.iter()
                .map(|row| self.info_of(row))
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .await
    }

    #[tracing::instrument(name = "force_release", skip_all, fields(lock = %name))]
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let db = &self.inner.db;
        let params = [
            Param::Text(name.as_str().to_owned()),
            Param::Text(self.inner.sql.channel.clone()),
        ];
        let freed = db
            .run("force_release", |_| async {
                let row = db
                    .fetch_one(&db.pool, &self.inner.sql.force_release, &params)
                    .await?;
                Ok::<bool, Failure>(row.try_get("freed")?)
            })
            .await?;
        self.inner.notifier.record_own_release(name);
        Ok(freed)
    }

    async fn wait_for_change(&self, name: &LockName, since: Instant, max: Duration) {
        self.inner
            .notifier
            .wait(name, since, max, self.inner.opts.poll)
            .await;
    }

    #[tracing::instrument(name = "list", skip_all, fields(prefix = %prefix))]
    async fn list(&self, prefix: &str) -> Result<Vec<LeaseInfo>> {
        let db = &self.inner.db;
        // PostgreSQL text cannot hold NUL, and no name does.
        if prefix.contains('\0') {
            return Ok(Vec::new());
        }
        let params = [Param::Text(prefix.to_owned())];
        let rows = db
            .run("list", |_| async {
                Ok::<_, Failure>(
                    db.fetch_all(&db.pool, &self.inner.sql.list, &params)
                        .await?,
                )
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.info_of(row) {
                Ok(info) => out.push(info),
                // One damaged row must not hide every other lease (nor break `lockctl
                // status`); inspecting or force-releasing that name reports it.
                Err(Failure::Lock(error)) => {
                    tracing::warn!(%error, "skipping an unreadable lease row while listing");
                }
                Err(Failure::Sql(error)) => {
                    tracing::warn!(%error, "skipping an unreadable lease row while listing");
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.fence.cmp(&b.fence)));
        Ok(out)
    }

    async fn heartbeat_many(&self, leases: &[Lease], ttl: Duration) -> Vec<Result<Lease>> {
        if let Err(e) = validate_ttl(ttl) {
            return all_failed(e, leases.len());
        }
        if leases.len() < 2 {
            let mut out = Vec::with_capacity(leases.len());
            for lease in leases {
                out.push(self.heartbeat(lease, ttl).await);
            }
            return out;
        }
        let db = &self.inner.db;
        let params = [
            Param::TextArray(leases.iter().map(|l| l.name.as_str().to_owned()).collect()),
            Param::TextArray(leases.iter().map(|l| l.holder.token.to_hex()).collect()),
            Param::BigInt(ttl_micros(ttl)),
        ];
        let sent = monotonic_now();
        let rows = db
            .run("heartbeat_many", |_| async {
                let rows = db
                    .fetch_all(&db.pool, &self.inner.sql.heartbeat_many, &params)
                    .await?;
                let mut renewed = HashMap::with_capacity(rows.len());
                for row in rows {
                    let name: String = row.try_get(0)?;
                    let token: String = row.try_get(1)?;
                    let expires: i64 = row.try_get(2)?;
                    renewed.insert((name, token), expires);
                }
                Ok::<_, Failure>(renewed)
            })
            .await;
        let renewed = match rows {
            Ok(renewed) => renewed,
            Err(e) => return all_failed(e, leases.len()),
        };
        leases
            .iter()
            .map(|lease| {
                let key = (lease.name.as_str().to_owned(), lease.holder.token.to_hex());
                match renewed.get(&key) {
                    Some(expires) => Ok(lease.renewed(from_micros(*expires), sent, ttl)),
                    None => Err(LockError::LeaseLost {
                        name: lease.name.clone(),
                    }),
                }
            })
            .collect()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_notifies_release(self.inner.opts.listen)
            .with_shared_across_hosts(true)
            .with_list(true)
            .with_batched_heartbeat(true)
            .with_semaphores(true)
    }

    fn backend_name(&self) -> &'static str {
        BACKEND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn backend(tag: &str) -> PostgresBackend {
        let url = lock_testkit::postgres::shared().url();
        let opts: PostgresOptions = url.parse().unwrap();
        PostgresBackend::connect_with(opts.with_schema(lock_testkit::postgres::unique_schema(tag)))
            .await
            .unwrap()
    }

    /// An acquisition retried after its answer was lost (the connection dropped after the
    /// statement was sent) finds the lease it was granted, instead of waiting out its own
    /// TTL; a first attempt never does (acquire is not re-entrant).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retry_after_a_lost_answer_recognises_its_own_lease() {
        for limit in [1, 3] {
            let b = backend("reclaim").await;
            let name = LockName::new(format!("reclaim-{limit}")).unwrap();
            let me = Holder::current("me");
            let ttl = Duration::from_secs(30);
            let lease = b
                .try_acquire_permit(&name, &me, ttl, limit)
                .await
                .unwrap()
                .unwrap();
            let first = b.attempt_acquire(&name, &me, ttl, limit, false).await;
            if limit == 1 {
                assert!(matches!(first, Ok(Acquired::Held)), "not re-entrant");
            }
            match b.attempt_acquire(&name, &me, ttl, limit, true).await {
                Ok(Acquired::Granted { fence, .. }) => assert_eq!(fence, lease.fence),
                Ok(Acquired::Held) => panic!("limit {limit}: the retry did not find its lease"),
                Err(e) => panic!("limit {limit}: {e:?}"),
            }
            let others = Holder::current("other");
            match b
                .attempt_acquire(&name, &others, ttl, 1.max(limit), true)
                .await
            {
                Ok(Acquired::Granted { fence, .. }) => {
                    assert!(
                        limit > 1 && fence > lease.fence,
                        "another token got {fence}"
                    );
                }
                Ok(Acquired::Held) => assert_eq!(limit, 1),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
}
