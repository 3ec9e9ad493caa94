//! `leaselock::connect(url)`: pick a backend by URL scheme among those compiled in.

use std::sync::Arc;

use lock_core::backend_kit::{Driver, redact_url, scheme_of};
use lock_core::{LockBackend, LockError, Result};

/// A backend this facade knows about, compiled in or not.
struct Backend {
    /// The cargo feature of `leaselock` that compiles it in.
    feature: &'static str,
    /// Its URL schemes, known even when it is not compiled in, so that the message for a
    /// scheme whose feature is off can name the feature. A test checks them against the
    /// driver's own list.
    schemes: &'static [&'static str],
    /// Its driver, when compiled in.
    driver: Option<&'static Driver>,
}

/// One line per backend: its feature, its schemes, and its crate's driver constant.
macro_rules! backend {
    ($feature:literal, [$($scheme:literal),+], $($driver:tt)+) => {
        Backend {
            feature: $feature,
            schemes: &[$($scheme),+],
            #[cfg(feature = $feature)]
            driver: Some(&$($driver)+),
            #[cfg(not(feature = $feature))]
            driver: None,
        }
    };
}

/// Every backend, in the order schemes are listed in messages.
const BACKENDS: &[Backend] = &[
    backend!("sqlite", ["sqlite"], lock_sqlite::DRIVER),
    backend!("sqlite-sqlx", ["sqlite+sqlx"], lock_sqlite::SQLX_DRIVER),
    backend!("file", ["file"], lock_file::DRIVER),
    backend!(
        "redis",
        [
            "redis",
            "rediss",
            "redis+cluster",
            "rediss+cluster",
            "redis+sentinel",
            "rediss+sentinel"
        ],
        lock_redis::DRIVER
    ),
    backend!(
        "postgres",
        ["postgres", "postgresql"],
        lock_postgres::DRIVER
    ),
];

/// The URL schemes this build of the crate can connect to.
pub fn supported_schemes() -> Vec<&'static str> {
    drivers().flat_map(|d| d.schemes.iter().copied()).collect()
}

/// The drivers compiled into this build.
fn drivers() -> impl Iterator<Item = &'static Driver> {
    BACKENDS.iter().filter_map(|b| b.driver)
}

/// Connects to the lock store at `url`, choosing the backend by scheme. This table is the
/// one list of every store URL (each backend's documentation has its options):
///
/// | URL | store | feature |
/// |---|---|---|
/// | `sqlite:///abs/path.db`, `sqlite://rel/path.db` | SQLite, rusqlite driver ([`sqlite::SqliteOptions`](https://docs.rs/lock-sqlite/latest/lock_sqlite/struct.SqliteOptions.html)) | `sqlite` (default) |
/// | `sqlite+sqlx:///abs/path.db` | SQLite, sqlx driver | `sqlite-sqlx` |
/// | `file:///abs/dir` | lock directory ([`file::FileOptions`](https://docs.rs/lock-file/latest/lock_file/struct.FileOptions.html)) | `file` (default) |
/// | `redis://[user:pass@]host[:port][/db]`, `rediss://...` | Redis ([`redis::RedisOptions`](https://docs.rs/lock-redis/latest/lock_redis/struct.RedisOptions.html)) | `redis` |
/// | `redis+cluster://host:port,host:port`, `rediss+cluster://...` | Redis Cluster | `redis` |
/// | `redis+sentinel://host:port[,host:port]/master-name[/db]`, `rediss+sentinel://...` | the Redis primary Sentinels name, followed through failovers | `redis` |
/// | `postgres://[user:pass@]host[:port]/database`, `postgresql://...` | PostgreSQL ([`postgres::PostgresOptions`](https://docs.rs/lock-postgres/latest/lock_postgres/struct.PostgresOptions.html)) | `postgres` |
///
/// Every store reads its query options the same way: durations humantime style
/// (`?busy_timeout=30s`), booleans `true`/`false`, and an unknown option is an error that
/// lists the known ones. Passwords never appear in messages.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), leaselock::LockError> {
/// # let tmp = tempfile::tempdir().unwrap();
/// # let dir = tmp.path().display();
/// # let url = match () {
/// #     _ if cfg!(feature = "sqlite") => format!("sqlite://{dir}/locks.db"),
/// #     _ if cfg!(feature = "file") => format!("file://{dir}/locks"),
/// #     _ => return Ok(()), // built without a local store
/// # };
/// // let url = "sqlite:///var/lib/myapp/locks.db";
/// let backend = leaselock::connect(&url).await?;
/// # let _ = backend;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`LockError::Config`] for a URL without a scheme, an unknown scheme, or a scheme whose
/// feature is off in this build (the message lists the schemes this build supports), and
/// whatever the backend reports when connecting.
pub async fn connect(url: &str) -> Result<Arc<dyn LockBackend>> {
    let Some(scheme) = scheme_of(url) else {
        return Err(unsupported(url, "it has no scheme"));
    };
    let known = BACKENDS
        .iter()
        .find(|b| b.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)));
    match known {
        Some(Backend {
            driver: Some(driver),
            ..
        }) => (driver.connect)(url.to_owned()).await,
        Some(backend) => Err(unsupported(
            url,
            &format!(
                "the {scheme}:// backend is not compiled in; enable the `{}` feature of the \
                 `leaselock` crate",
                backend.feature
            ),
        )),
        None => Err(unsupported(
            url,
            &format!("{scheme}:// is not a known lock store"),
        )),
    }
}

fn unsupported(url: &str, why: &str) -> LockError {
    let shown: String = redact_url(url).chars().take(80).collect();
    LockError::config(
        "leaselock",
        format!(
            "cannot use lock store URL \"{shown}\": {why}; this build supports: {} (see \
             leaselock::connect for every form)",
            supported_schemes()
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_and_schemeless_urls_name_the_supported_schemes() {
        for url in ["mysql://localhost/db", "no-scheme-here", "ftp://x", ":x"] {
            let err = connect(url).await.expect_err("must fail");
            let text = err.to_string();
            assert!(matches!(err, LockError::Config { .. }), "{url}: {err:?}");
            for scheme in supported_schemes() {
                assert!(text.contains(&format!("{scheme}://")), "{url}: {text}");
            }
        }
    }

    #[tokio::test]
    async fn a_refused_url_never_shows_its_password() {
        let err = connect("mysql://app:s3cret@db/locks?password=hunter2")
            .await
            .expect_err("must fail");
        let text = err.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(text.contains("mysql://***@db/locks"), "{text}");
    }

    #[test]
    fn every_compiled_scheme_is_listed() {
        let schemes = supported_schemes();
        assert_eq!(schemes.contains(&"sqlite"), cfg!(feature = "sqlite"));
        assert_eq!(schemes.contains(&"file"), cfg!(feature = "file"));
        assert_eq!(schemes.contains(&"redis"), cfg!(feature = "redis"));
        assert_eq!(schemes.contains(&"rediss"), cfg!(feature = "redis"));
        assert_eq!(schemes.contains(&"postgres"), cfg!(feature = "postgres"));
        assert_eq!(schemes.contains(&"postgresql"), cfg!(feature = "postgres"));
        assert_eq!(
            schemes.contains(&"sqlite+sqlx"),
            cfg!(feature = "sqlite-sqlx")
        );
    }

    /// The schemes written in `BACKENDS` (for messages about features that are off) are
    /// exactly each compiled driver's own.
    #[test]
    fn the_facade_lists_each_drivers_own_schemes() {
        for backend in BACKENDS {
            if let Some(driver) = backend.driver {
                assert_eq!(backend.schemes, driver.schemes, "{}", backend.feature);
            }
        }
    }

    /// The one table of URLs, in `connect`'s documentation, names every scheme of every
    /// backend, and nothing else.
    #[test]
    fn the_documented_table_matches_the_registry() {
        let source = include_str!("connect.rs");
        let table: Vec<&str> = source
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("/// | `"))
            .collect();
        let mut documented: Vec<String> = Vec::new();
        for row in &table {
            let first_cell = row
                .trim_start_matches("/// |")
                .split('|')
                .next()
                .unwrap_or("");
            for part in first_cell.split('`').skip(1).step_by(2) {
                if let Some((scheme, _)) = part.split_once("://") {
                    documented.push(scheme.to_owned());
                }
            }
        }
        documented.sort();
        documented.dedup();
        let mut registered: Vec<String> = BACKENDS
            .iter()
            .flat_map(|b| b.schemes.iter().map(|s| (*s).to_owned()))
            .collect();
        registered.sort();
        assert_eq!(
            documented, registered,
            "connect()'s URL table is out of date"
        );
        for backend in BACKENDS {
            assert!(
                table
                    .iter()
                    .any(|row| row.contains(&format!("`{}`", backend.feature))),
                "the table does not name feature {}",
                backend.feature
            );
        }
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn a_scheme_whose_feature_is_off_says_which_feature() {
        let err = connect("redis://127.0.0.1/").await.expect_err("must fail");
        assert!(
            err.to_string()
                .contains("enable the `redis` feature of the `leaselock` crate"),
            "{err}"
        );
    }
}
