//! The raw baselines: the least a lease needs from each store, with the same store and
//! settings as the library, measured in the same run.

use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::CliError;

fn config(detail: String) -> CliError {
    CliError::Config(format!("bench: {detail}"))
}

fn failed(what: &str, error: impl std::fmt::Display) -> CliError {
    CliError::Bench(format!("raw baseline: {what}: {error}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A raw acquire + release pair against one store.
pub(crate) enum RawPair {
    /// `SET key token NX PX ttl`, then an EVALSHA compare-and-delete.
    Redis {
        conn: redis::aio::MultiplexedConnection,
        release: redis::Script,
        key: String,
    },
    /// `BEGIN IMMEDIATE`, upsert-if-expired, `COMMIT`, then a compare-and-free `UPDATE` of
    /// the row in place (what the library does too: deleting the row would write more
    /// pages and flatter the library), on the same database file with the same pragmas.
    Sqlite {
        conn: rusqlite::Connection,
        path: PathBuf,
        record: String,
    },
    /// open + flock + read + write in place (+ fsync) + close, and the same to free it.
    File { path: PathBuf, sync: bool },
    /// An upsert-if-expired (`INSERT .. ON CONFLICT .. DO UPDATE .. WHERE expired`,
    /// expiry by `clock_timestamp()`), then a compare-and-delete, each one statement through
    /// sqlx on a pool like the library's: prepared statements, or simple queries with
    /// inlined values when the URL turns the statement cache off (`statement_cache=0`).
    Postgres {
        pool: sqlx::PgPool,
        table: String,
        name: String,
        prepared: bool,
    },
}

impl RawPair {
    /// The raw baseline for the store at `url`, on a record of its own.
    pub(crate) async fn connect(url: &str) -> Result<Self, CliError> {
        Self::connect_to(url, &format!("{:08x}", rand::random::<u32>())).await
    }

    /// The raw baseline for the store at `url`, on the record named `record` (ASCII letters,
    /// digits and `-`: it goes into keys, file names and SQL literals as it is): processes
    /// that connect with the same record take turns on one lease.
    pub(crate) async fn connect_to(url: &str, record: &str) -> Result<Self, CliError> {
        // The store's own options type reads the URL, so the baseline uses exactly the
        // server, file and settings the library does.
        if leaselock::redis::DRIVER.serves(url) {
            let opts: leaselock::redis::RedisOptions = url.parse()?;
            if opts.is_cluster() {
                return Err(config(format!(
                    "no raw baseline for a Redis Cluster ({}); bench one of its nodes",
                    lock_core::backend_kit::redact_url(url)
                )));
            }
            let node = opts.connection_urls().remove(0);
            let client = redis::Client::open(node).map_err(|e| failed("redis URL", e))?;
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| failed("redis connect", e))?;
            let key = format!("lockctl-bench-raw:{record}");
            let release = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                 return redis.call('DEL', KEYS[1]) else return 0 end",
            );
            Ok(Self::Redis { conn, release, key })
        } else if leaselock::sqlite::DRIVER.serves(url)
            || leaselock::sqlite::SQLX_DRIVER.serves(url)
        {
            let opts: leaselock::sqlite::SqliteOptions = url.parse()?;
            let conn = rusqlite::Connection::open(&opts.path).map_err(|e| failed("open", e))?;
            conn.execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; \
                 PRAGMA busy_timeout = 5000; \
                 CREATE TABLE IF NOT EXISTS bench_raw_leases \
                 (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at_ms INTEGER NOT NULL);",
                opts.synchronous.as_str()
            ))
            .map_err(|e| failed("prepare", e))?;
            Ok(Self::Sqlite {
                conn,
                path: opts.path,
                record: record.to_owned(),
            })
        } else if leaselock::postgres::DRIVER.serves(url) {
            let opts: leaselock::postgres::PostgresOptions = url.parse()?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.connect_timeout)
                .test_before_acquire(false)
                .connect_with(opts.connect.clone())
                .await
                .map_err(|e| failed("postgres connect", e))?;
            let table = format!("\"{}\".bench_raw_leases", opts.schema.replace('"', "\"\""));
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"; CREATE TABLE IF NOT EXISTS {table} \
                 (name text PRIMARY KEY, owner text NOT NULL, expires_at timestamptz NOT NULL)",
                opts.schema.replace('"', "\"\"")
            )))
            .execute(&pool)
            .await
            .map_err(|e| failed("prepare", e))?;
            Ok(Self::Postgres {
                pool,
                table,
                name: format!("raw-{record}"),
                prepared: opts.prepared_statements(),
            })
        } else if leaselock::file::DRIVER.serves(url) {
            let opts: leaselock::file::FileOptions = url.parse()?;
            let path = opts.dir.join(format!("bench-raw-{record}.lease"));
            Ok(Self::File {
                path,
                sync: opts.sync_writes,
            })
        } else {
            Err(config(format!(
                "no raw baseline for {:?}; use a sqlite://, sqlite+sqlx://, file://, redis:// or \
                 postgres:// URL",
                lock_core::backend_kit::redact_url(url)
            )))
        }
    }

    /// One acquire + release; panics never, errors are typed.
    pub(crate) async fn pair(&mut self, ttl: Duration) -> Result<(), CliError> {
        let token = self.acquire(ttl).await?;
        self.release(&token).await
    }

    /// Takes the lease for `ttl` (an error if it is held), and returns the token that frees
    /// it.
    pub(crate) async fn acquire(&mut self, ttl: Duration) -> Result<String, CliError> {
        let token = format!("{:032x}", rand::random::<u128>());
        let taken = match self {
            Self::Redis { conn, key, .. } => {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&*key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                    .query_async(conn)
                    .await
                    .map_err(|e| failed("SET NX PX", e))?;
                set.is_some()
            }
            Self::Sqlite { conn, record, .. } => {
                let now = now_ms();
                let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| failed("BEGIN IMMEDIATE", e))?;
                let taken = tx
                    .prepare_cached(
                        "INSERT INTO bench_raw_leases (name, owner, expires_at_ms) VALUES (?4, ?1, ?2) \
                         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
                         expires_at_ms = excluded.expires_at_ms \
                         WHERE bench_raw_leases.expires_at_ms <= ?3 RETURNING 1",
                    )
                    .and_then(|mut s| s.exists(rusqlite::params![token, now + ttl_ms, now, &*record]))
                    .map_err(|e| failed("upsert", e))?;
                tx.commit().map_err(|e| failed("COMMIT", e))?;
                taken
            }
            Self::Postgres {
                pool,
                table,
                name,
                prepared,
            } => {
                let micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
                let upsert = format!(
                    "INSERT INTO {table} AS t (name, owner, expires_at) VALUES ($1, $2, \
                     clock_timestamp() + $3 * interval '1 microsecond') ON CONFLICT (name) DO \
                     UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
                     WHERE t.expires_at <= clock_timestamp() RETURNING 1"
                );
                if *prepared {
                    sqlx::query(sqlx::AssertSqlSafe(upsert))
                        .bind(&*name)
                        .bind(&token)
                        .bind(micros)
                        .fetch_optional(&*pool)
                        .await
                        .map_err(|e| failed("upsert", e))?
                        .is_some()
                } else {
                    let sql = inline(&upsert, name, &token).replace("$3", &micros.to_string());
                    !sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .fetch_all(&*pool)
                        .await
                        .map_err(|e| failed("upsert", e))?
                        .is_empty()
                }
            }
            Self::File { path, sync } => {
                let expires = now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                write_locked(path, format!("{token} {expires}\n").as_bytes(), *sync)?;
                true
            }
        };
        if taken {
            Ok(token)
        } else {
            Err(failed("acquire", "the raw lease was held"))
        }
    }

    /// Frees the lease `token` holds (compare-and-free); an error if it held none.
    pub(crate) async fn release(&mut self, token: &str) -> Result<(), CliError> {
        let freed = match self {
            Self::Redis { conn, release, key } => {
                let freed: i64 = release
                    .key(&*key)
                    .arg(token)
                    .invoke_async(conn)
                    .await
                    .map_err(|e| failed("compare-and-delete", e))?;
                freed == 1
            }
            Self::Sqlite { conn, record, .. } => {
                let freed = conn
                    .prepare_cached(
                        "UPDATE bench_raw_leases SET expires_at_ms = 0 \
                         WHERE name = ?3 AND owner = ?1 AND expires_at_ms > ?2",
                    )
                    .and_then(|mut s| s.execute(rusqlite::params![token, now_ms(), &*record]))
                    .map_err(|e| failed("compare-and-free", e))?;
                freed == 1
            }
            Self::Postgres {
                pool,
                table,
                name,
                prepared,
            } => {
                let delete = format!("DELETE FROM {table} WHERE name = $1 AND owner = $2");
                let freed = if *prepared {
                    sqlx::query(sqlx::AssertSqlSafe(delete))
                        .bind(&*name)
                        .bind(token)
                        .execute(&*pool)
                        .await
                } else {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(inline(&delete, name, token)))
                        .execute(&*pool)
                        .await
                };
                freed
                    .map_err(|e| failed("compare-and-delete", e))?
                    .rows_affected()
                    == 1
            }
            Self::File { path, sync } => {
                write_locked(path, b"free\n", *sync)?;
                true
            }
        };
        if freed {
            Ok(())
        } else {
            Err(failed("release", "nothing freed"))
        }
    }

    /// Removes what the baseline created.
    pub(crate) async fn cleanup(self) {
        match self {
            Self::Redis { mut conn, key, .. } => {
                let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
            }
            Self::Sqlite { conn, path, .. } => {
                let _ = conn.execute_batch("DROP TABLE IF EXISTS bench_raw_leases");
                tracing::debug!(db = %path.display(), "dropped the raw baseline table");
            }
            Self::File { path, .. } => {
                let _ = std::fs::remove_file(path);
            }
            Self::Postgres { pool, table, .. } => {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        }
    }
}

/// `sql` with the name and token inlined as literals, for a connection without prepared
/// statements. Names and tokens here are ASCII letters, digits and `-`: plain literals are
/// safe.
fn inline(sql: &str, name: &str, token: &str) -> String {
    sql.replace("$1", &format!("'{name}'"))
        .replace("$2", &format!("'{token}'"))
}

/// For a store whose processes all run on one host (SQLite, a lock directory), a fresh file
/// next to it for the raw hand-off baseline: worker processes taking turns with a blocking
/// `flock` on it, as `flock(1)` users do; removed when dropped. `None` for network stores.
pub(crate) fn handoff_flock_file(url: &str) -> Result<Option<FlockFile>, CliError> {
    let dir = if leaselock::sqlite::DRIVER.serves(url) || leaselock::sqlite::SQLX_DRIVER.serves(url)
    {
        let opts: leaselock::sqlite::SqliteOptions = url.parse()?;
        match opts.path.parent() {
            Some(dir) if dir.as_os_str().is_empty() => PathBuf::from("."),
            Some(dir) => dir.to_owned(),
            None => return Ok(None),
        }
    } else if leaselock::file::DRIVER.serves(url) {
        let opts: leaselock::file::FileOptions = url.parse()?;
        opts.dir
    } else {
        return Ok(None);
    };
    Ok(Some(FlockFile(dir.join(format!(
        "lockctl-bench-{:08x}.flock",
        rand::random::<u32>()
    )))))
}

/// The raw hand-off baseline's file (the workers create it); removed when dropped.
#[derive(Debug)]
pub(crate) struct FlockFile(PathBuf);

impl FlockFile {
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The raw store hand-off's record (see `bench-worker --raw-store`).
    pub(crate) fn record(&self) -> String {
        Self::record_of(&self.0)
    }

    /// The record of the raw store hand-off whose `flock` file is `path`: its stem.
    pub(crate) fn record_of(path: &std::path::Path) -> String {
        path.file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for FlockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens (creating it, mode 0600) a file the raw baselines lock with `flock`.
pub(crate) fn open_lock_file(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

/// Raw lease records are padded to this length, so every write overwrites the last one in
/// place and the file never changes size (the library's records are rewritten in place too).
const RAW_RECORD_LEN: usize = 64;

/// open, exclusive flock, read (a lease must be looked at before it is taken or freed),
/// write in place, optional fsync, close (which unlocks): one lease-file update.
fn write_locked(path: &std::path::Path, content: &[u8], sync: bool) -> Result<(), CliError> {
    use std::io::{Read, Seek, Write};
    let mut file = open_lock_file(path).map_err(|e| failed("open", e))?;
    fs4::FileExt::lock(&file).map_err(|e| failed("flock", e))?;
    let mut record = [b' '; RAW_RECORD_LEN];
    let len = content.len().min(RAW_RECORD_LEN);
    record[..len].copy_from_slice(&content[..len]);
    let mut seen = Vec::with_capacity(RAW_RECORD_LEN);
    let result = (|| {
        file.read_to_end(&mut seen)?;
        file.rewind()?;
        file.write_all(&record)?;
        if sync {
            file.sync_data()?;
        }
        Ok::<_, std::io::Error>(())
    })();
    result.map_err(|e| failed("read and write", e))
}
