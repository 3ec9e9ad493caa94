//! The operator's tool for a stuck lock.

use crate::Target;
use crate::support::{LONG_TTL, acquire, holder};

/// `force_release` frees a held lock; the next holder gets a higher fence; the old holder's
/// heartbeat and release then fail harmlessly.
pub async fn force_release_frees_and_the_next_fence_is_higher(t: Target) {
    let b = t.backend();
    let name = t.name("force");
    let stuck = acquire(b, &name, &holder("stuck"), LONG_TTL).await;
    assert!(
        t.second().force_release(&name).await.unwrap(),
        "a live lease was removed"
    );
    assert!(b.inspect(&name).await.unwrap().is_none());
    let next = acquire(t.second(), &name, &holder("next"), LONG_TTL).await;
    assert!(next.fence > stuck.fence);
    assert!(matches!(
        b.heartbeat(&stuck, LONG_TTL).await,
        Err(lock_core::LockError::LeaseLost { .. })
    ));
    assert!(!b.release(&stuck).await.unwrap());
    assert_eq!(b.inspect(&name).await.unwrap().unwrap().fence, next.fence);
    assert!(b.release(&next).await.unwrap());
}

/// `force_release` of a free name is a harmless `false`.
pub async fn force_release_of_a_free_name_is_false(t: Target) {
    let b = t.backend();
    let name = t.name("force-free");
    assert!(!b.force_release(&name).await.unwrap());
    let l = acquire(b, &name, &holder("a"), LONG_TTL).await;
    assert!(b.release(&l).await.unwrap());
    assert!(!b.force_release(&name).await.unwrap(), "released already");
    let next = acquire(b, &name, &holder("b"), LONG_TTL).await;
    assert!(next.fence > l.fence);
    assert!(b.release(&next).await.unwrap());
}
