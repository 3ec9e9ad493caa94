//! The lease operations, written once for both drivers: which statements run in which
//! order, and what their results mean.
//!
//! Schema version 3 keeps one row per permit slot of a name for the life of the database:
//! release and expiry leave it free with its fence. A lock uses slot 0 only, so acquiring a
//! known lock, a heartbeat and a release each change one row in place, which dirties one
//! database page; a semaphore's grant reads the name's rows and writes one. A name's
//! counter is the highest fence in its rows ([`crate::fence`]).

use std::time::{Duration, Instant};

use lock_core::backend_kit::permits::limit_mismatch;
use lock_core::backend_kit::time::monotonic_now;
use lock_core::{Holder, Lease, LeaseInfo, LockError, LockName, OwnerToken};

use crate::BACKEND;
use crate::driver::{Statements, TxKind};
use crate::fence;
use crate::now::{Cx, Layout, Now};
use crate::record::{StoredLease, owner_value, was_live};
use crate::retry::{Op, OpError};
use crate::sql;
use crate::value::{Row, Value};

fn name_value(name: &LockName) -> Value {
    Value::from(name.as_str())
}

/// Runs a `SELECT` of lease rows: `current` on the current schema (and version 3, whose rows
/// it reads alike), `legacy` on version 1 or 2 read as it is.
async fn select<S: Statements>(
    tx: &mut S,
    cx: &Cx<'_>,
    current: (&'static str, &[Value]),
    legacy: (&'static str, &[Value]),
) -> Result<Vec<Row>, OpError> {
    match cx.layout {
        Layout::Legacy { version } if !cx.layout.has_permit_rows() => {
            match tx.query(legacy.0, legacy.1).await {
                Err(e) if !e.is_busy() => Err(LockError::config(
                    BACKEND,
                    format!(
                        "reading the lock tables of {} (schema version {version}, read as it is by \
                     this read-only client) failed ({}); if a read-write client migrated them \
                     meanwhile, reopen the lock store",
                        cx.db,
                        e.into_source()
                    ),
                )
                .into()),
                other => Ok(other?),
            }
        }
        _ => Ok(tx.query(current.0, current.1).await?),
    }
}

/// Decodes a row of the layout `cx` reads.
fn decode(row: &Row, cx: &Cx<'_>, now: &Now) -> Result<StoredLease, LockError> {
    if cx.layout.has_permit_rows() {
        StoredLease::decode(row, cx.db)
    } else {
        StoredLease::decode_legacy(row, cx.db, now)
    }
}

/// Every row of `name`, decoded: [`LockError::Corrupt`] if any cannot be read.
async fn read_rows<S: Statements>(
    tx: &mut S,
    cx: &Cx<'_>,
    now: &Now,
    name: &LockName,
) -> Result<Vec<StoredLease>, OpError> {
    let by_name = [name_value(name)];
    let rows = select(
        tx,
        cx,
        (sql::SELECT_LEASES, &by_name),
        (sql::SELECT_LEGACY_LEASE, &by_name),
    )
    .await?;
    rows.iter()
        .map(|row| decode(row, cx, now).map_err(OpError::from))
        .collect()
}

/// The live ones of `rows`, by fence.
fn live<'a>(rows: &'a [StoredLease], now: &Now) -> Vec<&'a StoredLease> {
    let mut live: Vec<&StoredLease> = rows.iter().filter(|r| r.is_live(now)).collect();
    live.sort_by_key(|r| r.fence);
    live
}

/// Takes one of `limit` permits of a name (a lock for `limit` 1) if one is free.
pub(crate) struct Acquire<'a> {
    pub(crate) name: &'a LockName,
    pub(crate) holder: &'a Holder,
    pub(crate) ttl: Duration,
    pub(crate) limit: u32,
    /// The stamp of this process's hold for `holder`'s token, if it has a hold.
    pub(crate) hold: Option<&'a str>,
}

impl Acquire<'_> {
    fn hold_value(&self) -> Value {
        self.hold.map_or(Value::Null, Value::from)
    }
}

impl Acquire<'_> {
    /// The values of the row of permit `slot` with `fence`, in `sql::LEASE_COLUMNS` order
    /// (which [`sql::TAKE_FREE_LOCK`] numbers alike, with the fence clock for the fence).
    fn row_values(&self, slot: u32, fence: i64, now: &Now, expires: i64) -> Vec<Value> {
        let h = self.holder;
        vec![
            name_value(self.name),
            Value::Integer(i64::from(slot)),
            owner_value(h.token),
            Value::from(h.label.as_str()),
            Value::Integer(i64::from(h.pid)),
            Value::from(h.host.as_str()),
            Value::Integer(fence),
            Value::Integer(i64::from(self.limit)),
            Value::Integer(now.wall_ms()),
            now.boot_id_value(),
            Value::Integer(expires),
        ]
    }

    /// The general path, when the one-statement [`TakeFreeLock`] matched nothing (or for a
    /// semaphore): reads the name's rows and decides. `None` when every permit is live (or
    /// this holder has one already: permits are not re-entrant).
    async fn by_rows<S: Statements>(
        &self,
        tx: &mut S,
        cx: &Cx<'_>,
        now: &Now,
        clock: i64,
        expires: i64,
    ) -> Result<Option<u64>, OpError> {
        let rows = read_rows(tx, cx, now, self.name).await?;
        let live = live(&rows, now);
        if let Some(held) = live.first()
            && held.limit != self.limit
        {
            return Err(limit_mismatch(BACKEND, self.name, held.limit, self.limit).into());
        }
        let full = live.len() >= usize::try_from(self.limit).unwrap_or(usize::MAX);
        if full || live.iter().any(|r| r.owner == self.holder.token) {
            return Ok(None);
        }
        let (slot, fence) = match rows.iter().map(|r| r.fence).max() {
            Some(counter) => {
                // Fewer than `limit` permits are live, so one of the first `limit` slots is free.
                let slot = (0..self.limit)
                    .find(|slot| live.iter().all(|r| r.slot != *slot))
                    .ok_or_else(|| LockError::backend(BACKEND, "no free permit slot was found"))?;
                (slot, fence::after(counter, clock, self.name, cx.db)?)
            }
            None => (0, fence::first(tx, clock, cx.db).await?),
        };
        let stored = i64::try_from(fence).unwrap_or(i64::MAX);
        let mut params = self.row_values(slot, stored, now, expires);
        params.push(self.hold_value());
        tx.execute(sql::PUT_LEASE, &params).await?;
        Ok(Some(fence))
    }
}

/// The read-and-decide acquire, in a write transaction: reads the name's rows and takes a
/// free permit if there is one. The one-statement [`TakeFreeLock`] runs first for a lock.
impl Op for Acquire<'_> {
    type Output = Option<Lease>;
    const KIND: TxKind = TxKind::Write;
    const GRANTS: bool = true;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Option<Lease>, OpError> {
        let grant = self.grant(cx)?;
        let (now, clock, expires) = (&grant.now, grant.clock, grant.expires);
        let fence = match self.by_rows(tx, cx, now, clock, expires).await {
            Ok(Some(fence)) => fence,
            Ok(None) => return Ok(None),
            Err(OpError::Lock(corrupt @ LockError::Corrupt { .. })) => {
                // A row it cannot read is still taken over when it is free: every column
                // but the fence is rewritten.
                match self.take_unreadable(tx, &grant).await? {
                    Some(fence) => fence,
                    None => return Err(corrupt.into()),
                }
            }
            Err(other) => return Err(other),
        };
        Ok(Some(self.lease(fence, cx, &grant)))
    }
}

/// What every grant reads before it writes.
struct Grant {
    /// Taken before the lease is written: the holder's deadline cannot start later than
    /// the store's clock.
    sent: Instant,
    now: Now,
    /// The fence clock.
    clock: i64,
    /// The new lease's expiry on the boot clock.
    expires: i64,
}

impl Acquire<'_> {
    /// Checks that the store is writable and reads the clocks, for a grant.
    fn grant(&self, cx: &Cx<'_>) -> Result<Grant, OpError> {
        cx.writable()?;
        let sent = monotonic_now();
        let now = cx.now();
        let clock = now.fence_clock()?;
        let expires = now.expiry(self.ttl);
        Ok(Grant {
            sent,
            now,
            clock,
            expires,
        })
    }

    /// The parameters `?1` to `?13` of the statements that take a row over
    /// ([`sql::TAKE_FREE_LOCK`] and the ones numbered alike) for permit `slot`.
    fn take_params(&self, slot: u32, grant: &Grant) -> Vec<Value> {
        let mut params = self.row_values(slot, grant.clock, &grant.now, grant.expires);
        params.push(Value::Integer(grant.now.boot_ms));
        params.push(self.hold_value());
        params
    }

    /// The lease granted with `fence`.
    fn lease(&self, fence: u64, cx: &Cx<'_>, grant: &Grant) -> Lease {
        Lease::new(
            self.name.clone(),
            self.holder.clone(),
            fence,
            cx.shown(grant.expires),
            grant.sent,
            self.ttl,
        )
    }

    /// [`sql::TAKE_FREE_UNREADABLE_LOCK`], then the new fence: `None` if it matched nothing.
    async fn take_unreadable<S: Statements>(
        &self,
        tx: &mut S,
        grant: &Grant,
    ) -> Result<Option<u64>, OpError> {
        let params = self.take_params(0, grant);
        if tx.execute(sql::TAKE_FREE_UNREADABLE_LOCK, &params).await? != 1 {
            return Ok(None);
        }
        let slot = [name_value(self.name), Value::Integer(0)];
        let taken = tx.query(sql::FENCE_OF_SLOT, &slot).await?;
        let fence = taken
            .first()
            .and_then(|row| fence::from_value(row.first()))
            .ok_or_else(|| {
                LockError::backend(BACKEND, "a lease taken over has no fence to read")
            })?;
        Ok(Some(fence))
    }
}

/// The hot path of acquiring a lock: [`sql::TAKE_FREE_LOCK`], one statement without a
/// transaction around it, whose fence is the fence clock. `None` when it matched nothing:
/// then [`Acquire`] reads the rows and decides (the lease is live, the name is new or a
/// semaphore's, or its fence is not below the clock).
pub(crate) struct TakeFreeLock<'a, 'b> {
    pub(crate) acquire: &'b Acquire<'a>,
}

impl Op for TakeFreeLock<'_, '_> {
    type Output = Option<Lease>;
    const KIND: TxKind = TxKind::Autocommit;
    const GRANTS: bool = true;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Option<Lease>, OpError> {
        let acquire = self.acquire;
        let grant = acquire.grant(cx)?;
        let params = acquire.take_params(0, &grant);
        if tx.execute(sql::TAKE_FREE_LOCK, &params).await? != 1 {
            return Ok(None);
        }
        let fence = u64::try_from(grant.clock)
            .map_err(|_| LockError::backend(BACKEND, "the fence clock read below zero"))?;
        Ok(Some(acquire.lease(fence, cx, &grant)))
    }
}

/// Whether a lock (limit 1) that [`TakeFreeLock`] could not take is held, read by one
/// `SELECT`, which takes no write lock and so never delays the holder or another writer:
/// its live lease with the holder's hold stamp when the read-and-decide [`Acquire`] would
/// find the lock held (every row readable, a live lease of the same limit), else `None`
/// (the name is new, a row is free but could not be taken by one statement, a row cannot be
/// read, or the lock is held under another limit): [`Acquire`] then decides and reports, so
/// an acquire answers exactly as before, with one write transaction fewer when it finds the
/// lock held.
pub(crate) struct HeldLock<'a> {
    pub(crate) acquire: &'a Acquire<'a>,
}

/// Where [`sql::SELECT_LEASES_WITH_HOLDS`] puts the hold stamp: after the lease columns.
const HOLD_AFTER_LEASE: usize = crate::record::col::EXPIRES + 1;

impl Op for HeldLock<'_> {
    type Output = Option<Vec<LiveHold>>;
    /// One `SELECT`, a consistent read by itself: no `BEGIN` and `COMMIT` around it.
    const KIND: TxKind = TxKind::Autocommit;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Self::Output, OpError> {
        let acquire = self.acquire;
        if cx.layout != Layout::Current || acquire.limit != 1 {
            return Ok(None);
        }
        let now = cx.now();
        let rows = tx
            .query(sql::SELECT_LEASES_WITH_HOLDS, &[name_value(acquire.name)])
            .await?;
        let mut live = Vec::new();
        for row in &rows {
            let Ok(lease) = StoredLease::decode(row, cx.db) else {
                return Ok(None);
            };
            if !lease.is_live(&now) {
                continue;
            }
            if lease.limit != acquire.limit {
                return Ok(None);
            }
            let hold = row.get(HOLD_AFTER_LEASE).and_then(Value::as_text);
            live.push(LiveHold {
                slot: lease.slot,
                owner: lease.owner,
                fence: lease.fence,
                hold: hold.map(str::to_owned),
                expires_in: expires_in(lease.expires_boot_ms, now.boot_ms),
                host: lease.host,
            });
        }
        live.sort_by_key(|h| h.fence);
        Ok((!live.is_empty()).then_some(live))
    }
}

/// A live permit with its holder's hold stamp, as [`LiveHolds`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveHold {
    pub(crate) slot: u32,
    pub(crate) owner: OwnerToken,
    pub(crate) fence: u64,
    pub(crate) host: String,
    /// `None` for a holder without a hold (or an older writer).
    pub(crate) hold: Option<String>,
    /// How long until it expires, unless renewed.
    pub(crate) expires_in: Duration,
}

/// The live permits of a name with their holders' hold stamps, by fence: what a contender
/// probes to learn whether a holder's process is gone, and what a waiter watches. Rows it
/// cannot read are left out (the lease operations report them).
pub(crate) struct LiveHolds<'a> {
    pub(crate) name: &'a LockName,
}

impl Op for LiveHolds<'_> {
    type Output = Vec<LiveHold>;
    /// One `SELECT`, a consistent read by itself: no `BEGIN` and `COMMIT` around it.
    const KIND: TxKind = TxKind::Autocommit;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Self::Output, OpError> {
        if cx.layout != Layout::Current {
            // An older schema read as it is has no holds.
            return Ok(Vec::new());
        }
        let now = cx.now();
        let params = [
            name_value(self.name),
            now.boot_id_value(),
            Value::Integer(now.boot_ms),
        ];
        let rows = tx.query(sql::SELECT_LIVE_HOLDS, &params).await?;
        Ok(rows
            .iter()
            .filter_map(|row| decode_live_hold(row, now.boot_ms))
            .collect())
    }
}

fn decode_live_hold(row: &Row, now_boot_ms: i64) -> Option<LiveHold> {
    let [slot, owner, fence, host, hold, expires] = row.as_slice() else {
        return None;
    };
    Some(LiveHold {
        slot: u32::try_from(slot.as_integer()?).ok()?,
        owner: crate::record::owner_from_value(owner)?,
        fence: fence::from_value(Some(fence))?,
        host: host.as_text()?.to_owned(),
        hold: hold.as_text().map(str::to_owned),
        expires_in: expires_in(expires.as_integer()?, now_boot_ms),
    })
}

/// How long until a lease that expires at `expires_boot_ms` does, at `now_boot_ms`.
fn expires_in(expires_boot_ms: i64, now_boot_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(expires_boot_ms.saturating_sub(now_boot_ms)).unwrap_or(0))
}

/// Takes over the permit of a holder whose process is gone (see [`LiveHolds`]), if the row
/// is still that holder's: `None` when another contender was first.
pub(crate) struct TakeGone<'a> {
    pub(crate) acquire: Acquire<'a>,
    pub(crate) gone: &'a LiveHold,
}

impl Op for TakeGone<'_> {
    type Output = Option<Lease>;
    const KIND: TxKind = TxKind::Write;
    const GRANTS: bool = true;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Option<Lease>, OpError> {
        let (acquire, gone) = (&self.acquire, self.gone);
        let grant = acquire.grant(cx)?;
        let Some(gone_hold) = gone.hold.as_deref() else {
            return Ok(None);
        };
        let mut params = acquire.take_params(gone.slot, &grant);
        params.push(owner_value(gone.owner));
        params.push(Value::from(gone_hold));
        let taken = tx.query(sql::TAKE_GONE_PERMIT, &params).await?;
        let Some(row) = taken.first() else {
            return Ok(None);
        };
        let fence = fence::from_value(row.first()).ok_or_else(|| {
            LockError::backend(
                BACKEND,
                "taking over a dead holder's lease returned no fence",
            )
        })?;
        Ok(Some(acquire.lease(fence, cx, &grant)))
    }
}

/// Compare-and-extend of one lease inside an open transaction: one statement when the lease
/// is ours and live; otherwise the name's rows are read to tell `LeaseLost` from `Corrupt`.
async fn extend<S: Statements>(
    tx: &mut S,
    cx: &Cx<'_>,
    now: &Now,
    lease: &Lease,
    ttl: Duration,
    sent: Instant,
) -> Result<Lease, OpError> {
    let expires = now.expiry(ttl);
    let params = [
        name_value(&lease.name),
        owner_value(lease.holder.token),
        Value::Integer(expires),
        now.boot_id_value(),
        Value::Integer(now.boot_ms),
    ];
    if tx.execute(sql::EXTEND_OWNED_LEASE, &params).await? == 0 {
        // Not ours or not live: an unreadable row says so as Corrupt.
        read_rows(tx, cx, now, &lease.name).await?;
        return Err(LockError::LeaseLost {
            name: lease.name.clone(),
        }
        .into());
    }
    Ok(lease.renewed(cx.shown(expires), sent, ttl))
}

/// Extends a lease still held by its token.
pub(crate) struct Heartbeat<'a> {
    pub(crate) lease: &'a Lease,
    pub(crate) ttl: Duration,
}

impl Op for Heartbeat<'_> {
    type Output = Lease;
    const KIND: TxKind = TxKind::Write;
    const FOR_A_HOLDER: bool = true;
    const GRANTS: bool = true;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Lease, OpError> {
        cx.writable()?;
        let sent = monotonic_now();
        extend(tx, cx, &cx.now(), self.lease, self.ttl, sent).await
    }
}

/// Extends many leases in one transaction. Each lease gets its own answer (renewed,
/// `LeaseLost` or `Corrupt`); a database failure fails the whole transaction.
pub(crate) struct HeartbeatMany<'a> {
    pub(crate) leases: &'a [Lease],
    pub(crate) ttl: Duration,
}

impl Op for HeartbeatMany<'_> {
    type Output = Vec<Result<Lease, LockError>>;
    const KIND: TxKind = TxKind::Write;
    const FOR_A_HOLDER: bool = true;
    const GRANTS: bool = true;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Self::Output, OpError> {
        cx.writable()?;
        let sent = monotonic_now();
        let now = cx.now();
        let mut out = Vec::with_capacity(self.leases.len());
        for lease in self.leases {
            out.push(match extend(tx, cx, &now, lease, self.ttl, sent).await {
                Ok(renewed) => Ok(renewed),
                Err(OpError::Lock(e)) => Err(e),
                Err(e @ OpError::Db(_)) => return Err(e),
            });
        }
        Ok(out)
    }
}

/// Compare-and-free by owner token; the row and its fence stay.
pub(crate) struct Release<'a> {
    pub(crate) lease: &'a Lease,
}

impl Op for Release<'_> {
    type Output = bool;
    /// One statement that decides and writes, atomic by itself: no transaction around it.
    const KIND: TxKind = TxKind::Autocommit;
    const FOR_A_HOLDER: bool = true;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<bool, OpError> {
        cx.writable()?;
        let now = cx.now();
        let params = [
            name_value(&self.lease.name),
            owner_value(self.lease.holder.token),
            now.boot_id_value(),
            Value::Integer(now.boot_ms),
        ];
        Ok(tx.execute(sql::FREE_OWNED_LEASE, &params).await? > 0)
    }
}

/// Frees every permit of a name whoever holds them. If one of its rows cannot be read or
/// its fence cannot advance, the name's rows are deleted instead, after raising the fence
/// seed above their fences (and the clock), so that the name's next lease still gets a
/// higher fence.
pub(crate) struct ForceRelease<'a> {
    pub(crate) name: &'a LockName,
}

impl Op for ForceRelease<'_> {
    type Output = bool;
    const KIND: TxKind = TxKind::Write;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<bool, OpError> {
        cx.writable()?;
        let now = cx.now();
        let name = name_value(self.name);
        let rows = tx
            .query(sql::SELECT_LEASES, std::slice::from_ref(&name))
            .await?;
        let mut problem = None;
        let mut live = false;
        for row in &rows {
            match StoredLease::decode(row, cx.db) {
                Ok(lease) if fence::can_advance(lease.fence) => {
                    live |= lease.is_live(&now);
                }
                Ok(lease) => problem = Some(fence::exhausted(self.name, lease.fence, cx.db)),
                Err(e) => problem = Some(e),
            }
        }
        let Some(problem) = problem else {
            if live {
                tx.execute(sql::FREE_NAME, &[name]).await?;
            }
            return Ok(live);
        };
        let detail = match problem {
            LockError::Corrupt { detail, .. } => detail,
            other => other.to_string(),
        };
        let recovered = rows.iter().filter_map(fence::recoverable).max();
        let floor = recovered.unwrap_or(0).max(now.fence_clock()?);
        fence::raise_seed(tx, floor, cx.db).await?;
        tx.execute(sql::DELETE_NAME, &[name]).await?;
        tracing::warn!(
            lock = %self.name,
            db = cx.db,
            recovered_fence = ?recovered,
            "force_release deleted the lease rows of a lock because one could not be used \
             ({detail}); the lock's next fence starts above {floor}"
        );
        Ok(rows.iter().any(|row| was_live(row, &now)))
    }
}

/// The live leases of a name (its permits), by fence.
pub(crate) struct Inspect<'a> {
    pub(crate) name: &'a LockName,
}

impl Op for Inspect<'_> {
    type Output = Vec<LeaseInfo>;
    /// One `SELECT`, a consistent read by itself: no `BEGIN` and `COMMIT` around it.
    const KIND: TxKind = TxKind::Autocommit;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Self::Output, OpError> {
        let now = cx.now();
        let rows = read_rows(tx, cx, &now, self.name).await?;
        Ok(live(&rows, &now).into_iter().map(|r| r.info(cx)).collect())
    }
}

/// Who holds a name's live permits, if anyone (owner token and fence, by fence): what a
/// waiter polls to notice a release by another process.
pub(crate) struct Peek<'a> {
    pub(crate) name: &'a LockName,
}

impl Op for Peek<'_> {
    type Output = Vec<(OwnerToken, u64)>;
    /// One `SELECT`, a consistent read by itself: no `BEGIN` and `COMMIT` around it.
    const KIND: TxKind = TxKind::Autocommit;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Self::Output, OpError> {
        let now = cx.now();
        let rows = read_rows(tx, cx, &now, self.name).await?;
        Ok(live(&rows, &now)
            .into_iter()
            .map(|r| (r.owner, r.fence))
            .collect())
    }
}

/// Live leases under a prefix, sorted by name and fence (every permit of a semaphore).
/// Rows that cannot be read are skipped with a warning, so that one damaged row does not
/// hide every other lease; database failures still fail the listing.
pub(crate) struct List<'a> {
    pub(crate) prefix: &'a str,
}

impl Op for List<'_> {
    type Output = Vec<LeaseInfo>;
    /// One `SELECT`, a consistent read by itself: no `BEGIN` and `COMMIT` around it.
    const KIND: TxKind = TxKind::Autocommit;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Self::Output, OpError> {
        let now = cx.now();
        let prefix = Value::from(self.prefix);
        let current = [
            prefix.clone(),
            Value::Integer(now.boot_ms),
            now.boot_id_value(),
        ];
        let legacy = [prefix, Value::Integer(now.wall_ms())];
        let rows = select(
            tx,
            cx,
            (sql::SELECT_LEASES_WITH_PREFIX, &current),
            (sql::SELECT_LEGACY_LEASES_WITH_PREFIX, &legacy),
        )
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            match decode(row, cx, &now) {
                // SQLite compares characters; make sure of the byte prefix too.
                Ok(lease)
                    if lease.is_live(&now) && lease.name.as_str().starts_with(self.prefix) =>
                {
                    out.push(lease.info(cx));
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    db = cx.db,
                    row = ?row.first(),
                    %error,
                    "list skipped a lease row it cannot read"
                ),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.fence.cmp(&b.fence)));
        Ok(out)
    }
}
