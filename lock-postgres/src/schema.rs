//! The lease tables: found and checked, or created, when a backend connects.
//!
//! Connecting first looks (reads only) and refuses, before writing anything, a database whose
//! lease or counter table is not ours, or whose schema version is newer than this library's.
//! Only then are missing tables created, in one transaction that holds an advisory lock and
//! looks again, so concurrent first connections create them exactly once; connections that
//! find that lock taken wait for its holder together (a shared lock) and look again.
//!
//! The version is the comment on the lease table (`leaselock leases, schema version 1`).
//!
//! Versions:
//!
//! 1. `<table>` (name, slot, permits, token, label, pid, host, fence, acquired_at,
//!    expires_at; primary key name + slot) and `<table>_fences` (name, fence).

use std::sync::Arc;

use lock_core::LockError;
use sqlx::Row;

use crate::BACKEND;
use crate::exec::{Db, Failure};
use crate::sql::{
    FENCE_COLUMNS, LEASE_COLUMNS, Param, SCHEMA_VERSION, Statements, TABLE_COMMENT_PREFIX,
    advisory, ident,
};

/// One of our table names as found in `pg_class`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FoundTable {
    /// `pg_class.relkind`: `r` for a table, `v` a view...
    pub(crate) kind: String,
    /// `name type` of each column, in order.
    pub(crate) columns: Vec<String>,
    /// The table's comment.
    pub(crate) comment: Option<String>,
}

/// What a look at the database found.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Found {
    pub(crate) schema_exists: bool,
    pub(crate) leases: Option<FoundTable>,
    pub(crate) fences: Option<FoundTable>,
}

/// What to do with the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Our tables at our version.
    Ready,
    /// Neither table exists: create them (and the schema, unless it exists).
    Create,
}

fn expected(columns: &[(&str, &str)]) -> Vec<String> {
    columns.iter().map(|(n, t)| format!("{n} {t}")).collect()
}

impl Found {
    /// Decides, or explains with a [`LockError::Config`] why these tables cannot be used.
    pub(crate) fn verdict(&self, where_: &str, s: &Statements) -> Result<Verdict, LockError> {
        let (leases, fences) = match (&self.leases, &self.fences) {
            (None, None) => return Ok(Verdict::Create),
            (leases, fences) => (leases, fences),
        };
        let Some(leases) = leases else {
            return Err(foreign(
                where_,
                &format!("a table `{}` but no `{}`", s.fences_table, s.table),
            ));
        };
        if leases.kind != "r" {
            return Err(foreign(
                where_,
                &format!(
                    "`{}` that is not a table ({})",
                    s.table,
                    kind_name(&leases.kind)
                ),
            ));
        }
        let version = leases
            .comment
            .as_deref()
            .and_then(|c| c.strip_prefix(TABLE_COMMENT_PREFIX))
            .and_then(|v| v.trim().parse::<i64>().ok());
        let Some(version) = version else {
            return Err(foreign(
                where_,
                &format!(
                    "a table `{}` with columns ({}) that leaselock did not create (its comment \
                     is {:?}, not \"{TABLE_COMMENT_PREFIX}N\")",
                    s.table,
                    leases.columns.join(", "),
                    leases.comment.as_deref().unwrap_or("")
                ),
            ));
        };
        if version > SCHEMA_VERSION {
            return Err(LockError::config(
                BACKEND,
                format!(
                    "{where_} holds lease tables of schema version {version}, newer than \
                     version {SCHEMA_VERSION} that this version of lock-postgres understands; \
                     they were left untouched. Upgrade lock-postgres in this program (every \
                     program sharing the tables must understand schema version {version})"
                ),
            ));
        }
        if version < 1 || leases.columns != expected(LEASE_COLUMNS) {
            return Err(foreign(
                where_,
                &format!(
                    "a table `{}` marked as schema version {version} whose columns are ({}) \
                     instead of ({})",
                    s.table,
                    leases.columns.join(", "),
                    expected(LEASE_COLUMNS).join(", ")
                ),
            ));
        }
        match fences {
            None => Err(foreign(
                where_,
                &format!("a table `{}` but no `{}`", s.table, s.fences_table),
            )),
            Some(f) if f.kind != "r" || f.columns != expected(FENCE_COLUMNS) => Err(foreign(
                where_,
                &format!(
                    "`{}` ({}, columns ({})) instead of a table with columns ({})",
                    s.fences_table,
                    kind_name(&f.kind),
                    f.columns.join(", "),
                    expected(FENCE_COLUMNS).join(", ")
                ),
            )),
            Some(_) => Ok(Verdict::Ready),
        }
    }
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        "r" => "a table",
        "v" => "a view",
        "m" => "a materialized view",
        "p" => "a partitioned table",
        "f" => "a foreign table",
        "S" => "a sequence",
        "i" | "I" => "an index",
        _ => "another kind of relation",
    }
}

fn foreign(where_: &str, what: &str) -> LockError {
    LockError::config(
        BACKEND,
        format!(
            "{where_} already contains {what}: these names are reserved for lock-postgres's \
             tables, and what is there was not created by it (another application's \
             schema?). It was left untouched. Choose another schema or table (URL options \
             ?schema=, ?table=), or drop those objects if nothing uses them"
        ),
    )
}

/// Looks at the database (reads only).
async fn look<'e, E>(db: &Db, executor: E, s: &Statements) -> Result<Found, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let sql: Arc<str> = Arc::from(
        "SELECT 't' AS what, c.relname::text AS relname, c.relkind::text AS kind, \
             obj_description(c.oid, 'pg_class') AS comment, \
             (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ',' \
                 ORDER BY a.attnum) FROM pg_attribute a \
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1::text AND c.relname IN ($2::text, $3::text) \
         UNION ALL SELECT 's', nspname::text, '', NULL, NULL FROM pg_namespace \
         WHERE nspname = $1::text",
    );
    let rows = db
        .fetch_all(
            executor,
            &sql,
            &[
                Param::Text(s.schema.clone()),
                Param::Text(s.table.clone()),
                Param::Text(s.fences_table.clone()),
            ],
        )
        .await?;
    let mut found = Found::default();
    for row in rows {
        let what: String = row.try_get("what")?;
        if what == "s" {
            found.schema_exists = true;
            continue;
        }
        let relname: String = row.try_get("relname")?;
        let columns: Option<String> = row.try_get("columns")?;
        let table = FoundTable {
            kind: row.try_get("kind")?,
            columns: columns
                .map(|c| c.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            comment: row.try_get("comment")?,
        };
        if relname == s.table {
            found.leases = Some(table);
        } else {
            found.fences = Some(table);
        }
    }
    Ok(found)
}

/// Checks the tables, creating them if missing.
pub(crate) async fn ensure(db: &Db, s: &Statements) -> Result<(), LockError> {
    let where_ = format!("schema {} of {}", ident(&s.schema), db.shown);
    let found = db
        .run("checking the lease tables", |_| async {
            Ok::<_, Failure>(look(db, &db.pool, s).await?)
        })
        .await?;
    if found.verdict(&where_, s)? == Verdict::Ready {
        return Ok(());
    }
    let key = [Param::Text(format!("schema:{}", s.advisory_key("")))];
    let try_create: Arc<str> = Arc::from(format!(
        "SELECT 'taken' WHERE {}",
        advisory("pg_try_advisory_xact_lock")
    ));
    let wait_for_creator: Arc<str> = Arc::from(format!(
        "SELECT {}",
        advisory("pg_advisory_xact_lock_shared")
    ));
    let create: Arc<str> = Arc::from(format!("SELECT {}", advisory("pg_advisory_xact_lock")));
    db.run("creating the lease tables", |_| async {
        // Many programs starting at once on an empty database (a fleet's rollout) all find the
        // tables missing. One of them creates them; the others wait for it together, on a
        // shared lock granted to all of them at once when its transaction ends, then look in
        // parallel. Taking the exclusive lock one after another instead made the last of 32
        // wait for 31 turns through a busy server, past its operation budget.
        let mut creator_gave_up = false;
        loop {
            let mut tx = db.pool.begin().await?;
            let creating = if creator_gave_up {
                // It held the lock but did not create them (its role may not, or it was
                // stopped): create them here, once whoever else is looking has looked.
                db.fetch_all(&mut *tx, &create, &key).await?;
                true
            } else {
                !db.fetch_all(&mut *tx, &try_create, &key).await?.is_empty()
            };
            if !creating {
                db.fetch_all(&mut *tx, &wait_for_creator, &key).await?;
            }
            let found = look(db, &mut *tx, s).await?;
            if found.verdict(&where_, s)? == Verdict::Ready {
                return Ok(());
            }
            if !creating {
                creator_gave_up = true;
                continue;
            }
            for statement in s.ddl(!found.schema_exists) {
                let statement: Arc<str> = Arc::from(statement);
                if let Err(e) = db.fetch_all(&mut *tx, &statement, &[]).await {
                    return Err(creation_failed(e, &where_, s, !found.schema_exists));
                }
            }
            tx.commit().await?;
            tracing::info!(schema = %s.schema, table = %s.table, "created the lease tables");
            return Ok(());
        }
    })
    .await
}

/// A role that may not create the tables gets the exact DDL to have them created.
fn creation_failed(e: sqlx::Error, where_: &str, s: &Statements, with_schema: bool) -> Failure {
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    match code.as_deref() {
        Some("42501") => Failure::Lock(LockError::config(
            BACKEND,
            format!(
                "the lease tables do not exist in {where_}, and this role may not create them \
                 ({e}). Have an administrator run, once:\n{}and grant this role SELECT, INSERT, \
                 UPDATE, DELETE on both tables",
                s.ddl_script(with_schema)
            ),
        )),
        Some("25006") => Failure::Lock(LockError::config(
            BACKEND,
            format!(
                "the lease tables do not exist in {where_}, and the server is read-only ({e}); \
                 connect to the primary once so they are created, or run:\n{}",
                s.ddl_script(with_schema)
            ),
        )),
        _ => Failure::Sql(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: &[(&str, &str)], comment: Option<&str>) -> Option<FoundTable> {
        Some(FoundTable {
            kind: "r".into(),
            columns: expected(columns),
            comment: comment.map(str::to_owned),
        })
    }

    fn ours() -> Found {
        Found {
            schema_exists: true,
            leases: table(
                LEASE_COLUMNS,
                Some(&format!("{TABLE_COMMENT_PREFIX}{SCHEMA_VERSION}")),
            ),
            fences: table(FENCE_COLUMNS, None),
        }
    }

    fn refused(found: &Found, needle: &str) {
        let s = Statements::new("public", "leaselock_leases");
        match found.verdict("schema \"public\" of db", &s) {
            Err(LockError::Config { detail, .. }) => {
                assert!(detail.contains(needle), "{needle:?} missing: {detail}");
                assert!(detail.contains("untouched"), "{detail}");
            }
            other => panic!("{found:?}: {other:?}"),
        }
    }

    #[test]
    fn empty_is_created_and_ours_is_ready() {
        let s = Statements::new("public", "leaselock_leases");
        assert_eq!(Found::default().verdict("db", &s).unwrap(), Verdict::Create);
        assert_eq!(ours().verdict("db", &s).unwrap(), Verdict::Ready);
    }

    #[test]
    fn newer_versions_and_foreign_tables_are_refused() {
        refused(
            &Found {
                leases: table(
                    &[("name", "text"), ("new", "text")],
                    Some(&format!("{TABLE_COMMENT_PREFIX}7")),
                ),
                ..ours()
            },
            "version 7",
        );
        refused(
            &Found {
                leases: table(&[("id", "integer")], None),
                ..ours()
            },
            "columns (id integer)",
        );
        refused(
            &Found {
                leases: table(
                    &[("id", "integer")],
                    Some(&format!("{TABLE_COMMENT_PREFIX}1")),
                ),
                ..ours()
            },
            "instead of (name text",
        );
        refused(
            &Found {
                fences: None,
                ..ours()
            },
            "no `leaselock_leases_fences`",
        );
        refused(
            &Found {
                leases: None,
                ..ours()
            },
            "but no `leaselock_leases`",
        );
        refused(
            &Found {
                fences: Some(FoundTable {
                    kind: "v".into(),
                    columns: expected(FENCE_COLUMNS),
                    comment: None,
                }),
                ..ours()
            },
            "a view",
        );
    }
}
