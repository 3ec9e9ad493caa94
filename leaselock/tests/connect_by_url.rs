//! `leaselock::connect` reaches a working backend for every scheme compiled into this build.

use leaselock::LockError;

#[cfg(any(feature = "sqlite", feature = "file", feature = "redis"))]
/// Connects to `url` and takes, contends and releases a lock through the returned backend.
async fn lock_cycle(url: &str) {
    use leaselock::{LockOptions, Locker};
    use std::time::Duration;

    let locker = Locker::new(
        leaselock::connect(url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}")),
    );
    let opts = LockOptions::default().with_ttl(Duration::from_secs(10));
    let name = format!("facade-{}", std::process::id());
    let guard = locker
        .try_lock(name.as_str(), &opts)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .expect("a fresh store has the lock free");
    assert!(
        locker
            .try_lock(name.as_str(), &opts)
            .await
            .unwrap()
            .is_none(),
        "{url}: held means held"
    );
    assert!(guard.release().await.unwrap(), "{url}: release frees it");
    let again = locker.try_lock(name.as_str(), &opts).await.unwrap();
    assert!(again.is_some(), "{url}: free again after release");
    again.unwrap().release().await.unwrap();
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_absolute_url() {
    let dir = tempfile::tempdir().unwrap();
    lock_cycle(&format!("sqlite://{}/locks.db", dir.path().display())).await;
    assert!(dir.path().join("locks.db").exists());
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_relative_url_is_relative_to_the_working_directory() {
    // A temporary directory under TMPDIR, named relative to the working directory by
    // going up to the root: nothing is written into the source tree.
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    let ups = cwd
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    let relative = std::iter::repeat_n("..", ups)
        .collect::<std::path::PathBuf>()
        .join(dir.path().strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let url = format!("sqlite://{}/locks.db", relative.display());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(lock_cycle(&url));
    assert!(dir.path().join("locks.db").exists(), "{url}");
}

#[cfg(feature = "sqlite-sqlx")]
#[tokio::test]
async fn sqlite_sqlx_url() {
    let dir = tempfile::tempdir().unwrap();
    lock_cycle(&format!("sqlite+sqlx://{}/locks.db", dir.path().display())).await;
    assert!(dir.path().join("locks.db").exists());
}

#[cfg(feature = "file")]
#[tokio::test]
async fn file_url() {
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().join("locks");
    lock_cycle(&format!("file://{}", locks.display())).await;
    assert!(locks.is_dir(), "the lock directory is created");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_url() {
    let redis = lock_testkit::redis::TestRedis::from_env_or_start();
    lock_cycle(&redis.url()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_urls() {
    let server = lock_testkit::postgres::shared();
    let schema = lock_testkit::postgres::unique_schema("facade");
    // Both schemes, the same store.
    let url = server.url();
    lock_cycle(&format!("{url}?schema={schema}")).await;
    let url = url.replacen("postgres://", "postgresql://", 1);
    lock_cycle(&format!("{url}?schema={schema}")).await;
}

/// `rediss://` reaches the Redis backend's TLS client: against a plain-text port that
/// nothing listens on, the answer is the store being unavailable, not an unknown scheme.
#[cfg(feature = "redis")]
#[tokio::test]
async fn rediss_url_reaches_the_redis_backend() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // free again once the listener is dropped here
    let err = leaselock::connect(&format!("rediss://127.0.0.1:{port}/"))
        .await
        .expect_err("nothing listens there");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("redis"), "{err}");
}

#[tokio::test]
async fn a_bad_url_is_a_config_error_naming_the_supported_schemes() {
    let err = leaselock::connect("mysql://localhost/locks")
        .await
        .expect_err("no such backend");
    assert!(matches!(err, LockError::Config { .. }), "{err:?}");
    let text = err.to_string();
    for scheme in leaselock::supported_schemes() {
        assert!(text.contains(scheme), "{text}");
    }
}
