//! `leaselock::connect(url)`: pick a backend by URL scheme among those compiled in.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use lock_core::{LockBackend, LockError, Result};

type Connecting = Pin<Box<dyn Future<Output = Result<Arc<dyn LockBackend>>> + Send>>;

/// A backend this facade knows about, compiled in or not.
struct Driver {
    /// URL schemes it serves.
    schemes: &'static [&'static str],
    /// The cargo feature of the `lock` crate that compiles it in.
    feature: &'static str,
    /// Connects, when compiled in.
    connect: Option<fn(String) -> Connecting>,
}

/// Every backend, in the order schemes are listed in messages.
const DRIVERS: &[Driver] = &[
    Driver {
        schemes: &["sqlite"],
        feature: "sqlite",
        #[cfg(feature = "sqlite")]
        connect: Some(|url| {
            Box::pin(async move { Ok(Arc::new(lock_sqlite::connect(&url).await?) as _) })
        }),
        #[cfg(not(feature = "sqlite"))]
        connect: None,
    },
    Driver {
        schemes: &["sqlite+sqlx"],
        feature: "sqlite-sqlx",
        #[cfg(feature = "sqlite-sqlx")]
        connect: Some(|url| {
            Box::pin(async move {
                Ok(
                    Arc::new(lock_sqlite::SqlxSqliteBackend::connect(&sqlx_to_sqlite(&url)).await?)
                        as _,
                )
            })
        }),
        #[cfg(not(feature = "sqlite-sqlx"))]
        connect: None,
    },
    Driver {
        schemes: &["file"],
        feature: "file",
        #[cfg(feature = "file")]
        connect: Some(|url| {
            Box::pin(async move { Ok(Arc::new(lock_file::connect(&url).await?) as _) })
        }),
        #[cfg(not(feature = "file"))]
        connect: None,
    },
    Driver {
        schemes: &["redis", "rediss", "redis+cluster", "rediss+cluster"],
        feature: "redis",
        #[cfg(feature = "redis")]
        connect: Some(|url| {
            Box::pin(async move { Ok(Arc::new(lock_redis::connect(&url).await?) as _) })
        }),
        #[cfg(not(feature = "redis"))]
        connect: None,
    },
];

/// The URL schemes this build of the crate can connect to.
pub fn supported_schemes() -> Vec<&'static str> {
    DRIVERS
        .iter()
        .filter(|d| d.connect.is_some())
        .flat_map(|d| d.schemes.iter().copied())
        .collect()
}

/// Connects to the lock store at `url`, choosing the backend by scheme:
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `sqlite:///abs/path.db`, `sqlite://rel/path.db` | SQLite (rusqlite) | `sqlite` (default) |
/// | `sqlite+sqlx:///abs/path.db` | SQLite (sqlx driver) | `sqlite-sqlx` |
/// | `file:///abs/dir` | lock directory | `file` (default) |
/// | `redis://[user:pass@]host[:port][/db]`, `rediss://...` | Redis | `redis` |
///
/// Each backend documents its query options.
///
/// # Errors
///
/// [`LockError::Config`] for a URL without a scheme, an unknown scheme, or a scheme whose
/// feature is off in this build (the message lists the schemes this build supports), and
/// whatever the backend reports when connecting.
pub async fn connect(url: &str) -> Result<Arc<dyn LockBackend>> {
    let Some((scheme, _)) = url.split_once(':') else {
        return Err(unsupported(url, "it has no scheme"));
    };
    let scheme = scheme.to_ascii_lowercase();
    let driver = DRIVERS
        .iter()
        .find(|d| d.schemes.contains(&scheme.as_str()));
    match driver {
        Some(Driver {
            connect: Some(connect),
            ..
        }) => connect(url.to_owned()).await,
        Some(driver) => Err(unsupported(
            url,
            &format!(
                "the {scheme}:// backend is not compiled in; enable the `{}` feature of the `lock` crate",
                driver.feature
            ),
        )),
        None => Err(unsupported(
            url,
            &format!("{scheme}:// is not a known lock store"),
        )),
    }
}

fn unsupported(url: &str, why: &str) -> LockError {
    let shown: String = lock_core::redact_url(url).chars().take(80).collect();
    LockError::config(
        "lock",
        format!(
            "cannot use lock store URL \"{shown}\": {why}; this build supports: {}",
            supported_schemes()
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// `sqlite+sqlx://...` names the same database as `sqlite://...`; the driver reads the latter.
#[cfg(feature = "sqlite-sqlx")]
fn sqlx_to_sqlite(url: &str) -> String {
    match url.split_once(':') {
        Some((_, rest)) => format!("sqlite:{rest}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_and_schemeless_urls_name_the_supported_schemes() {
        for url in ["postgres://localhost/db", "no-scheme-here", "ftp://x"] {
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
        let err = connect("postgres://app:s3cret@db/locks")
            .await
            .expect_err("must fail");
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("postgres://***@db/locks"), "{text}");
    }

    #[test]
    fn every_compiled_scheme_is_listed() {
        let schemes = supported_schemes();
        assert_eq!(schemes.contains(&"sqlite"), cfg!(feature = "sqlite"));
        assert_eq!(schemes.contains(&"file"), cfg!(feature = "file"));
        assert_eq!(schemes.contains(&"redis"), cfg!(feature = "redis"));
        assert_eq!(schemes.contains(&"rediss"), cfg!(feature = "redis"));
        assert_eq!(
            schemes.contains(&"sqlite+sqlx"),
            cfg!(feature = "sqlite-sqlx")
        );
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn a_scheme_whose_feature_is_off_says_which_feature() {
        let err = connect("redis://127.0.0.1/").await.expect_err("must fail");
        assert!(err.to_string().contains("`redis` feature"), "{err}");
    }
}
