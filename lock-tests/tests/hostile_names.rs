//! Hostile and random lock names on every backend: each is a lock of its own, nothing
//! panics, invalid ones are typed errors, and a bystander's lease is never touched.

mod support;

use std::time::Duration;

use leaselock::{Holder, LockBackend, LockError, LockName};
use lock_testkit::Backend;
use proptest::prelude::*;
use support::Store;

const TTL: Duration = Duration::from_secs(30);

fn hostile_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "../../etc/passwd",
        "..",
        ".",
        "/",
        "/abs/path",
        "a/b",
        "a\\b",
        "C:\\Windows",
        "a:b",
        "con",
        " ",
        "\t\n\r",
        "\u{1}\u{7f}\u{1b}[31m",
        "名前",
        "🔒🔑",
        "\u{202e}evil",
        "é",        // NFC
        "e\u{301}", // NFD of the same text
        "JOB",
        "job",
        "job ",
        "%2e%2e%2f",
        "*",
        "?",
        "{tag}",
        "lease:fence",
        "'; DROP TABLE lock_leases; --",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    names.push("x".repeat(256));
    names.push(format!("{}y", "x".repeat(255)));
    names.push("é".repeat(128)); // 256 bytes
    names
}

async fn hostile_names_are_distinct_locks_and_leave_others_alone(store: Store) {
    let backend = store.backend().await;
    let me = Holder::current("hostile");
    let bystander = LockName::new(store.name("bystander")).unwrap();
    let kept = backend
        .try_acquire(&bystander, &me, TTL)
        .await
        .unwrap()
        .unwrap();

    // Every hostile name can be held at once: no two share a record.
    let mut leases = Vec::new();
    for text in hostile_names() {
        let name = LockName::new(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let lease = backend
            .try_acquire(&name, &me, TTL)
            .await
            .unwrap_or_else(|e| panic!("{text:?}: {e}"))
            .unwrap_or_else(|| panic!("{text:?} collided with another name"));
        let info = backend.inspect(&name).await.unwrap().expect("held");
        assert_eq!(info.name.as_str(), text, "inspect names the lock itself");
        assert_eq!(info.fence, lease.fence);
        leases.push(lease);
    }
    for lease in &leases {
        let renewed = backend.heartbeat(lease, TTL).await.unwrap();
        assert_eq!(renewed.fence, lease.fence);
        assert!(backend.release(lease).await.unwrap(), "{}", lease.name);
        assert!(backend.inspect(&lease.name).await.unwrap().is_none());
    }

    // Invalid names are typed errors before any store access.
    for text in ["", "\0", "a\0b", &"x".repeat(257), &"é".repeat(129)] {
        assert!(
            matches!(LockName::new(text), Err(LockError::InvalidName { .. })),
            "{text:?}"
        );
    }

    // The bystander's lease was never touched.
    let info = backend
        .inspect(&bystander)
        .await
        .unwrap()
        .expect("still held");
    assert_eq!(info.fence, kept.fence);
    backend.heartbeat(&kept, TTL).await.unwrap();
    assert!(backend.release(&kept).await.unwrap());
}
per_backend!(
    hostile,
    hostile_names_are_distinct_locks_and_leave_others_alone
);

/// Holding `a` never makes `b` unavailable, for distinct names.
async fn distinct_names_do_not_collide(backend: &dyn LockBackend, a: &str, b: &str) {
    let me = Holder::current("proptest");
    let (a, b) = (LockName::new(a).unwrap(), LockName::new(b).unwrap());
    let la = backend
        .try_acquire(&a, &me, TTL)
        .await
        .unwrap()
        .expect("a is free");
    assert!(
        backend.inspect(&b).await.unwrap().is_none(),
        "{a:?} shows up as {b:?}"
    );
    let lb = backend
        .try_acquire(&b, &me, TTL)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{b:?} collides with {a:?}"));
    assert!(backend.release(&la).await.unwrap());
    assert!(backend.release(&lb).await.unwrap());
}

/// Names of 1 to 256 bytes without NUL, biased towards look-alikes: the same text with
/// different case, a suffix, or different Unicode.
fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[^\u{0}]{1,64}", "[a-zA-Z./\\\\:]{1,8}", "[^\u{0}]{60,64}",]
        .prop_filter("1 to 256 bytes", |s| !s.is_empty() && s.len() <= 256)
}

fn property(kind: Backend) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::new(kind);
    let backend = runtime.block_on(store.backend());
    // Each case uses fresh names under a per-case prefix on Redis, so cases never meet.
    let prefix = store.name("");
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(a in name(), b in name(), upper in any::<bool>())| {
        let b = if upper { a.to_uppercase() } else { b };
        prop_assume!(a != b);
        let (a, b) = if kind.is_shared() {
            (format!("{prefix}{a}"), format!("{prefix}{b}"))
        } else {
            (a, b)
        };
        prop_assume!(a.len() <= 256 && b.len() <= 256);
        runtime.block_on(distinct_names_do_not_collide(backend.as_ref(), &a, &b));
    });
}

#[test]
fn property_file_names_never_collide() {
    property(Backend::File);
}

#[test]
fn property_sqlite_names_never_collide() {
    property(Backend::Sqlite);
}

#[test]
fn property_sqlite_sqlx_names_never_collide() {
    property(Backend::SqliteSqlx);
}

#[test]
fn property_redis_keys_never_collide() {
    property(Backend::Redis);
}

#[test]
fn property_postgres_rows_never_collide() {
    property(Backend::Postgres);
}
