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

/// A store that loses its latest writes (a rollback to a checkpoint taken after fence f1,
/// once f2 and f3 were granted) still never reissues a fence: the next one is above f3,
/// because each grant gives `max(counter + 1, store clock in microseconds)`.
///
/// Needs the target's [`WriteLoss`](crate::WriteLoss) hook; every backend's own test target
/// has one (`lockctl conformance` against a live store reports this case as not
/// applicable).
pub async fn fences_rise_after_the_store_loses_writes(t: Target) {
    let Some(loss) = t.write_loss() else {
        panic!(
            "target {} has no write-loss hook: give it one with Target::with_write_loss \
             (only runners against live stores may leave this case out)",
            t.label()
        );
    };
    let b = t.backend();
    let name = t.name("lost-writes");
    let f1 = acquire(b, &name, &holder("f1"), LONG_TTL).await;
    assert!(b.release(&f1).await.unwrap());
    loss.checkpoint().await;
    let f2 = acquire(t.second(), &name, &holder("f2"), LONG_TTL).await;
    assert!(t.second().release(&f2).await.unwrap());
    let f3 = acquire(b, &name, &holder("f3"), LONG_TTL).await;
    // f3 is still held when the store loses it: the lease is gone with the lost writes.
    loss.roll_back().await;
    let f4 = acquire(t.second(), &name, &holder("f4"), LONG_TTL).await;
    assert!(
        f4.fence > f3.fence && f3.fence > f2.fence && f2.fence > f1.fence,
        "a fence was reissued after the store lost writes: f1 {}, f2 {}, f3 {}, then {}",
        f1.fence,
        f2.fence,
        f3.fence,
        f4.fence
    );
    assert!(t.second().release(&f4).await.unwrap());
}
