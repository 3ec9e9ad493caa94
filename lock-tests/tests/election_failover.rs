//! Leader election across processes on every backend: the leader process is SIGKILLed while
//! this process campaigns; this process leads, with a higher fence, within the TTL plus 1 s
//! on a store shared across hosts (the dead leader's lease must expire), and at once on a
//! single-host store (the kernel tells that the leader died). Each test prints one
//! `reliability ...` summary line with the measured failover.

mod support;

use std::time::{Duration, Instant};

use leaselock::{Election, LockOptions, Locker};
use support::{Report, Store};

/// The leader's TTL: a failover by expiry takes at most this after the kill.
const TTL: Duration = Duration::from_secs(2);
/// What a failover by expiry may take beyond the TTL (the bound).
const BEYOND_TTL: Duration = Duration::from_secs(1);
/// A failover on a single-host store, which does not wait for the TTL.
const AT_ONCE: Duration = Duration::from_millis(500);
const PATIENCE: Duration = Duration::from_secs(20);

async fn a_killed_leader_is_followed(store: Store) {
    let name = store.name("election");
    let mut leader = store.worker("lead", &name, TTL, "leader", &[]);
    let leader_fence = leader.expect("leading", PATIENCE).await[0];
    let opts = LockOptions::default().with_ttl(TTL).with_label("follower");
    let election = Election::new(Locker::new(store.backend().await), name.as_str(), opts).unwrap();
    let seen = election.leader().await.unwrap().expect("a leader");
    assert_eq!(
        (seen.label.as_str(), seen.fence),
        ("leader", leader_fence),
        "{seen:?}"
    );
    let campaign = tokio::spawn(async move {
        let leadership = election.campaign().await;
        (leadership, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !campaign.is_finished(),
        "the follower waits while the leader leads"
    );
    leader.signal(libc::SIGKILL);
    let killed_at = Instant::now();
    let (leadership, led_at) = campaign.await.unwrap();
    let leadership = leadership.expect("the follower leads");
    let failover = led_at.saturating_duration_since(killed_at);
    assert!(
        leadership.fence() > leader_fence,
        "fence {} after {leader_fence}",
        leadership.fence()
    );
    let bound = if store.kind.is_single_host() {
        AT_ONCE
    } else {
        TTL + BEYOND_TTL
    };
    assert!(
        failover <= bound,
        "the follower led {failover:?} after the leader was killed (bound {bound:?})"
    );
    assert_eq!(leader.exit_code(PATIENCE).await, None, "killed by a signal");
    assert!(leadership.resign().await.unwrap());
    Report::new("election-failover", store.kind)
        .field("processes", 2)
        .field("faults", 1)
        .field("ttl_ms", TTL.as_millis())
        .field("failover_ms", failover.as_millis())
        .emit();
}
per_backend!(failover, a_killed_leader_is_followed);
