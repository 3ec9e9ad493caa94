//! The operations that open a database: looking at its schema, creating or migrating the
//! tables, and the connection settings (journal mode, `synchronous`).

use crate::driver::{DbError, Statements, TxKind};
use crate::now::{Cx, Layout};
use crate::options::Synchronous;
use crate::retry::{Op, OpError};
use crate::schema::{Found, FoundTable, Verdict};
use crate::sql;
use crate::value::Value;

/// Looks at the schema, reading only.
pub(crate) struct LookAtSchema;

impl Op for LookAtSchema {
    type Output = Found;
    const KIND: TxKind = TxKind::Read;

    async fn run<S: Statements>(&self, tx: &mut S, _cx: &Cx<'_>) -> Result<Found, OpError> {
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
        found.version = rows.first().and_then(|r| r.first()).cloned();
    }
    Ok(found)
}

/// Creates the tables unless they exist, or migrates them from an older version: looks
/// again inside the write transaction, so that concurrent openers do it exactly once.
/// Returns the layout to use: the current one, or (for an application's read-only pool,
/// which cannot migrate) the older version's, read as it is.
pub(crate) struct PrepareSchema;

impl Op for PrepareSchema {
    type Output = Layout;
    const KIND: TxKind = TxKind::Write;

    async fn run<S: Statements>(&self, tx: &mut S, cx: &Cx<'_>) -> Result<Layout, OpError> {
        let db = cx.db;
        match look(tx).await?.verdict(db)? {
            Verdict::Ready => {}
            Verdict::Create => {
                tx.execute(sql::CREATE_META, &[]).await?;
                tx.execute(sql::CREATE_LEASES, &[]).await?;
                tx.execute(sql::SEED_META, &[]).await?;
                tracing::info!(
                    db,
                    "created lock tables (schema version {})",
                    sql::SCHEMA_VERSION
                );
            }
            Verdict::Migrate { from } => {
                match migrate(tx, cx, from).await {
                    // An application's read-only pool: read the older rows as they are, as
                    // a client opened read-only does.
                    Err(OpError::Db(e)) if e.is_read_only() => {
                        tracing::debug!(db, from, "reading an older lock schema as it is");
                        return Ok(Layout::Legacy { version: from });
                    }
                    other => other?,
                }
                tracing::info!(
                    db,
                    from,
                    to = sql::SCHEMA_VERSION,
                    "migrated lock tables (version 3: one row per permit, expiry on the boot \
                     clock, hybrid fences; version 4: holders' process holds); programs still \
                     using a lock-sqlite older than schema version 3 on this database now \
                     fail every lock operation and must be upgraded"
                );
            }
        }
        Ok(Layout::Current)
    }
}

/// Migrates schema version `from` (1 to 3) to the current one, inside the caller's write
/// transaction. Version 3 gains the `hold` column. From 1 or 2: version 1's counter becomes
/// the fence seed, then `lock_leases` is rebuilt with one row per permit and boot-clock
/// expiries (see `sql::COPY_LEGACY_LEASES`).
async fn migrate<S: Statements>(tx: &mut S, cx: &Cx<'_>, from: i64) -> Result<(), OpError> {
    if from == 3 {
        tx.execute(sql::ADD_HOLD_COLUMN, &[]).await?;
        tx.execute(
            sql::SET_SCHEMA_VERSION,
            &[Value::Integer(sql::SCHEMA_VERSION)],
        )
        .await?;
        return Ok(());
    }
    if from == 1 {
        tx.execute(sql::MIGRATE_V1_FENCE_COUNTER, &[]).await?;
    }
    tx.execute(sql::CREATE_MIGRATED_LEASES, &[]).await?;
    let now = cx.now();
    let copy = [
        now.boot_id_value(),
        Value::Integer(now.wall_ms()),
        Value::Integer(now.boot_ms),
        Value::Integer(i64::MAX - now.boot_ms),
    ];
    tx.execute(sql::COPY_LEGACY_LEASES, &copy).await?;
    tx.execute(sql::DROP_LEGACY_LEASES, &[]).await?;
    tx.execute(sql::RENAME_MIGRATED_LEASES, &[]).await?;
    tx.execute(
        sql::SET_SCHEMA_VERSION,
        &[Value::Integer(sql::SCHEMA_VERSION)],
    )
    .await?;
    Ok(())
}

/// Reads the journal mode, or switches it to WAL; returns the mode now in effect.
pub(crate) struct JournalMode {
    pub(crate) set_wal: bool,
}

impl Op for JournalMode {
    type Output = String;
    const KIND: TxKind = TxKind::Autocommit;

    async fn run<S: Statements>(&self, tx: &mut S, _cx: &Cx<'_>) -> Result<String, OpError> {
        let statement = if self.set_wal {
            sql::JOURNAL_MODE_WAL
        } else {
            sql::JOURNAL_MODE
        };
        let rows = tx.query(statement, &[]).await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
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

    async fn run<S: Statements>(&self, tx: &mut S, _cx: &Cx<'_>) -> Result<(), OpError> {
        let statement = match self.0 {
            Synchronous::Full => sql::SYNCHRONOUS_FULL,
            _ => sql::SYNCHRONOUS_NORMAL,
        };
        tx.execute(statement, &[]).await?;
        Ok(())
    }
}
