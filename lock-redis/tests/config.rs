//! URLs, credentials, database index and TLS against private servers.

mod common;

use std::time::{Duration, Instant};

use common::{command_calls, function_libraries, raw, reset_stats};
use lock_core::{Holder, LockBackend, LockError, LockName};
use lock_redis::{RedisBackend, URL_SCHEMES};
use lock_testkit::process::free_port;
use lock_testkit::redis::RedisServer;

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
    let b = lock_redis::connect(&format!("{}?prefix=from-url:&timeout=1234ms", server.url()))
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
    // Without `#insecure` the self-signed certificate is refused, as a configuration
    // problem (retrying will not help) that says what to change.
    let detail = config_detail(
        "an untrusted certificate",
        lock_redis::connect(&format!("rediss://127.0.0.1:{tls_port}/")).await,
    );
    assert!(
        detail.contains("TLS certificate") && detail.contains("#insecure"),
        "{detail}"
    );
}

/// Everything logged through `tracing` while it is the thread's default subscriber.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let logs = self.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread, so the subscriber set for this thread sees everything connect() logs.
#[tokio::test(flavor = "current_thread")]
async fn a_server_that_may_evict_live_leases_is_warned_about() {
    let evicting = RedisServer::start_with(&["--maxmemory-policy", "volatile-lru"]);
    let safe = RedisServer::start();
    let logs = Logs::default();
    let _logging = tracing::subscriber::set_default(logs.subscriber());
    lock_redis::connect(&safe.url()).await.unwrap();
    assert!(!logs.text().contains("maxmemory-policy"), "{}", logs.text());
    lock_redis::connect(&evicting.url()).await.unwrap();
    let text = logs.text();
    assert!(
        text.contains("WARN") && text.contains("volatile-lru") && text.contains("noeviction"),
        "{text}"
    );
}

/// The ACL rule an error message tells the operator to grant (the text after
/// `ACL SETUSER <user> `, up to the closing backquote).
fn suggested_acl_rule(detail: &str) -> String {
    let start = detail
        .find("ACL SETUSER <user> ")
        .unwrap_or_else(|| panic!("no ACL rule suggested: {detail}"))
        + "ACL SETUSER <user> ".len();
    let len = detail[start..].find('`').expect("closing backquote");
    detail[start..start + len].to_owned()
}

/// The detail of a `Config` error that tells the operator which ACL rule to grant.
fn acl_refused<T: std::fmt::Debug>(what: &str, result: lock_core::Result<T>) -> String {
    let detail = config_detail(what, result);
    assert!(detail.contains("ACL SETUSER"), "{what}: {detail}");
    detail
}

/// Asserts an `Unavailable` error that says the server is a replica, and to use the
/// primary or a Sentinel URL.
fn read_only_refused<T: std::fmt::Debug>(what: &str, result: lock_core::Result<T>) {
    match result {
        Err(error @ LockError::Unavailable { .. }) => {
            let text = error.to_string();
            assert!(
                text.contains("read-only replica")
                    && text.contains("primary")
                    && text.contains("redis+sentinel://"),
                "{what}: {text}"
            );
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

/// Lowercase hex of a name, as in its keys.
fn hex(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `ACL SETUSER limited` with `rules`, on a server we administer as the default user.
async fn set_user(admin: &mut redis::aio::MultiplexedConnection, rules: &[&str]) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER")
        .arg("limited")
        .arg("reset")
        .arg("on")
        .arg(">pw");
    for rule in rules {
        cmd.arg(*rule);
    }
    cmd.exec_async(admin).await.unwrap();
}

#[tokio::test]
async fn a_user_missing_acl_permissions_gets_a_config_error_with_the_rule_to_grant() {
    let server = RedisServer::start();
    let mut admin = raw(&server.url()).await;
    let url = format!(
        "redis://limited:pw@127.0.0.1:{}/?prefix=app:",
        server.port()
    );
    let n = LockName::new("acl").unwrap();
    let holder = Holder::current("acl");

    // No script commands at all: refused by the server before any script runs.
    set_user(
        &mut admin,
        &["~*", "&*", "+@all", "-fcall", "-evalsha", "-eval"],
    )
    .await;
    let b = lock_redis::connect(&url).await.unwrap();
    acl_refused(
        "acquire without FCALL and EVALSHA",
        b.try_acquire(&n, &holder, LONG).await,
    );
    // Not transient: a Locker gives up at once instead of retrying for its whole wait.
    let locker = lock_core::Locker::new(std::sync::Arc::new(b));
    let opts = lock_core::LockOptions::default().with_wait(Duration::from_secs(10));
    let start = Instant::now();
    let error = locker.lock("acl", &opts).await.unwrap_err();
    assert!(matches!(error, LockError::Config { .. }), "{error:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "retried a refusal"
    );

    // Keys outside the user's patterns: refused for the script's keys.
    set_user(&mut admin, &["~other:*", "&*", "+@all"]).await;
    let b = lock_redis::connect(&url).await.unwrap();
    acl_refused(
        "acquire outside the key pattern",
        b.try_acquire(&n, &holder, LONG).await,
    );

    // A command the acquire script runs inside (refused with ERR, not NOPERM): nothing is
    // written, and the error still names the rule.
    set_user(&mut admin, &["~*", "&*", "+@all", "-set"]).await;
    let b = lock_redis::connect(&url).await.unwrap();
    let detail = acl_refused(
        "acquire without SET",
        b.try_acquire(&n, &holder, LONG).await,
    );
    assert!(
        b.inspect(&n).await.unwrap().is_none(),
        "no half-written lease"
    );

    // Everything but the channels (Redis 7 users get no channels by default): the lease
    // can be taken, kept and released while nobody waits (a release publishes only to a
    // waiting client). With a waiter queued, the hand-off is refused and leaves the lease
    // held and the waiter queued, rather than a release that half happened.
    set_user(&mut admin, &["~*", "+@all"]).await;
    let b = lock_redis::connect(&url).await.unwrap();
    let lease = b.try_acquire(&n, &holder, LONG).await.unwrap().unwrap();
    let lease = b.heartbeat(&lease, LONG).await.unwrap();
    assert!(
        b.release(&lease).await.unwrap(),
        "nobody waits: no publication"
    );
    let lease = b.try_acquire(&n, &holder, LONG).await.unwrap().unwrap();
    let waiter = lock_redis::connect(&format!("{}/?prefix=app:", server.url()))
        .await
        .unwrap();
    let since = lock_core::backend_kit::time::monotonic_now();
    assert!(
        waiter
            .try_acquire(&n, &Holder::current("waiter"), LONG)
            .await
            .unwrap()
            .is_none()
    );
    waiter
        .wait_for_change(&n, since, Duration::from_millis(1))
        .await;
    acl_refused("release without the channel", b.release(&lease).await);
    assert_eq!(b.inspect(&n).await.unwrap().unwrap().fence, lease.fence);
    let queued: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("app:{{{}}}:queue", hex("acl")))
        .arg(0)
        .arg(-1)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "the waiter is still queued: {queued:?}");

    // Commands the scripts run through redis.pcall (to tell foreign data from a lease):
    // a refusal is passed on, never taken for a lost lease or corrupt data.
    set_user(&mut admin, &["~*", "&*", "+@all", "-get"]).await;
    let b = lock_redis::connect(&url).await.unwrap();
    acl_refused("heartbeat without GET", b.heartbeat(&lease, LONG).await);
    acl_refused("release without GET", b.release(&lease).await);
    let other = LockName::new("acl-other").unwrap();
    acl_refused(
        "acquire without GET",
        b.try_acquire(&other, &holder, LONG).await,
    );
    assert_eq!(
        waiter.inspect(&n).await.unwrap().unwrap().fence,
        lease.fence
    );

    // Granting exactly the suggested rule makes every operation work, the release
    // subscription included.
    let rule = suggested_acl_rule(&detail);
    let rules: Vec<&str> = rule.split_whitespace().collect();
    set_user(&mut admin, &rules).await;
    let b = lock_redis::connect(&url).await.unwrap();
    let lease = b.heartbeat(&lease, LONG).await.unwrap();
    assert!(b.release(&lease).await.unwrap());
    // The release handed the lock to the waiter queued above: nobody else gets it first.
    assert!(b.try_acquire(&n, &holder, LONG).await.unwrap().is_none());
    let handed = waiter
        .try_acquire(&n, &Holder::current("waiter"), LONG)
        .await
        .unwrap()
        .expect("handed to the queued waiter");
    assert!(waiter.release(&handed).await.unwrap());
    let lease = b.try_acquire(&n, &holder, LONG).await.unwrap().unwrap();
    assert_eq!(b.list("").await.unwrap().len(), 1);
    assert!(b.force_release(&n).await.unwrap());
    assert!(b.release(&lease).await.is_ok_and(|freed| !freed));
    b.wait_for_change(
        &n,
        lock_core::backend_kit::time::monotonic_now(),
        Duration::from_millis(1),
    )
    .await;
    let start = Instant::now();
    while !b.is_subscribed() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the granted user could not subscribe to releases"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `PTTL` of `key`: -2 when it does not exist, -1 when it has no expiry.
async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn a_refused_expiry_leaves_no_lease_without_a_ttl() {
    let server = RedisServer::start();
    let mut admin = raw(&server.url()).await;
    let url = format!(
        "redis://limited:pw@127.0.0.1:{}/?prefix=app:",
        server.port()
    );
    let holder = Holder::current("acl");
    let ttl = Duration::from_secs(30);
    let (a, b, n) = (
        LockName::new("held-a").unwrap(),
        LockName::new("held-b").unwrap(),
        LockName::new("never-expiring").unwrap(),
    );
    // The default user may do everything; `limited` may not set expiries.
    let allowed = lock_redis::connect(&format!("{}/?prefix=app:", server.url()))
        .await
        .unwrap();
    let held = [
        allowed
            .try_acquire(&a, &holder, ttl)
            .await
            .unwrap()
            .unwrap(),
        allowed
            .try_acquire(&b, &holder, ttl)
            .await
            .unwrap()
            .unwrap(),
    ];

    set_user(&mut admin, &["~*", "&*", "+@all", "-pexpire"]).await;
    let refused = lock_redis::connect(&url).await.unwrap();
    // A lock's lease is written with its expiry in one command (SET .. NX PX): it cannot
    // exist without a TTL, so it needs no PEXPIRE.
    let lock = refused
        .try_acquire(&n, &holder, ttl)
        .await
        .unwrap()
        .unwrap();
    let (lease_key, _) = refused.keys_of(&n);
    let left = pttl(&mut admin, &lease_key).await;
    assert!(left > 0 && left <= 30_000, "PTTL {left}");
    assert!(refused.release(&lock).await.unwrap());
    // A semaphore's permits hash gets its expiry by PEXPIRE: the refused expiry undoes the
    // permit, so nothing is left that would hold a slot for ever.
    let s = LockName::new("never-expiring-permits").unwrap();
    acl_refused(
        "permit without PEXPIRE",
        refused.try_acquire_permit(&s, &holder, ttl, 3).await,
    );
    let (permits_key, _) = refused.keys_of(&s);
    assert_eq!(
        pttl(&mut admin, &permits_key).await,
        -2,
        "a permit was left behind"
    );
    // Heartbeats (one, and a batch in one script call) are refused without touching the
    // leases: they keep the expiry they had.
    acl_refused(
        "heartbeat without PEXPIRE",
        refused.heartbeat(&held[0], LONG).await,
    );
    let batch = refused.heartbeat_many(&held, LONG).await;
    assert_eq!(batch.len(), 2);
    for result in batch {
        acl_refused("heartbeat_many without PEXPIRE", result);
    }
    for lease in &held {
        let left = pttl(&mut admin, &refused.keys_of(&lease.name).0).await;
        assert!(
            left > 0 && left <= 30_000,
            "{}: PTTL {left} after refused heartbeats",
            lease.name
        );
    }
    // A user that may set expiries finds the name free.
    let lease = allowed
        .try_acquire(&n, &holder, ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(pttl(&mut admin, &lease_key).await > 0);
    assert!(allowed.release(&lease).await.unwrap());
}

#[tokio::test]
async fn a_read_only_replica_is_unavailable_and_says_to_use_the_primary_or_sentinel() {
    let primary = RedisServer::start();
    let port = primary.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    let on_primary = lock_redis::connect(&primary.url()).await.unwrap();
    let on_replica = lock_redis::connect(&replica.url()).await.unwrap();
    let n = LockName::new("replicated").unwrap();
    let lease = on_primary
        .try_acquire(&n, &Holder::current("primary"), LONG)
        .await
        .unwrap()
        .unwrap();

    let other = LockName::new("other").unwrap();
    read_only_refused(
        "acquire",
        on_replica
            .try_acquire(&other, &Holder::current("r"), LONG)
            .await,
    );
    read_only_refused(
        "permit",
        on_replica
            .try_acquire_permit(&other, &Holder::current("r"), LONG, 2)
            .await,
    );
    // Once the lease has reached the replica, the holder's own writes are refused there
    // too (reads still work).
    let start = Instant::now();
    while on_replica.inspect(&n).await.unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never replicated"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    read_only_refused("heartbeat", on_replica.heartbeat(&lease, LONG).await);
    read_only_refused("release", on_replica.release(&lease).await);
    read_only_refused("force_release", on_replica.force_release(&n).await);
    // Transient (a failover may make this server the primary): a Locker keeps trying for
    // its wait, then reports why.
    let locker = lock_core::Locker::new(std::sync::Arc::new(on_replica));
    let opts = lock_core::LockOptions::default().with_wait(Duration::from_millis(500));
    let error = locker.lock("third", &opts).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(error.to_string().contains("read-only replica"), "{error}");
    // The primary still has the lease, untouched.
    assert!(on_primary.release(&lease).await.unwrap());
}

/// Takes, renews and releases a lease of `n` on `b`, and checks that a second client waits
/// for it and is handed it.
async fn every_operation_works(b: &RedisBackend, waiter: &RedisBackend, n: &LockName) {
    let holder = Holder::current("ops");
    let lease = b.try_acquire(n, &holder, LONG).await.unwrap().unwrap();
    let lease = b.heartbeat(&lease, LONG).await.unwrap();
    assert!(
        waiter
            .try_acquire(n, &holder, LONG)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(b.inspect(n).await.unwrap().unwrap().fence, lease.fence);
    assert!(b.release(&lease).await.unwrap());
    let handed = waiter.try_acquire(n, &holder, LONG).await.unwrap().unwrap();
    assert!(handed.fence > lease.fence);
    assert!(waiter.force_release(n).await.unwrap());
}

#[tokio::test]
async fn a_user_who_may_not_run_functions_gets_the_same_locks_from_scripts() {
    let server = RedisServer::start();
    let mut admin = raw(&server.url()).await;
    let url = format!("redis://limited:pw@127.0.0.1:{}/", server.port());
    let n = LockName::new("no-functions").unwrap();

    // A user who may not load the library, on a server that lacks it; then one who may not
    // call functions at all: the scripts do everything, and nothing is loaded.
    for refused in ["-function", "-fcall"] {
        set_user(&mut admin, &["~*", "&*", "+@all", refused]).await;
        let b = lock_redis::connect(&url).await.unwrap();
        let waiter = lock_redis::connect(&url).await.unwrap();
        reset_stats(&mut admin).await;
        every_operation_works(&b, &waiter, &n).await;
        let scripts =
            command_calls(&mut admin, "evalsha").await + command_calls(&mut admin, "eval").await;
        // At least one per operation: four by the holder, three by the waiter.
        assert!(scripts >= 7, "{refused}: {scripts} script calls");
        // At most each client's first call, which finds no function (or is refused).
        let fcalls = command_calls(&mut admin, "fcall").await;
        assert!(fcalls <= 2, "{refused}: {fcalls} FCALLs");
        assert!(function_libraries(&mut admin).await.is_empty(), "{refused}");
    }

    // Once the library is there (loaded by another client), a user who may call functions
    // but not load them calls them.
    let loader = lock_redis::connect(&server.url()).await.unwrap();
    let waiter = lock_redis::connect(&server.url()).await.unwrap();
    every_operation_works(&loader, &waiter, &n).await;
    assert_eq!(function_libraries(&mut admin).await.len(), 1);
    set_user(&mut admin, &["~*", "&*", "+@all", "-function"]).await;
    let b = lock_redis::connect(&url).await.unwrap();
    reset_stats(&mut admin).await;
    every_operation_works(&b, &waiter, &n).await;
    assert!(command_calls(&mut admin, "fcall").await >= 7);
    assert_eq!(command_calls(&mut admin, "evalsha").await, 0);
    assert_eq!(command_calls(&mut admin, "eval").await, 0);
}

#[tokio::test]
async fn a_server_without_functions_gets_the_same_locks_from_scripts() {
    // Redis before 7.0 has neither command: it answers "unknown command", as here.
    let server = RedisServer::start_with(&[
        "--rename-command",
        "FCALL",
        "",
        "--rename-command",
        "FUNCTION",
        "",
    ]);
    let mut admin = raw(&server.url()).await;
    let b = lock_redis::connect(&server.url()).await.unwrap();
    let waiter = lock_redis::connect(&server.url()).await.unwrap();
    reset_stats(&mut admin).await;
    every_operation_works(&b, &waiter, &LockName::new("old-server").unwrap()).await;
    let scripts =
        command_calls(&mut admin, "evalsha").await + command_calls(&mut admin, "eval").await;
    assert!(scripts >= 7, "{scripts} script calls");
}
