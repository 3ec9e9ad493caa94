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
    },
    /// open + flock + read + write in place (+ fsync) + close, and the same to free it.
    File { path: PathBuf, sync: bool },
}

/// `(path, query)` of a URL written `scheme://path?query`.
fn path_and_query<'a>(url: &'a str, scheme: &str) -> (&'a str, &'a str) {
    let rest = &url[scheme.len() + 3..];
    rest.split_once('?').unwrap_or((rest, ""))
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl RawPair {
    /// The raw baseline for the store at `url`.
    pub(crate) async fn connect(url: &str) -> Result<Self, CliError> {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        match scheme {
            "redis" | "rediss" => {
                let client = redis::Client::open(url).map_err(|e| failed("redis URL", e))?;
                let conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| failed("redis connect", e))?;
                let key = format!("lockctl-bench-raw:{:08x}", rand::random::<u32>());
                let release = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('DEL', KEYS[1]) else return 0 end",
                );
                Ok(Self::Redis { conn, release, key })
            }
            "sqlite" | "sqlite+sqlx" => {
                let (path, query) = path_and_query(url, scheme);
                let synchronous = query_value(query, "synchronous").unwrap_or("normal");
                let conn = rusqlite::Connection::open(path).map_err(|e| failed("open", e))?;
                conn.execute_batch(&format!(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
                     PRAGMA busy_timeout = 5000; \
                     CREATE TABLE IF NOT EXISTS bench_raw_leases \
                     (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at_ms INTEGER NOT NULL);"
                ))
                .map_err(|e| failed("prepare", e))?;
                Ok(Self::Sqlite {
                    conn,
                    path: path.into(),
                })
            }
            "file" => {
                let (dir, query) = path_and_query(url, scheme);
                let sync = query_value(query, "sync") == Some("true");
                let path = PathBuf::from(dir)
                    .join(format!("bench-raw-{:08x}.lease", rand::random::<u32>()));
                Ok(Self::File { path, sync })
            }
            _ => Err(config(format!(
                "no raw baseline for {url:?}; use a sqlite://, sqlite+sqlx://, file:// or redis:// URL"
            ))),
        }
    }

    /// One acquire + release; panics never, errors are typed.
    pub(crate) async fn pair(&mut self, ttl: Duration) -> Result<(), CliError> {
        let token = format!("{:032x}", rand::random::<u128>());
        match self {
            Self::Redis { conn, release, key } => {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&*key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                    .query_async(conn)
                    .await
                    .map_err(|e| failed("SET NX PX", e))?;
                if set.is_none() {
                    return Err(failed("SET NX PX", "the raw key was held"));
                }
                let freed: i64 = release
                    .key(&*key)
                    .arg(&token)
                    .invoke_async(conn)
                    .await
                    .map_err(|e| failed("compare-and-delete", e))?;
                if freed != 1 {
                    return Err(failed("compare-and-delete", "nothing deleted"));
                }
                Ok(())
            }
            Self::Sqlite { conn, .. } => {
                let now = now_ms();
                let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| failed("BEGIN IMMEDIATE", e))?;
                let taken = tx
                    .prepare_cached(
                        "INSERT INTO bench_raw_leases (name, owner, expires_at_ms) VALUES ('raw', ?1, ?2) \
                         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
                         expires_at_ms = excluded.expires_at_ms \
                         WHERE bench_raw_leases.expires_at_ms <= ?3 RETURNING 1",
                    )
                    .and_then(|mut s| s.exists(rusqlite::params![token, now + ttl_ms, now]))
                    .map_err(|e| failed("upsert", e))?;
                tx.commit().map_err(|e| failed("COMMIT", e))?;
                if !taken {
                    return Err(failed("upsert", "the raw row was held"));
                }
                let freed = conn
                    .prepare_cached(
                        "UPDATE bench_raw_leases SET expires_at_ms = 0 \
                         WHERE name = 'raw' AND owner = ?1 AND expires_at_ms > ?2",
                    )
                    .and_then(|mut s| s.execute(rusqlite::params![token, now]))
                    .map_err(|e| failed("compare-and-free", e))?;
                if freed != 1 {
                    return Err(failed("compare-and-free", "nothing freed"));
                }
                Ok(())
            }
            Self::File { path, sync } => {
                let expires = now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                write_locked(path, format!("{token} {expires}\n").as_bytes(), *sync)?;
                write_locked(path, b"free\n", *sync)
            }
        }
    }

    /// Removes what the baseline created.
    pub(crate) async fn cleanup(self) {
        match self {
            Self::Redis { mut conn, key, .. } => {
                let _: Result<(), _> = redis::cmd("DEL").arg(key).query_async(&mut conn).await;
            }
            Self::Sqlite { conn, path } => {
                let _ = conn.execute_batch("DROP TABLE IF EXISTS bench_raw_leases");
                tracing::debug!(db = %path.display(), "dropped the raw baseline table");
            }
            Self::File { path, .. } => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Raw lease records are padded to this length, so every write overwrites the last one in
/// place and the file never changes size (the library's records are rewritten in place too).
const RAW_RECORD_LEN: usize = 64;

/// open, exclusive flock, read (a lease must be looked at before it is taken or freed),
/// write in place, optional fsync, close (which unlocks): one lease-file update.
fn write_locked(path: &PathBuf, content: &[u8], sync: bool) -> Result<(), CliError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut file: File = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed("open", e))?;
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
