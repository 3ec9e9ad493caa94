//! URLs, credentials, database index and TLS against private servers.

mod common;

use std::time::{Duration, Instant};

use common::raw;
use lock_core::{Holder, LockBackend, LockError, LockName};
use lock_redis::test_support::{RedisServer, free_port};
use lock_redis::{RedisBackend, URL_SCHEMES};

const LONG: Duration = Duration::from_secs(60);

fn config_detail<T: std::fmt::Debug>(what: &str, result: lock_core::Result<T>) -> String {
    match result {
        Err(LockError::Config { detail, .. }) => detail,
        other => panic!("{what}: expected Config, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_urls_are_config_errors() {
    for url in [
        "",
        "127.0.0.1:6379",
        "http://127.0.0.1:6379",
        "redis://",
        "redis://127.0.0.1:99999",
        "redis://127.0.0.1/db",
        "redis://127.0.0.1?prefix=a{b}",
        "redis://127.0.0.1?unknown=1",
        "redis+cluster://127.0.0.1:1/3",
    ] {
        let start = Instant::now();
        let detail = config_detail(url, lock_redis::connect(url).await);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{url}: not refused at once"
        );
        assert!(!detail.is_empty());
    }
    assert!(URL_SCHEMES.contains(&"redis") && URL_SCHEMES.contains(&"rediss"));
}

#[tokio::test]
async fn password_in_the_url_is_used_and_a_wrong_one_is_a_clear_error() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let port = server.port();
    let good = lock_redis::connect(&format!("redis://:s3cret@127.0.0.1:{port}"))
        .await
        .unwrap();
    let n = LockName::new("auth").unwrap();
    let lease = good
        .try_acquire(&n, &Holder::current("a"), LONG)
        .await
        .unwrap()
        .unwrap();
    assert!(good.release(&lease).await.unwrap());

    let wrong = config_detail(
        "wrong password",
        lock_redis::connect(&format!("redis://:nope@127.0.0.1:{port}")).await,
    );
    assert!(wrong.contains("password"), "{wrong}");
    assert!(!wrong.contains("nope"), "the password leaked: {wrong}");
    let missing = config_detail(
        "no password",
        lock_redis::connect(&format!("redis://127.0.0.1:{port}")).await,
    );
    assert!(missing.contains("password"), "{missing}");
}

#[tokio::test]
async fn acl_user_and_password_in_the_url() {
    let server = RedisServer::start_with(&["--user", "locker", "on", ">pa55", "~*", "&*", "+@all"]);
    let port = server.port();
    let b = lock_redis::connect(&format!("redis://locker:pa55@127.0.0.1:{port}/"))
        .await
        .unwrap();
    let n = LockName::new("acl").unwrap();
    let lease = b
        .try_acquire(&n, &Holder::current("a"), LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.inspect(&n).await.unwrap().unwrap().fence, lease.fence);
    let detail = config_detail(
        "wrong user password",
        lock_redis::connect(&format!("redis://locker:wrong@127.0.0.1:{port}/")).await,
    );
    assert!(detail.contains("password"), "{detail}");
}

#[tokio::test]
async fn the_database_index_is_honoured() {
    let server = RedisServer::start();
    let b = lock_redis::connect(&format!("{}/5?prefix=dbtest:", server.url()))
        .await
        .unwrap();
    let n = LockName::new("in-db-5").unwrap();
    let _lease = b
        .try_acquire(&n, &Holder::current("a"), LONG)
        .await
        .unwrap()
        .unwrap();
    let (lease_key, fence_key) = b.keys_of(&n);
    let mut db5 = raw(&format!("{}/5", server.url())).await;
    let mut db0 = raw(&server.url()).await;
    let in5: u64 = redis::cmd("EXISTS")
        .arg(&lease_key)
        .arg(&fence_key)
        .query_async(&mut db5)
        .await
        .unwrap();
    let in0: u64 = redis::cmd("EXISTS")
        .arg(&lease_key)
        .arg(&fence_key)
        .query_async(&mut db0)
        .await
        .unwrap();
    assert_eq!((in5, in0), (2, 0));
    let other_db = lock_redis::connect(&format!("{}/6?prefix=dbtest:", server.url()))
        .await
        .unwrap();
    assert!(other_db.inspect(&n).await.unwrap().is_none());
}

#[tokio::test]
async fn query_options_are_applied() {
    let server = RedisServer::start();
    let b = lock_redis::connect(&format!(
        "{}?prefix=from-url:&timeout_ms=1234",
        server.url()
    ))
    .await
    .unwrap();
    assert_eq!(b.key_prefix(), "from-url:");
    assert_eq!(b.options().operation_timeout, Duration::from_millis(1234));
    let n = LockName::new("x").unwrap();
    assert!(b.keys_of(&n).0.starts_with("from-url:{"));
}

#[tokio::test]
async fn tls_to_a_plain_server_is_a_clear_config_error() {
    let server = RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let start = Instant::now();
    let result = lock_redis::connect(&url).await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    let detail = config_detail("rediss to a plain server", result);
    assert!(
        detail.contains("TLS") && detail.contains("redis://"),
        "{detail}"
    );
}

#[tokio::test]
async fn connect_accepts_every_advertised_scheme() {
    let server = RedisServer::start();
    let port = server.port();
    let b = RedisBackend::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap();
    assert!(!b.is_cluster());
    for scheme in URL_SCHEMES {
        let result = lock_redis::connect(&format!("{scheme}://127.0.0.1:1")).await;
        assert!(
            !matches!(result, Err(LockError::Config { ref detail, .. }) if detail.contains("unknown scheme")),
            "{scheme}: {result:?}"
        );
    }
}

#[tokio::test]
async fn tls_to_a_tls_server_works() {
    // A self-signed certificate; `#insecure` skips its verification.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("this test needs the openssl command (apt-get install openssl): {e}")
        });
    assert!(made.success(), "openssl could not make a certificate");
    let tls_port = free_port().to_string();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &cert,
        "--tls-auth-clients",
        "no",
    ]);
    let b = lock_redis::connect(&format!("rediss://127.0.0.1:{tls_port}/#insecure"))
        .await
        .unwrap();
    let n = LockName::new("over-tls").unwrap();
    let lease = b
        .try_acquire(&n, &Holder::current("tls"), LONG)
        .await
        .unwrap()
        .unwrap();
    // The plain port of the same server sees the lease the TLS client took.
    let plain = lock_redis::connect(&server.url()).await.unwrap();
    assert_eq!(plain.inspect(&n).await.unwrap().unwrap().fence, lease.fence);
    assert!(b.release(&lease).await.unwrap());
    // Without `#insecure` the self-signed certificate is refused.
    let refused = lock_redis::connect(&format!("rediss://127.0.0.1:{tls_port}/")).await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");
}
