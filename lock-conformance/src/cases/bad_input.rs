//! Bad input: typed errors, never a panic, never a lost or false lease.

use std::time::Duration;

use lock_core::backend_kit::time::monotonic_now;
use lock_core::{
    Holder, Lease, LockError, LockName, LockOptions, MAX_NAME_LEN, MAX_TTL, MIN_TTL, OwnerToken,
};

use crate::Target;
use crate::support::{LONG_TTL, SHORT_TTL, acquire, assert_held, holder};

fn assert_invalid_ttl<T: std::fmt::Debug>(result: lock_core::Result<T>, ttl: Duration) {
    match result {
        Err(LockError::InvalidTtl { ttl: got, .. }) => assert_eq!(got, ttl),
        other => panic!("ttl {ttl:?}: expected InvalidTtl, got {other:?}"),
    }
}

/// Zero, too short, and absurd TTLs are refused by acquire and heartbeat, and a refused
/// heartbeat leaves the lease as it was.
pub async fn bad_ttls_are_refused_without_touching_the_lease(t: Target) {
    let b = t.backend();
    let name = t.name("bad-ttl");
    let bad = [
        Duration::ZERO,
        Duration::from_nanos(1),
        MIN_TTL - Duration::from_nanos(1),
        MAX_TTL + Duration::from_millis(1),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ];
    for ttl in bad {
        assert_invalid_ttl(b.try_acquire(&name, &holder("bad"), ttl).await, ttl);
    }
    assert!(
        b.inspect(&name).await.unwrap().is_none(),
        "a refused acquire must not create a lease"
    );
    let lease = acquire(b, &name, &holder("good"), LONG_TTL).await;
    for ttl in bad {
        assert_invalid_ttl(b.heartbeat(&lease, ttl).await, ttl);
    }
    let info = b.inspect(&name).await.unwrap().expect("still held");
    assert_eq!(info.fence, lease.fence);
    assert!(
        info.time_left() > LONG_TTL / 2,
        "a refused heartbeat must not shorten the lease"
    );
    assert!(b.heartbeat(&lease, LONG_TTL).await.is_ok());
    assert!(b.release(&lease).await.unwrap());
}

/// The boundary TTLs themselves are legal.
pub async fn boundary_ttls_are_accepted(t: Target) {
    let b = t.backend();
    let name = t.name("edge-ttl");
    let longest = acquire(b, &name, &holder("max"), MAX_TTL).await;
    let renewed = b.heartbeat(&longest, MAX_TTL).await.unwrap();
    assert!(b.release(&renewed).await.unwrap());
    let shortest = acquire(b, &name, &holder("min"), MIN_TTL).await;
    tokio::time::sleep(MIN_TTL * 20).await;
    let next = acquire(b, &name, &holder("after-min"), LONG_TTL).await;
    assert!(next.fence > shortest.fence);
    assert!(b.release(&next).await.unwrap());
}

/// Empty, over-long and NUL-containing names are refused with `InvalidName`, through the
/// name type and through the `Locker`.
pub async fn invalid_names_are_refused(t: Target) {
    let too_long = t.name_of_len(MAX_NAME_LEN + 1, 'n');
    let with_nul = format!("{}a\0b", t.prefix());
    for bad in [String::new(), too_long, with_nul] {
        assert!(
            matches!(LockName::new(&bad), Err(LockError::InvalidName { .. })),
            "{bad:?}"
        );
        let result = t
            .locker()
            .try_lock(bad.as_str(), LockOptions::default())
            .await;
        assert!(
            matches!(result, Err(LockError::InvalidName { .. })),
            "{bad:?}: {result:?}"
        );
    }
}

/// Absurd durations never panic: a wait of `Duration::MAX` (for "forever"), backoff bounds
/// of `Duration::MAX`; options that cannot work (a heartbeat too slow for its TTL, a zero
/// backoff) are refused with a typed error before the store is touched.
pub async fn absurd_durations_are_refused_or_saturate(t: Target) {
    let b = t.backend();
    let name = t.name("absurd-wait");
    let held = acquire(t.second(), &name, &holder("holder"), LONG_TTL).await;
    let now = monotonic_now();
    let long_ago = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
    for since in [now, long_ago] {
        let wait = b.wait_for_change(&name, since, Duration::MAX);
        // Returns when notified, or runs on: either way, no panic.
        let _ = tokio::time::timeout(Duration::from_millis(50), wait).await;
    }
    let locker = t.locker();
    let far = LockOptions::default()
        .with_ttl(LONG_TTL)
        .with_backoff(Duration::from_millis(1), Duration::MAX)
        .with_wait(Duration::from_millis(300));
    assert!(matches!(
        locker.lock(&name, &far).await,
        Err(LockError::Timeout { .. })
    ));
    let huge = LockOptions::default()
        .with_ttl(LONG_TTL)
        .with_backoff(Duration::MAX, Duration::MAX)
        .with_wait(Duration::from_millis(300));
    assert!(matches!(
        locker.lock(&name, &huge).await,
        Err(LockError::Timeout { .. })
    ));
    assert!(t.second().release(&held).await.unwrap());
    let forever = LockOptions::default()
        .with_ttl(LONG_TTL)
        .with_wait(Duration::MAX);
    let guard = locker.lock(&name, &forever).await.expect("a free lock");
    assert!(guard.release().await.unwrap());

    for bad in [
        LockOptions::default()
            .with_ttl(SHORT_TTL)
            .with_heartbeat_interval(SHORT_TTL),
        LockOptions::default().with_heartbeat_interval(Duration::ZERO),
        LockOptions::default().with_heartbeat_interval(Duration::MAX),
    ] {
        let result = locker.try_lock(&name, &bad).await;
        assert!(
            matches!(result, Err(LockError::InvalidTtl { .. })),
            "{bad:?}: {result:?}"
        );
    }
    let spinning = LockOptions::default().with_backoff(Duration::ZERO, Duration::ZERO);
    let result = locker.lock(&name, &spinning).await;
    assert!(
        matches!(result, Err(LockError::Config { .. })),
        "{result:?}"
    );
    assert!(
        b.inspect(&name).await.unwrap().is_none(),
        "refused options must not take the lock"
    );
}

/// Leases that were never issued by the store (forged token, unknown name) are refused and
/// disturb nothing.
pub async fn forged_leases_are_refused(t: Target) {
    let b = t.backend();
    let name = t.name("forged");
    let real = acquire(b, &name, &holder("real"), LONG_TTL).await;
    let never = Lease::new(
        t.name("never-acquired"),
        Holder::new(OwnerToken::random(), "ghost", 1, "nowhere"),
        real.fence,
        real.expires_at,
        real.deadline - LONG_TTL / 2,
        LONG_TTL,
    );
    assert!(matches!(
        b.heartbeat(&never, LONG_TTL).await,
        Err(LockError::LeaseLost { .. })
    ));
    assert!(!b.release(&never).await.unwrap());
    assert!(
        b.inspect(&never.name).await.unwrap().is_none(),
        "a forged heartbeat must not create a lease"
    );
    let same_name = Lease {
        name: name.clone(),
        ..never
    };
    assert!(matches!(
        b.heartbeat(&same_name, LONG_TTL).await,
        Err(LockError::LeaseLost { .. })
    ));
    assert!(!b.release(&same_name).await.unwrap());
    assert_held(b, &name, "forged calls must not free the real lease").await;
    assert!(b.release(&real).await.unwrap());
}
