//! Fencing tokens: strictly increasing across every way a lease can change hands.

use std::time::Duration;

use crate::Target;
use crate::support::{LONG_TTL, SLACK, acquire, holder};

/// Fences strictly increase through release, expiry, takeover and force-release.
pub async fn fence_increases_across_every_handover(t: Target) {
    let b = t.backend();
    let name = t.name("fence");
    let short = Duration::from_millis(200);
    let mut fences = Vec::new();

    // acquire -> release
    let l = acquire(b, &name, &holder("released"), LONG_TTL).await;
    fences.push(l.fence);
    assert!(b.release(&l).await.unwrap());
    // acquire -> expire (nobody takes it)
    let l = acquire(b, &name, &holder("expired"), short).await;
    fences.push(l.fence);
    tokio::time::sleep(short + SLACK / 2).await;
    // acquire over an expired lease -> expire -> takeover by another client
    let l = acquire(t.second(), &name, &holder("after-expiry"), short).await;
    fences.push(l.fence);
    tokio::time::sleep(short + SLACK / 2).await;
    let l = acquire(b, &name, &holder("takeover"), LONG_TTL).await;
    fences.push(l.fence);
    // force-release -> acquire
    assert!(t.second().force_release(&name).await.unwrap());
    let l = acquire(b, &name, &holder("after-force"), LONG_TTL).await;
    fences.push(l.fence);
    assert!(b.release(&l).await.unwrap());
    // release -> acquire again
    let l = acquire(t.second(), &name, &holder("last"), LONG_TTL).await;
    fences.push(l.fence);
    assert!(t.second().release(&l).await.unwrap());

    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences must strictly increase: {fences:?}"
    );
}

/// A name's fence is its own: activity on other names never makes it go backwards, and a
/// heartbeat never changes it.
pub async fn fences_are_per_name_monotonic(t: Target) {
    let b = t.backend();
    let (x, y) = (t.name("fence-x"), t.name("fence-y"));
    let mut last_x = 0;
    for round in 0..5 {
        let lx = acquire(b, &x, &holder("x"), LONG_TTL).await;
        let ly = acquire(t.second(), &y, &holder("y"), LONG_TTL).await;
        assert!(
            lx.fence > last_x,
            "round {round}: {} after {last_x}",
            lx.fence
        );
        last_x = lx.fence;
        let beat = b.heartbeat(&lx, LONG_TTL).await.unwrap();
        assert_eq!(beat.fence, lx.fence);
        assert!(b.release(&lx).await.unwrap());
        assert!(t.second().release(&ly).await.unwrap());
    }
}
