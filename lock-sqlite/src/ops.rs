//! The operations, written once for both drivers: which statements run in which order, and
//! what their results mean.

use std::time::Duration;

use lock_core::time::{from_unix_millis, monotonic_now};
use lock_core::{Holder, Lease, LeaseInfo, LockError, LockName};

use crate::BACKEND;
use crate::driver::{DbError, Statements, TxKind};
use crate::options::Synchronous;
use crate::record::{StoredLease, owner_value, wall_now_ms, was_live};
use crate::retry::{Op, OpError};
use crate::schema::{Found, FoundTable, Verdict};
use crate::sql;
use crate::value::{Row, Value};

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

fn first_value(rows: &[Row]) -> Option<&Value> {
    rows.first().and_then(|r| r.first())
}

/// Takes the lease if the name is free or its lease expired.
pub(crate) struct Acquire<'a> {
    pub(crate) name: &'a LockName,
    pub(crate) holder: &'a Holder,
    pub(crate) ttl: Duration,
}

impl Op for Acquire<'_> {
    type Output = Option<Lease>;
    const KIND: TxKind = TxKind::Write;

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<Option<Lease>, OpError> {
        // Taken before the lease is written: the holder's deadline cannot start later than
        // the store's clock.
        let sent = monotonic_now();
        let now = wall_now_ms();
        if let Some(current) = select_lease(tx, self.name, db).await?
            && current.is_live(now)
        {
            return Ok(None);
        }
        let rows = tx.query(sql::NEXT_FENCE, &[]).await?;
        let fence = first_value(&rows)
            .and_then(Value::as_integer)
            .and_then(|f| u64::try_from(f).ok())
            .ok_or_else(|| {
                LockError::corrupt(
                    BACKEND,
                    format!(
                        "the fence counter (row 'fence' of table lock_meta in {db}) is missing \
                         or is not a non-negative integer below 2^63-1; no fence can be issued \
                         safely. Restore it to at least the highest fence ever issued"
                    ),
                )
            })?;
        let expires = now.saturating_add(ttl_millis(self.ttl));
        let h = self.holder;
        let params = [
            name_value(self.name),
            owner_value(h.token),
            Value::from(h.label.as_str()),
            Value::Integer(i64::from(h.pid)),
            Value::from(h.host.as_str()),
            Value::Integer(i64::try_from(fence).unwrap_or(i64::MAX)),
            Value::Integer(now),
            Value::Integer(expires),
        ];
        if tx.query(sql::UPSERT_LEASE, &params).await?.is_empty() {
            // Unreachable inside the write transaction (the row was just seen free), but
            // never claim a lease the store did not record.
            return Ok(None);
        }
        Ok(Some(Lease::new(
            self.name.clone(),
            h.clone(),
            fence,
            from_unix_millis(expires),
            sent,
            self.ttl,
        )))
    }
}

/// Extends a lease still held by its token.
pub(crate) struct Heartbeat<'a> {
    pub(crate) lease: &'a Lease,
    pub(crate) ttl: Duration,
}

impl Op for Heartbeat<'_> {
    type Output = Lease;
    const KIND: TxKind = TxKind::Write;

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<Lease, OpError> {
        let sent = monotonic_now();
        let now = wall_now_ms();
        let lease = self.lease;
        let ours = select_lease(tx, &lease.name, db)
            .await?
            .is_some_and(|s| s.owner == lease.holder.token && s.is_live(now));
        if !ours {
            return Err(LockError::LeaseLost {
                name: lease.name.clone(),
            }
            .into());
        }
        let expires = now.saturating_add(ttl_millis(self.ttl));
        tx.execute(
            sql::EXTEND_LEASE,
            &[name_value(&lease.name), Value::Integer(expires)],
        )
        .await?;
        Ok(lease.renewed(from_unix_millis(expires), sent, self.ttl))
    }
}

/// Compare-and-delete by owner token.
pub(crate) struct Release<'a> {
    pub(crate) lease: &'a Lease,
}

impl Op for Release<'_> {
    type Output = bool;
    const KIND: TxKind = TxKind::Write;

    async fn run<S: Statements>(&self, tx: &mut S, _db: &str) -> Result<bool, OpError> {
        let now = wall_now_ms();
        let params = [
            name_value(&self.lease.name),
            owner_value(self.lease.holder.token),
        ];
        let rows = tx.query(sql::DELETE_OWNED_LEASE, &params).await?;
        Ok(was_live(first_value(&rows), now))
    }
}

/// Deletes the row of a name, whoever holds it and whatever it holds.
pub(crate) struct ForceRelease<'a> {
    pub(crate) name: &'a LockName,
}

impl Op for ForceRelease<'_> {
    type Output = bool;
    const KIND: TxKind = TxKind::Write;

    async fn run<S: Statements>(&self, tx: &mut S, _db: &str) -> Result<bool, OpError> {
        let now = wall_now_ms();
        let rows = tx
            .query(sql::DELETE_LEASE, &[name_value(self.name)])
            .await?;
        Ok(was_live(first_value(&rows), now))
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
        let rows = tx
            .query(sql::SELECT_LEASES_WITH_PREFIX, &[Value::from(self.prefix)])
            .await?;
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

/// Looks at the schema, reading only.
pub(crate) struct LookAtSchema;

impl Op for LookAtSchema {
    type Output = Found;
    const KIND: TxKind = TxKind::Read;

    async fn run<S: Statements>(&self, tx: &mut S, _db: &str) -> Result<Found, OpError> {
        Ok(look(tx).await?)
    }
}

async fn look<S: Statements>(tx: &mut S) -> Result<Found, DbError> {
    let mut found = Found::default();
    for row in tx.query(sql::FIND_TABLES, &[]).await? {
        let (Some(Value::Text(name)), Some(kind)) = (row.first(), row.get(1)) else {
            continue;
        };
        let kind = kind.as_text().unwrap_or("object").to_owned();
        let columns = if kind == "table" {
            tx.query(sql::TABLE_COLUMNS, &[Value::from(name.as_str())])
                .await?
                .iter()
                .map(|r| match r.first() {
                    Some(Value::Text(c)) => c.clone(),
                    other => format!("{other:?}"),
                })
                .collect()
        } else {
            Vec::new()
        };
        let table = Some(FoundTable { kind, columns });
        match name.as_str() {
            "lock_meta" => found.meta = table,
            "lock_leases" => found.leases = table,
            _ => {}
        }
    }
    if found.meta_is_ours() {
        let rows = tx.query(sql::SCHEMA_VERSION_ROW, &[]).await?;
        found.version = first_value(&rows).cloned();
    }
    Ok(found)
}

/// Creates the tables unless they exist: looks again inside the write transaction, so that
/// concurrent openers create them exactly once.
pub(crate) struct CreateSchema;

impl Op for CreateSchema {
    type Output = ();
    const KIND: TxKind = TxKind::Write;

    async fn run<S: Statements>(&self, tx: &mut S, db: &str) -> Result<(), OpError> {
        match look(tx).await?.verdict(db)? {
            Verdict::Ready => Ok(()),
            Verdict::Create => {
                tx.execute(sql::CREATE_META, &[]).await?;
                tx.execute(sql::CREATE_LEASES, &[]).await?;
                tx.execute(sql::SEED_META, &[]).await?;
                tracing::info!(
                    db,
                    "created lock tables (schema version {})",
                    sql::SCHEMA_VERSION
                );
                Ok(())
            }
        }
    }
}

/// Reads the journal mode, or switches it to WAL; returns the mode now in effect.
pub(crate) struct JournalMode {
    pub(crate) set_wal: bool,
}

impl Op for JournalMode {
    type Output = String;
    const KIND: TxKind = TxKind::Autocommit;

    async fn run<S: Statements>(&self, tx: &mut S, _db: &str) -> Result<String, OpError> {
        let statement = if self.set_wal {
            sql::JOURNAL_MODE_WAL
        } else {
            sql::JOURNAL_MODE
        };
        let rows = tx.query(statement, &[]).await?;
        Ok(first_value(&rows)
            .and_then(Value::as_text)
            .unwrap_or("unknown")
            .to_ascii_lowercase())
    }
}

/// Sets `PRAGMA synchronous` on the connection the driver hands out (the rusqlite
/// driver's only connection; sqlx pools set it per connection in their options).
pub(crate) struct SetSynchronous(pub(crate) Synchronous);

impl Op for SetSynchronous {
    type Output = ();
    const KIND: TxKind = TxKind::Autocommit;

    async fn run<S: Statements>(&self, tx: &mut S, _db: &str) -> Result<(), OpError> {
        let statement = match self.0 {
            Synchronous::Full => sql::SYNCHRONOUS_FULL,
            _ => sql::SYNCHRONOUS_NORMAL,
        };
        tx.execute(statement, &[]).await?;
        Ok(())
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
