//! The lease operations, written once for both drivers: which statements run in which
//! order, and what their results mean.
//!
//! Schema version 2 keeps one row per name for the life of the database: release and
//! expiry leave it free (an expiry at or before now) with the name's last fence. So an
//! acquisition of a known name, a heartbeat and a release each change one row in place,
//! which dirties one database page (the `name` index is never touched); only a name's
//! first acquisition inserts a row and advances the fence seed (see [`crate::fence`]).

use std::time::{Duration, Instant};

use lock_core::backend_kit::time::{from_unix_millis, monotonic_now};
use lock_core::{Holder, Lease, LeaseInfo, LockError, LockName, OwnerToken};

use crate::BACKEND;
use crate::driver::{Statements, TxKind};
use crate::fence;
use crate::record::{StoredLease, owner_value, wall_now_ms, was_live};
use crate::retry::{Op, OpError};
use crate::sql;
use crate::value::Value;

/// `ttl` in whole milliseconds, rounded up so the store never frees a lease early.
fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX)
}

fn name_value(name: &LockName) -> Value {
    Value::from(name.as_str())
}

async fn select_lease<S: Statements>(
    tx: &mut S,
    name: &LockName,
    db: &str,
) -> Result<Option<StoredLease>, OpError> {
    let rows = tx.query(sql::SELECT_LEASE, &[name_value(name)]).await?;
    match rows.first() {
        Some(row) => Ok(Some(StoredLease::decode(row, db)?)),
        None => Ok(None),
    }
}

/// Takes the lease if the name is free or its lease expired.
pub(crate) struct Acquire<'a> {
    pub(crate) name: &'a LockName,
    pub(crate) holder: &'a Holder,
    pub(crate) ttl: Duration,
}

impl Acquire<'_> {
    /// The lease row's values in column order: name, owner, label, pid, host, then the
    /// fence (only for a new row: a takeover advances the row's own), acquired, expires.
    fn row_values(&self, fence: Option<u64>, now: i64, expires: i64) -> Vec<Value> {
        let h = self.holder;
        let mut values = vec![
            name_value(self.name),
            owner_value(h.token),
            Value::from(h.label.as_str()),
            Value::Integer(i64::from(h.pid)),
            Value::from(h.host.as_str()),
        ];
        values.extend(fence.map(|f| Value::Integer(i64::try_from(f).unwrap_or(i64::MAX))));
        values.extend([Value::Integer(now), Value::Integer(expires)]);
        values
    }

    /// The slow path, when the one-statement takeover matched nothing: the row is live,
    /// unreadable, at its last fence, or missing (then it is inserted with a seeded fence).
    async fn not_taken<S: Statements>(
        &self,
        tx: &mut S,
        db: &str,
        now: i64,
        expires: i64,
    ) -> Result<Option<u64>, OpError> {
        match select_lease(tx, self.name, db).await? {
            Some(current) if current.is_live(now) => Ok(None),
            // The takeover checks only what decoding also checks, except the fence's upper
            // bound: a readable expired row that was not taken has no fence left.
            Some(current) => Err(fence::exhausted(&current, db).into()),
            None => {
                let fence = fence::first(tx, db).await?;
                let params = self.row_values(Some(fence), now, expires);
                tx.execute(sql::INSERT_LEASE, &params).await?;
                Ok(Some(fence))
            }
        }
    }
}

impl Op for Acquire<'_> {
    type Output = Option<Lease>;
    const KIND: TxKind = TxKind::Write;
    const GRANTS: bool = true;

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<Option<Lease>, OpError> {
        // Taken before the lease is written: the holder's deadline cannot start later than
        // the store's clock.
        let sent = monotonic_now();
        let now = wall_now_ms();
        let expires = now.saturating_add(ttl_millis(self.ttl));
        let params = self.row_values(None, now, expires);
        let taken = tx.query(sql::TAKE_EXPIRED_LEASE, &params).await?;
        let fence = match taken.first() {
            Some(row) => fence::from_value(row.first()).ok_or_else(|| {
                LockError::backend(BACKEND, "taking over an expired lease returned no fence")
            })?,
            None => match self.not_taken(tx, db, now, expires).await? {
                Some(fence) => fence,
                None => return Ok(None),
            },
        };
        Ok(Some(Lease::new(
            self.name.clone(),
            self.holder.clone(),
            fence,
            from_unix_millis(expires),
            sent,
            self.ttl,
        )))
    }
}

/// Compare-and-extend of one lease inside an open transaction: one statement when the lease
/// is ours and live; otherwise the row is read to tell `LeaseLost` from `Corrupt`.
async fn extend<S: Statements>(
    tx: &mut S,
    db: &str,
    lease: &Lease,
    ttl: Duration,
    now: i64,
    sent: Instant,
) -> Result<Lease, OpError> {
    let expires = now.saturating_add(ttl_millis(ttl));
    let params = [
        name_value(&lease.name),
        owner_value(lease.holder.token),
        Value::Integer(expires),
        Value::Integer(now),
    ];
    if tx.query(sql::EXTEND_OWNED_LEASE, &params).await?.is_empty() {
        // Not ours or not live: an unreadable row says so as Corrupt.
        select_lease(tx, &lease.name, db).await?;
        return Err(LockError::LeaseLost {
            name: lease.name.clone(),
        }
        .into());
    }
    Ok(lease.renewed(from_unix_millis(expires), sent, ttl))
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

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<Lease, OpError> {
        let sent = monotonic_now();
        extend(tx, db, self.lease, self.ttl, wall_now_ms(), sent).await
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

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<Self::Output, OpError> {
        let sent = monotonic_now();
        let now = wall_now_ms();
        let mut out = Vec::with_capacity(self.leases.len());
        for lease in self.leases {
            out.push(match extend(tx, db, lease, self.ttl, now, sent).await {
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

    async fn run<S: Statements>(&self, tx: &mut S, _db: &str) -> Result<bool, OpError> {
        let params = [
            name_value(&self.lease.name),
            owner_value(self.lease.holder.token),
            Value::Integer(wall_now_ms()),
        ];
        Ok(!tx.query(sql::FREE_OWNED_LEASE, &params).await?.is_empty())
    }
}

/// Frees a name whoever holds it. A row that cannot be read or whose fence cannot advance
/// is deleted instead, after raising the fence seed above its fence, so that the name's
/// next lease still gets a higher fence.
pub(crate) struct ForceRelease<'a> {
    pub(crate) name: &'a LockName,
}

impl Op for ForceRelease<'_> {
    type Output = bool;
    const KIND: TxKind = TxKind::Write;

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<bool, OpError> {
        let now = wall_now_ms();
        let name = name_value(self.name);
        let rows = tx
            .query(sql::SELECT_LEASE, std::slice::from_ref(&name))
            .await?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        let problem = match StoredLease::decode(row, db) {
            Ok(lease) if fence::can_advance(&lease) => {
                let live = lease.is_live(now);
                if live {
                    tx.execute(sql::FREE_LEASE, &[name]).await?;
                }
                return Ok(live);
            }
            Ok(lease) => fence::exhausted(&lease, db),
            Err(e) => e,
        };
        let detail = match problem {
            LockError::Corrupt { detail, .. } => detail,
            other => other.to_string(),
        };
        let recovered = fence::recoverable(row);
        let floor = recovered.unwrap_or(0).max(fence::seed_now());
        fence::raise_seed(tx, floor, db).await?;
        tx.execute(sql::DELETE_LEASE, &[name]).await?;
        tracing::warn!(
            lock = %self.name,
            db,
            recovered_fence = ?recovered,
            "force_release deleted a lease row it could not use ({detail}); the lock's next \
             fence starts above {floor}"
        );
        Ok(was_live(row.get(7), now))
    }
}

/// The live lease of a name.
pub(crate) struct Inspect<'a> {
    pub(crate) name: &'a LockName,
}

impl Op for Inspect<'_> {
    type Output = Option<LeaseInfo>;
    const KIND: TxKind = TxKind::Read;

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<Self::Output, OpError> {
        let now = wall_now_ms();
        Ok(select_lease(tx, self.name, db)
            .await?
            .filter(|s| s.is_live(now))
            .map(|s| s.info()))
    }
}

/// Who holds a name's live lease, if anyone: what a waiter polls to notice a release by
/// another process.
pub(crate) struct Peek<'a> {
    pub(crate) name: &'a LockName,
}

impl Op for Peek<'_> {
    type Output = Option<(OwnerToken, u64)>;
    const KIND: TxKind = TxKind::Read;

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<Self::Output, OpError> {
        let now = wall_now_ms();
        Ok(select_lease(tx, self.name, db)
            .await?
            .filter(|s| s.is_live(now))
            .map(|s| (s.owner, s.fence)))
    }
}

/// Live leases under a prefix, sorted by name. Rows that cannot be read are skipped with a
/// warning, so that one damaged row does not hide every other lease; database failures
/// still fail the listing.
pub(crate) struct List<'a> {
    pub(crate) prefix: &'a str,
}

impl Op for List<'_> {
    type Output = Vec<LeaseInfo>;
    const KIND: TxKind = TxKind::Read;

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<Self::Output, OpError> {
        let now = wall_now_ms();
        let params = [Value::from(self.prefix), Value::Integer(now)];
        let rows = tx.query(sql::SELECT_LEASES_WITH_PREFIX, &params).await?;
        let mut out = Vec::new();
        for row in &rows {
            match StoredLease::decode(row, db) {
                // SQLite compares characters; make sure of the byte prefix too.
                Ok(lease) if lease.is_live(now) && lease.name.as_str().starts_with(self.prefix) => {
                    out.push(lease.info());
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    db,
                    row = ?row.first(),
                    %error,
                    "list skipped a lease row it cannot read"
                ),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_rounded_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::from_millis(10)), 10);
        assert_eq!(ttl_millis(Duration::from_micros(10_001)), 11);
        assert_eq!(ttl_millis(Duration::MAX), i64::MAX);
    }
}
