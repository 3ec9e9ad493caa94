//! What an opened database holds, and whether this library may use it.
//!
//! Opening first looks (reads only) and refuses, before writing anything, a database whose
//! `lock_leases` or `lock_meta` table is not ours or whose schema is newer than this library.
//! Only then are missing tables created, or an older schema migrated.
//!
//! The schema is versioned by the `schema_version` row of `lock_meta` (never by
//! `PRAGMA user_version`, which belongs to the application when the sqlx driver shares its
//! database). Migrations run in the same `BEGIN IMMEDIATE` transaction that looks at the
//! schema again, so concurrent openers migrate exactly once.
//!
//! Versions:
//!
//! 1. One global fence counter (`lock_meta` key `fence`) advanced by every acquisition;
//!    release deletes the row.
//! 2. Each name's fence lives in its row, which release only frees; the global value
//!    (renamed `fence_seed`) only seeds the first row of a name. Version 1 rows are valid
//!    version 2 rows and version 2 seeds above anything version 1 issued, so migrating is
//!    renaming the counter and setting the version. A version 1 library refuses a version
//!    2 database (newer than it understands), which is what keeps the two from mixing
//!    their fence schemes: version 1 would issue global-counter fences below the per-name
//!    ones.
//! 3. One row per permit (`name`, `slot`) with the holder's limit, so a name can be a
//!    semaphore; expiry on the host's boot clock (`boot_id`, `expires_boot_ms`) instead of
//!    the wall clock (`expires_at_ms`, gone); hybrid fences (`max(counter + 1, wall clock in
//!    microseconds)`, below 2^53). Migrating rebuilds `lock_leases` in the same transaction:
//!    each old row becomes slot 0 of a lock under this boot, a live lease's wall-clock
//!    expiry put on the boot clock as far ahead as it was. A version 1 or 2 process that
//!    still has the database open fails every statement it runs on `lock_leases` (they all
//!    name `expires_at_ms`), so it can neither grant a lease nor misjudge one.
//! 4. `hold`: the stamp of the holder's process hold, so that a contender takes a dead
//!    process's lease over at once (`lock_core::backend_kit::hold`). Migrating adds the
//!    column; a version 3 process that still has the database open keeps working (its
//!    leases carry no stamp and are freed by their TTL only).

use lock_core::LockError;

use crate::BACKEND;
use crate::sql::{
    LEASE_COLUMNS, LEGACY_LEASE_COLUMNS, META_COLUMNS, SCHEMA_VERSION, V3_LEASE_COLUMNS,
};
use crate::value::Value;

/// One of our table names as found in `sqlite_master`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FoundTable {
    /// `table`, `view`, `index` or `trigger`.
    pub(crate) kind: String,
    /// Column names in order (empty unless `kind` is `table`).
    pub(crate) columns: Vec<String>,
}

/// What a look at the database found.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Found {
    pub(crate) meta: Option<FoundTable>,
    pub(crate) leases: Option<FoundTable>,
    /// The `schema_version` row of `lock_meta`, if `lock_meta` has our columns and the row.
    pub(crate) version: Option<Value>,
}

/// What to do with the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Our tables at our version: use it as it is.
    Ready,
    /// Neither table exists: create them.
    Create,
    /// Our tables at an older version that this library migrates in place.
    Migrate {
        /// The version found.
        from: i64,
    },
}

impl Found {
    /// True if `lock_meta` is a table with our columns, so its `schema_version` row can be read.
    pub(crate) fn meta_is_ours(&self) -> bool {
        self.meta
            .as_ref()
            .is_some_and(|t| t.kind == "table" && columns_are(&t.columns, META_COLUMNS))
    }

    /// Decides, or explains with a [`LockError::Config`] why this database cannot be used.
    pub(crate) fn verdict(&self, db: &str) -> Result<Verdict, LockError> {
        let (meta, leases) = match (&self.meta, &self.leases) {
            (None, None) => return Ok(Verdict::Create),
            (None, Some(leases)) => {
                let what = if leases.kind == "table" {
                    format!(
                        "a table `lock_leases` with columns ({}) but no `lock_meta` table",
                        leases.columns.join(", ")
                    )
                } else {
                    format!("a {} named `lock_leases`", leases.kind)
                };
                return Err(foreign(db, &what));
            }
            (Some(meta), leases) => (meta, leases),
        };
        if meta.kind != "table" {
            return Err(foreign(db, &format!("a {} named `lock_meta`", meta.kind)));
        }
        if !columns_are(&meta.columns, META_COLUMNS) {
            return Err(foreign(
                db,
                &format!(
                    "a table `lock_meta` with columns ({}) instead of ({})",
                    meta.columns.join(", "),
                    META_COLUMNS.join(", ")
                ),
            ));
        }
        let version = match &self.version {
            None => {
                return Err(foreign(
                    db,
                    "a table `lock_meta` without a `schema_version` row",
                ));
            }
            Some(Value::Integer(v)) => *v,
            Some(other) => {
                return Err(foreign(
                    db,
                    &format!(
                        "a table `lock_meta` whose `schema_version` is {} {other:?}",
                        other.kind()
                    ),
                ));
            }
        };
        if version > SCHEMA_VERSION {
            return Err(LockError::config(
                BACKEND,
                format!(
                    "database {db} holds lock schema version {version}, newer than version \
                     {SCHEMA_VERSION} that this version of lock-sqlite understands; it was left \
                     untouched. Upgrade lock-sqlite in this program (every program sharing the \
                     database must understand schema version {version})"
                ),
            ));
        }
        if version < 1 {
            return Err(foreign(
                db,
                &format!("a table `lock_meta` with schema_version {version}"),
            ));
        }
        let expected = match version {
            4.. => LEASE_COLUMNS,
            3 => V3_LEASE_COLUMNS,
            _ => LEGACY_LEASE_COLUMNS,
        };
        match leases {
            None => Err(foreign(
                db,
                "a table `lock_meta` but no `lock_leases` table",
            )),
            Some(t) if t.kind != "table" => {
                Err(foreign(db, &format!("a {} named `lock_leases`", t.kind)))
            }
            Some(t) if !columns_are(&t.columns, expected) => Err(foreign(
                db,
                &format!(
                    "a table `lock_leases` with columns ({}) instead of ({}) (schema version \
                     {version})",
                    t.columns.join(", "),
                    expected.join(", ")
                ),
            )),
            Some(_) if version < SCHEMA_VERSION => Ok(Verdict::Migrate { from: version }),
            Some(_) => Ok(Verdict::Ready),
        }
    }
}

fn columns_are(found: &[String], expected: &[&str]) -> bool {
    found.len() == expected.len() && found.iter().zip(expected).all(|(f, e)| f == e)
}

fn foreign(db: &str, what: &str) -> LockError {
    LockError::config(
        BACKEND,
        format!(
            "database {db} already contains {what}: these names are reserved for lock-sqlite's \
             tables, and what is there was not created by it (another application's schema?). \
             The database was left untouched. Use another database file for locks, or rename \
             or drop those objects if nothing uses them"
        ),
    )
}

/// The message for a read-only database that has no lock tables yet.
pub(crate) fn read_only_without_tables(db: &str) -> LockError {
    LockError::config(
        BACKEND,
        format!(
            "database {db} was opened read-only and has no lock tables yet; open it read-write \
             once (without mode=ro) to create them"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: &[&str]) -> Option<FoundTable> {
        Some(FoundTable {
            kind: "table".into(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        })
    }

    fn ours() -> Found {
        Found {
            meta: table(META_COLUMNS),
            leases: table(LEASE_COLUMNS),
            version: Some(Value::Integer(SCHEMA_VERSION)),
        }
    }

    fn refused(found: &Found, needle: &str) {
        match found.verdict("/data/app.db") {
            Err(LockError::Config { detail, .. }) => {
                assert!(detail.contains(needle), "{detail}");
                assert!(detail.contains("/data/app.db"), "{detail}");
                assert!(detail.contains("untouched"), "{detail}");
            }
            other => panic!("{found:?}: {other:?}"),
        }
    }

    #[test]
    fn empty_database_is_created_and_ours_is_ready() {
        assert_eq!(Found::default().verdict("db").unwrap(), Verdict::Create);
        assert_eq!(ours().verdict("db").unwrap(), Verdict::Ready);
        assert!(ours().meta_is_ours());
    }

    #[test]
    fn versions_1_to_3_are_migrated() {
        for from in [1, 2, 3] {
            let columns = if from == 3 {
                V3_LEASE_COLUMNS
            } else {
                LEGACY_LEASE_COLUMNS
            };
            let found = Found {
                leases: table(columns),
                version: Some(Value::Integer(from)),
                ..ours()
            };
            assert_eq!(found.verdict("db").unwrap(), Verdict::Migrate { from });
            // Still refused when its tables are not ours...
            refused(
                &Found {
                    leases: table(&["id", "name"]),
                    ..found.clone()
                },
                "columns (id, name)",
            );
            // ...or have another version's columns.
            refused(
                &Found {
                    leases: table(LEASE_COLUMNS),
                    ..found
                },
                &format!("instead of ({}) (schema version", columns.join(", ")),
            );
        }
        refused(
            &Found {
                leases: table(LEGACY_LEASE_COLUMNS),
                ..ours()
            },
            "hold) (schema version 4)",
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let found = Found {
            version: Some(Value::Integer(SCHEMA_VERSION + 1)),
            ..ours()
        };
        refused(&found, "newer");
        // A newer version may change lock_leases: still reported as newer, not as foreign.
        let found = Found {
            leases: table(&["name", "something_new"]),
            version: Some(Value::Integer(7)),
            ..ours()
        };
        refused(&found, "version 7");
    }

    #[test]
    fn foreign_schemas_are_refused() {
        refused(
            &Found {
                meta: None,
                ..ours()
            },
            "but no `lock_meta`",
        );
        refused(
            &Found {
                meta: table(&["k", "v"]),
                version: None,
                ..ours()
            },
            "columns (k, v)",
        );
        refused(
            &Found {
                version: None,
                ..ours()
            },
            "without a `schema_version` row",
        );
        refused(
            &Found {
                version: Some(Value::from("one")),
                ..ours()
            },
            "schema_version",
        );
        refused(
            &Found {
                version: Some(Value::Integer(0)),
                ..ours()
            },
            "schema_version 0",
        );
        refused(
            &Found {
                leases: table(&["id", "name"]),
                ..ours()
            },
            "columns (id, name)",
        );
        refused(
            &Found {
                leases: None,
                ..ours()
            },
            "no `lock_leases`",
        );
        refused(
            &Found {
                leases: Some(FoundTable {
                    kind: "view".into(),
                    columns: Vec::new(),
                }),
                ..ours()
            },
            "a view named `lock_leases`",
        );
    }
}
