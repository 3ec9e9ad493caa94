//! TTLs, heartbeats, and what an old holder may still do.

use std::time::{Duration, Instant};

use lock_core::{LockError, OwnerToken};

use crate::Target;
use crate::support::{LONG_TTL, SHORT_TTL, SLACK, acquire, assert_held, holder, sleep_until};

fn assert_lost<T: std::fmt::Debug>(result: lock_core::Result<T>, why: &str) {
    match result {
        Err(LockError::LeaseLost { .. }) => {}
        other => panic!("expected LeaseLost ({why}), got {other:?}"),
    }
}

/// A lease is not free before its TTL and is taken over after it.
pub async fn stale_lease_is_taken_over(t: Target) {
    let b = t.backend();
    let name = t.name("stale");
    let ttl = SHORT_TTL * 2;
    let start = Instant::now();
    let old = acquire(b, &name, &holder("old"), ttl).await;
    // Probe late in the TTL, so a store that frees leases early (at half the TTL, say) is
    // caught; the store's expiry is at least `start + ttl`, half the slack after the probe.
    sleep_until(start + ttl - SLACK / 2).await;
    let probed_at = Instant::now();
    assert!(
        probed_at < start + ttl - SLACK / 4,
        "suite could not probe before the TTL ({:?} late): machine overloaded",
        probed_at - (start + ttl - SLACK / 2)
    );
    assert_held(t.second(), &name, "the lease is not free before its TTL").await;
    sleep_until(start + ttl + SLACK / 2).await;
    let new = acquire(t.second(), &name, &holder("new"), LONG_TTL).await;
    assert!(new.fence > old.fence);
    assert!(b.release(&new).await.unwrap());
}

/// A heartbeat moves the expiry: the lease outlives its original TTL.
pub async fn heartbeat_extends_past_the_original_ttl(t: Target) {
    let b = t.backend();
    let name = t.name("extend");
    let start = Instant::now();
    let lease = acquire(b, &name, &holder("beater"), SHORT_TTL).await;
    let renewed = b
        .heartbeat(&lease, SHORT_TTL * 4)
        .await
        .expect("heartbeat inside the TTL");
    assert!(renewed.expires_at > lease.expires_at);
    assert!(renewed.deadline > lease.deadline);
    sleep_until(start + SHORT_TTL + SLACK / 2).await;
    assert_held(
        t.second(),
        &name,
        "the heartbeat extended the lease past its first TTL",
    )
    .await;
    assert!(b.release(&renewed).await.unwrap());
}

/// `heartbeat_many` renews every lease it is given that is still held, answers `LeaseLost`
/// for the others, in the order given, and leaves every lease as one `heartbeat` would.
pub async fn heartbeat_many_renews_each_lease_in_order(t: Target) {
    let b = t.backend();
    let names: Vec<_> = (0..4).map(|i| t.name(&format!("many-{i}"))).collect();
    let start = Instant::now();
    let mut leases = Vec::new();
    for name in &names {
        leases.push(acquire(b, name, &holder("batch"), SHORT_TTL).await);
    }
    // The second was released and the third taken over by a forged token: both lost.
    assert!(b.release(&leases[1]).await.unwrap());
    let mut forged = leases[2].clone();
    forged.holder.token = OwnerToken::random();
    let batch = [
        leases[0].clone(),
        leases[1].clone(),
        forged,
        leases[3].clone(),
    ];
    let answers = b.heartbeat_many(&batch, SHORT_TTL * 4).await;
    assert_eq!(answers.len(), batch.len(), "one answer per lease");
    for (i, answer) in answers.iter().enumerate() {
        match (i, answer) {
            (0 | 3, Ok(renewed)) => {
                assert_eq!(renewed.name, batch[i].name, "answers are in order");
                assert_eq!(renewed.fence, batch[i].fence);
                assert!(renewed.expires_at > batch[i].expires_at);
            }
            (1 | 2, Err(LockError::LeaseLost { name })) => assert_eq!(name, &batch[i].name),
            (_, other) => panic!("lease {i}: unexpected answer {other:?}"),
        }
    }
    sleep_until(start + SHORT_TTL + SLACK / 2).await;
    assert_held(t.second(), &names[0], "heartbeat_many extended it").await;
    assert_held(t.second(), &names[3], "heartbeat_many extended it").await;
    assert!(
        t.second().inspect(&names[2]).await.unwrap().is_none(),
        "a forged renewal must not extend the real lease, which has expired"
    );
    for lease in [&leases[0], &leases[3]] {
        assert!(b.release(lease).await.unwrap());
    }
    assert!(b.heartbeat_many(&[], SHORT_TTL).await.is_empty());
}

/// Only the owner token can heartbeat.
pub async fn heartbeat_by_another_token_is_lease_lost(t: Target) {
    let b = t.backend();
    let name = t.name("hb-token");
    let lease = acquire(b, &name, &holder("owner"), LONG_TTL).await;
    let mut forged = lease.clone();
    forged.holder.token = OwnerToken::random();
    assert_lost(b.heartbeat(&forged, LONG_TTL).await, "forged token");
    assert!(
        !b.release(&forged).await.unwrap(),
        "a forged token cannot release"
    );
    assert_held(b, &name, "forged calls must not disturb the owner").await;
    assert!(b.heartbeat(&lease, LONG_TTL).await.is_ok());
    assert!(b.release(&lease).await.unwrap());
}

/// A heartbeat after the TTL is too late, even if nobody took the lease.
pub async fn heartbeat_after_expiry_is_lease_lost(t: Target) {
    let b = t.backend();
    let name = t.name("hb-expired");
    let lease = acquire(b, &name, &holder("sleepy"), Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(200) + SLACK / 2).await;
    assert_lost(b.heartbeat(&lease, LONG_TTL).await, "expired");
    assert!(
        b.inspect(&name).await.unwrap().is_none(),
        "the late heartbeat must not revive it"
    );
    assert!(!b.release(&lease).await.unwrap());
}

/// After a takeover the old holder's heartbeat fails and changes nothing.
pub async fn heartbeat_after_takeover_is_lease_lost(t: Target) {
    let b = t.backend();
    let name = t.name("hb-takeover");
    let old = acquire(b, &name, &holder("old"), Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(200) + SLACK / 2).await;
    let new = acquire(t.second(), &name, &holder("new"), LONG_TTL).await;
    assert_lost(b.heartbeat(&old, LONG_TTL).await, "taken over");
    let info = b
        .inspect(&name)
        .await
        .unwrap()
        .expect("new holder still holds");
    assert_eq!(info.fence, new.fence);
    assert_eq!(info.label, "new");
    assert!(b.release(&new).await.unwrap());
}

/// The old holder's release after a takeover leaves the new holder alone.
pub async fn release_after_takeover_leaves_the_new_holder_alone(t: Target) {
    let b = t.backend();
    let name = t.name("release-takeover");
    let old = acquire(b, &name, &holder("old"), Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(200) + SLACK / 2).await;
    let new = acquire(t.second(), &name, &holder("new"), LONG_TTL).await;
    assert!(
        !b.release(&old).await.unwrap(),
        "the old lease was already lost"
    );
    assert_held(
        b,
        &name,
        "the old holder's release must not free the new lease",
    )
    .await;
    assert_eq!(b.inspect(&name).await.unwrap().unwrap().fence, new.fence);
    assert!(b.release(&new).await.unwrap());
}

/// Releasing twice is harmless: true, then false.
pub async fn release_is_idempotent(t: Target) {
    let b = t.backend();
    let name = t.name("idempotent");
    let lease = acquire(b, &name, &holder("once"), LONG_TTL).await;
    assert!(b.release(&lease).await.unwrap());
    assert!(!b.release(&lease).await.unwrap());
    assert!(!t.second().release(&lease).await.unwrap());
    let next = acquire(b, &name, &holder("next"), LONG_TTL).await;
    assert!(
        !b.release(&lease).await.unwrap(),
        "a stale release must not free the next lease"
    );
    assert_held(b, &name, "stale release").await;
    assert!(b.release(&next).await.unwrap());
}
