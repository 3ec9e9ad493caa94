//! Acquire, inspect, release, and what a name means.

use std::time::SystemTime;

use lock_core::LockName;

use crate::Target;
use crate::support::{LONG_TTL, acquire, assert_held, holder};

/// Acquire, inspect, heartbeat, release, and release again.
pub async fn lifecycle(t: Target) {
    let b = t.backend();
    let name = t.name("lifecycle");
    assert!(
        b.inspect(&name).await.unwrap().is_none(),
        "a fresh name is free"
    );
    let me = holder("lifecycle");
    let lease = acquire(b, &name, &me, LONG_TTL).await;
    assert!(lease.fence > 0, "fences start above zero");
    assert!(lease.is_within_deadline());
    let info = b.inspect(&name).await.unwrap().expect("held after acquire");
    assert_eq!(info.fence, lease.fence);
    let renewed = b.heartbeat(&lease, LONG_TTL).await.unwrap();
    assert_eq!(renewed.fence, lease.fence, "a heartbeat keeps the fence");
    assert_eq!(renewed.holder.token, me.token);
    assert!(
        b.release(&renewed).await.unwrap(),
        "release of a held lease is true"
    );
    assert!(
        b.inspect(&name).await.unwrap().is_none(),
        "free after release"
    );
    let again = acquire(b, &name, &holder("next"), LONG_TTL).await;
    assert!(again.fence > lease.fence);
    assert!(b.release(&again).await.unwrap());
}

/// While a lease is live, nobody else gets it, not even the same holder again.
pub async fn second_acquire_fails_while_held(t: Target) {
    let b = t.backend();
    let name = t.name("second-acquire");
    let me = holder("first");
    let lease = acquire(b, &name, &me, LONG_TTL).await;
    assert!(
        b.try_acquire(&name, &holder("second"), LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        t.second()
            .try_acquire(&name, &holder("third"), LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        b.try_acquire(&name, &me, LONG_TTL).await.unwrap().is_none(),
        "acquire is not re-entrant"
    );
    assert_eq!(
        b.inspect(&name).await.unwrap().unwrap().fence,
        lease.fence,
        "the refused attempts changed nothing"
    );
    assert!(b.release(&lease).await.unwrap());
}

/// Holding one name says nothing about another.
pub async fn names_are_independent(t: Target) {
    let b = t.backend();
    let (x, y) = (t.name("independent-x"), t.name("independent-y"));
    let lx = acquire(b, &x, &holder("x"), LONG_TTL).await;
    let ly = acquire(b, &y, &holder("y"), LONG_TTL).await;
    assert!(b.release(&lx).await.unwrap());
    assert_held(b, &y, "releasing x must not free y").await;
    assert!(b.inspect(&x).await.unwrap().is_none());
    assert!(b.release(&ly).await.unwrap());
}

/// Names that differ only in case, Unicode normalization, or in characters a store might
/// escape are different locks.
pub async fn names_differing_in_case_or_encoding_are_distinct(t: Target) {
    let b = t.backend();
    let suffixes = [
        "case-a",
        "case-A",
        "Straße",
        "STRASSE",
        "strasse",
        "caf\u{e9}",   // é precomposed
        "cafe\u{301}", // e + combining acute
        "a b",
        "a_b",
        "a%20b",
        "a-b",
        "a.b",
        "a+b",
        "a~b",
        "x/y",
        "x_y",
        "x%2Fy",
        "x\\y",
    ];
    let mut leases = Vec::new();
    for (i, s) in suffixes.iter().enumerate() {
        let name = t.name(s);
        let who = holder(&format!("holder-{i}"));
        leases.push(acquire(b, &name, &who, LONG_TTL).await);
    }
    for (i, (s, lease)) in suffixes.iter().zip(&leases).enumerate() {
        let info = b
            .inspect(&t.name(s))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{s:?} lost"));
        assert_eq!(
            info.label,
            format!("holder-{i}"),
            "{s:?} shares a slot with another name"
        );
        assert_eq!(info.fence, lease.fence);
        assert_eq!(info.name.as_str(), t.name(s).as_str());
    }
    for lease in &leases {
        assert!(b.release(lease).await.unwrap());
    }
}

/// Path-like, control-character, and maximum-length names work and stay separate.
pub async fn hostile_names_are_safe_and_distinct(t: Target) {
    let b = t.backend();
    let mut raw: Vec<String> = [
        "../../etc/passwd",
        "..",
        ".",
        "/",
        "a/b",
        "a/../b",
        "\\..\\x",
        "nul\u{1}ctl",
        "tab\tnew\nline",
        "\u{202e}rtl",
        "日本語のロック",
        "🦀🔒",
        " ",
        "con",
        "*?<>|:\"",
    ]
    .iter()
    .map(|s| format!("{}{s}", t.prefix()))
    .collect();
    raw.push(t.name_of_len(lock_core::MAX_NAME_LEN, 'z'));
    raw.push(t.name_of_len(lock_core::MAX_NAME_LEN, 'é'));
    raw.push(t.name_of_len(lock_core::MAX_NAME_LEN - 1, 'z'));
    let mut leases = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let name = LockName::new(s).unwrap();
        leases.push(acquire(b, &name, &holder(&format!("h{i}")), LONG_TTL).await);
    }
    for (i, lease) in leases.iter().enumerate() {
        let info = b.inspect(&lease.name).await.unwrap().expect("still held");
        assert_eq!(
            info.label,
            format!("h{i}"),
            "{:?} collided with another name",
            lease.name
        );
        assert_eq!(info.name, lease.name);
    }
    for lease in &leases {
        assert!(b.release(lease).await.unwrap(), "{:?}", lease.name);
    }
}

/// `inspect` shows who holds a lease and until when, but never the owner token.
pub async fn inspect_shows_holder_fence_and_expiry(t: Target) {
    let b = t.backend();
    let name = t.name("inspect");
    let me = holder("inspect-label with spaces/and ünïcode");
    let before = SystemTime::now();
    let lease = acquire(b, &name, &me, LONG_TTL).await;
    let after = SystemTime::now();
    let info = t.second().inspect(&name).await.unwrap().expect("held");
    assert_eq!(info.name, name);
    assert_eq!(info.label, me.label);
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.host, me.host);
    assert_eq!(info.fence, lease.fence);
    let slop = std::time::Duration::from_secs(2);
    assert!(
        info.acquired_at + slop >= before && info.acquired_at <= after + slop,
        "acquired_at {:?}",
        info.acquired_at
    );
    assert!(
        info.expires_at >= before + LONG_TTL - slop && info.expires_at <= after + LONG_TTL + slop
    );
    assert!(
        lease.expires_at >= before + LONG_TTL - slop && lease.expires_at <= after + LONG_TTL + slop
    );
    assert!(info.time_left() > LONG_TTL - slop);
    assert!(
        !format!("{info:?}").contains(&me.token.to_hex()),
        "inspect must not reveal the owner token"
    );
    assert!(b.release(&lease).await.unwrap());
    assert!(b.inspect(&name).await.unwrap().is_none());
}

/// A second client of the same store sees, respects, and can release (with the token) the
/// first client's lease.
pub async fn clients_share_one_store(t: Target) {
    let (a, c) = (t.backend(), t.second());
    let name = t.name("two-clients");
    let lease = acquire(a, &name, &holder("a"), LONG_TTL).await;
    assert_eq!(c.inspect(&name).await.unwrap().unwrap().fence, lease.fence);
    assert!(
        c.try_acquire(&name, &holder("c"), LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    let renewed = c.heartbeat(&lease, LONG_TTL).await.unwrap();
    assert!(
        c.release(&renewed).await.unwrap(),
        "the token, not the client, owns the lease"
    );
    assert!(a.inspect(&name).await.unwrap().is_none());
}

/// `list` shows exactly the live leases under a prefix, sorted by name.
pub async fn list_shows_live_leases_under_a_prefix(t: Target) {
    let b = t.backend();
    if !b.capabilities().list {
        assert!(
            b.list(t.prefix()).await.is_err(),
            "a backend without `list` must say so"
        );
        return;
    }
    let names = [t.name("list/b"), t.name("list/a"), t.name("list/c")];
    let mut leases = Vec::new();
    for n in &names {
        leases.push(acquire(b, n, &holder("lister"), LONG_TTL).await);
    }
    let outside = acquire(b, &t.name("unlisted"), &holder("other"), LONG_TTL).await;
    let prefix = format!("{}list/", t.prefix());
    let listed = b.list(&prefix).await.unwrap();
    let got: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    let mut want: Vec<&str> = names.iter().map(LockName::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(b.release(&leases[1]).await.unwrap());
    let listed = b.list(&prefix).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|i| i.name != names[1]));
    for lease in leases.iter().chain([&outside]) {
        let _ = b.release(lease).await.unwrap();
    }
}
