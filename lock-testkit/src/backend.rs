//! [`Backend`]: the one list of lock stores the tests run against, and the URL of each.

use std::fmt;
use std::path::Path;

/// A lock store under test.
///
/// The cross-process tests (`lock-tests`) and the `lockctl` tests (`lock-cli`) point real
/// processes at a store by its [`url`](Self::url); a backend crate's conformance tests
/// build their targets themselves, since each pairs two clients of its own kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// lock-core's in-memory reference backend. It lives in one process: no URL.
    Memory,
    /// A lock directory (lock-file): `file://<dir>/locks`.
    File,
    /// SQLite through rusqlite (lock-sqlite): `sqlite://<dir>/locks.db`.
    Sqlite,
    /// SQLite through sqlx (lock-sqlite's `sqlx` feature): `sqlite+sqlx://<dir>/locks.db`.
    SqliteSqlx,
    /// The test binary's shared Redis server ([`redis::shared`](crate::redis::shared)).
    Redis,
    /// The test binary's shared 3-master Redis Cluster
    /// ([`redis::shared_cluster`](crate::redis::shared_cluster)).
    RedisCluster,
    /// The test binary's shared PostgreSQL server
    /// ([`postgres::shared`](crate::postgres::shared)), in a schema of the test's own.
    Postgres,
    /// The same server through the binary's PgBouncer in transaction mode
    /// ([`postgres::shared_bouncer`](crate::postgres::shared_bouncer)): statements without
    /// prepared statements (`statement_cache=0`), the `LISTEN` session on the server itself
    /// (`listen_url`), as the lock-postgres README recommends.
    PostgresPgbouncer,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Self; 8] = [
        Self::Memory,
        Self::File,
        Self::Sqlite,
        Self::SqliteSqlx,
        Self::Redis,
        Self::RedisCluster,
        Self::Postgres,
        Self::PostgresPgbouncer,
    ];

    /// The name conformance targets and test reports use: `memory`, `file`, `sqlite`,
    /// `sqlite-sqlx`, `redis`, `redis-cluster`, `postgres`, `postgres-pgbouncer`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::File => "file",
            Self::Sqlite => "sqlite",
            Self::SqliteSqlx => "sqlite-sqlx",
            Self::Redis => "redis",
            Self::RedisCluster => "redis-cluster",
            Self::Postgres => "postgres",
            Self::PostgresPgbouncer => "postgres-pgbouncer",
        }
    }

    /// The name as a Rust identifier (`sqlite_sqlx`): what a per-backend test is called.
    pub fn ident(self) -> &'static str {
        match self {
            Self::SqliteSqlx => "sqlite_sqlx",
            Self::RedisCluster => "redis_cluster",
            Self::PostgresPgbouncer => "postgres_pgbouncer",
            other => other.name(),
        }
    }

    /// Whether every process using the store runs on this host (a lock directory, SQLite),
    /// so that a holder whose process died is taken over at once rather than at its TTL.
    pub fn is_single_host(self) -> bool {
        matches!(self, Self::File | Self::Sqlite | Self::SqliteSqlx)
    }

    /// Whether every test of the binary shares the store (Redis): tests keep apart by
    /// the names they use, not by a store of their own.
    pub fn is_shared(self) -> bool {
        matches!(self, Self::Redis | Self::RedisCluster)
    }

    /// The URL of a store of this kind for a test whose files live in `dir`: a fresh store
    /// there (file, SQLite), or the binary's shared server (Redis, started on first use;
    /// PostgreSQL, in a schema named after `dir`, so every URL for one test is the same);
    /// `None` for [`Memory`](Self::Memory), which no other process can reach.
    ///
    /// # Panics
    ///
    /// For Redis and PostgreSQL, when no server can be had (see
    /// [`redis::shared`](crate::redis::shared), [`postgres::shared`](crate::postgres::shared)).
    pub fn url(self, dir: &Path) -> Option<String> {
        let dir = dir.display();
        Some(match self {
            Self::Memory => return None,
            Self::File => format!("file://{dir}/locks"),
            Self::Sqlite => format!("sqlite://{dir}/locks.db"),
            Self::SqliteSqlx => format!("sqlite+sqlx://{dir}/locks.db"),
            Self::Redis => crate::redis::shared().url(),
            Self::RedisCluster => crate::redis::shared_cluster().url(),
            Self::Postgres => {
                let url = crate::postgres::shared().url();
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}schema={}", schema_for(&dir.to_string()))
            }
            Self::PostgresPgbouncer => {
                let direct = crate::postgres::shared().url();
                let pooled = crate::postgres::shared_bouncer().url();
                let sep = if pooled.contains('?') { '&' } else { '?' };
                format!(
                    "{pooled}{sep}statement_cache=0&listen_url={}&schema={}",
                    crate::postgres::url_encode(&direct),
                    schema_for(&dir.to_string())
                )
            }
        })
    }
}

/// A schema name for a test directory: the same for every call with one directory.
fn schema_for(dir: &str) -> String {
    // FNV-1a: stable across runs and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in dir.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("test_{hash:016x}")
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_idents_are_identifiers() {
        let mut names: Vec<_> = Backend::ALL.iter().map(|b| b.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Backend::ALL.len());
        for backend in Backend::ALL {
            let ident = backend.ident();
            assert!(
                ident.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{ident}"
            );
            assert_eq!(ident.replace('_', "-"), backend.name());
        }
    }

    #[test]
    fn a_test_directory_has_one_postgres_schema() {
        assert_eq!(schema_for("/tmp/a"), schema_for("/tmp/a"));
        assert_ne!(schema_for("/tmp/a"), schema_for("/tmp/b"));
        assert!(schema_for("/tmp/a").len() <= 56);
    }

    #[test]
    fn local_stores_live_in_the_test_directory() {
        let dir = Path::new("/tmp/t");
        assert_eq!(Backend::Memory.url(dir), None);
        assert_eq!(
            Backend::File.url(dir).as_deref(),
            Some("file:///tmp/t/locks")
        );
        assert_eq!(
            Backend::Sqlite.url(dir).as_deref(),
            Some("sqlite:///tmp/t/locks.db")
        );
        assert_eq!(
            Backend::SqliteSqlx.url(dir).as_deref(),
            Some("sqlite+sqlx:///tmp/t/locks.db")
        );
    }
}
