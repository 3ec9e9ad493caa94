//! Semaphores: up to `limit` live leases of one name, each a lease of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use lock_core::{LockError, LockOptions, Locker};
use tokio::sync::Barrier;

use crate::Target;
use crate::support::{LONG_TTL, SLACK, holder};

/// Takes a permit of `limit`, panicking with context unless one is granted.
async fn permit(
    backend: &Arc<dyn lock_core::LockBackend>,
    name: &lock_core::LockName,
    label: &str,
    ttl: Duration,
    limit: u32,
) -> lock_core::Lease {
    match backend
        .try_acquire_permit(name, &holder(label), ttl, limit)
        .await
    {
        Ok(Some(lease)) => lease,
        Ok(None) => panic!("{name:?} should have a free permit of {limit} for {label}"),
        Err(e) => panic!("taking a permit of {limit} on {name:?} failed: {e}"),
    }
}

/// 50 tasks share a semaphore of 3 through `Locker::with_lock`: never more than 3 run at
/// once, more than one does (it is not a lock), and every task runs.
pub async fn semaphore_never_exceeds_its_limit_among_50_tasks(t: Target) {
    const TASKS: usize = 50;
    const LIMIT: u32 = 3;
    let name = t.name("semaphore-50");
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(10))
        .with_wait(Duration::from_secs(60))
        .with_limit(LIMIT)
        .with_backoff(Duration::from_millis(1), Duration::from_millis(20));
    let tasks = (0..TASKS).map(|i| {
        let locker = Locker::new(Arc::clone(t.client(i)));
        let (name, running, most, done, opts) = (
            name.clone(),
            Arc::clone(&running),
            Arc::clone(&most),
            Arc::clone(&done),
            opts.clone(),
        );
        tokio::spawn(async move {
            locker
                .with_lock(name, &opts, async {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                })
                .await
        })
    });
    for result in join_all(tasks).await {
        result
            .expect("task panicked")
            .expect("with_lock on the semaphore failed");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= LIMIT as usize,
        "{most} holders at once on a semaphore of {LIMIT}"
    );
    assert!(
        most >= 2,
        "a semaphore of {LIMIT} let only {most} task in at a time"
    );
    assert_eq!(done.load(Ordering::SeqCst), TASKS);
}

/// With 2 of 3 permits held, 20 contenders race for the last one: exactly one wins, and
/// the permits each have their own fence.
pub async fn one_winner_for_the_last_free_permit(t: Target) {
    const LIMIT: u32 = 3;
    const CONTENDERS: usize = 20;
    let name = t.name("last-permit");
    let a = permit(t.backend(), &name, "a", LONG_TTL, LIMIT).await;
    let b = permit(t.second(), &name, "b", LONG_TTL, LIMIT).await;
    assert_ne!(a.fence, b.fence, "each permit has its own fence");
    let barrier = Arc::new(Barrier::new(CONTENDERS));
    let attempts = (0..CONTENDERS).map(|i| {
        let (backend, name, barrier) =
            (Arc::clone(t.client(i)), name.clone(), Arc::clone(&barrier));
        tokio::spawn(async move {
            barrier.wait().await;
            backend
                .try_acquire_permit(&name, &holder(&format!("c{i}")), LONG_TTL, LIMIT)
                .await
        })
    });
    let mut winners = Vec::new();
    for result in join_all(attempts).await {
        if let Some(lease) = result.expect("task panicked").expect("acquire failed") {
            winners.push(lease);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "{} winners of the last permit",
        winners.len()
    );
    assert!(
        t.backend()
            .try_acquire_permit(&name, &holder("late"), LONG_TTL, LIMIT)
            .await
            .unwrap()
            .is_none(),
        "all permits are taken"
    );
    for lease in [a, b, winners.remove(0)] {
        assert!(t.backend().release(&lease).await.unwrap());
    }
}

/// A permit that is not heartbeated expires and frees its slot, and only its own: the
/// other permit stays live, and the expired one's heartbeat is `LeaseLost`.
pub async fn an_expired_permit_frees_its_slot(t: Target) {
    let name = t.name("expired-permit");
    let short = Duration::from_millis(300);
    let stays = permit(t.backend(), &name, "stays", LONG_TTL, 2).await;
    let expires = permit(t.second(), &name, "expires", short, 2).await;
    let early = t
        .backend()
        .try_acquire_permit(&name, &holder("early"), LONG_TTL, 2)
        .await
        .unwrap();
    // "Both permits are live" holds only while the short permit surely is: its holder's own
    // conservative deadline had not passed when the answer came back. On a loaded machine
    // the answer may come later, when the store may rightly have let the permit expire.
    if std::time::Instant::now() < expires.deadline {
        assert!(early.is_none(), "both permits are live");
    } else if let Some(early) = early {
        assert!(t.backend().release(&early).await.unwrap());
    }
    tokio::time::sleep(short + SLACK).await;
    let newcomer = permit(t.backend(), &name, "newcomer", LONG_TTL, 2).await;
    assert!(newcomer.fence > expires.fence && newcomer.fence > stays.fence);
    match t.second().heartbeat(&expires, LONG_TTL).await {
        Err(LockError::LeaseLost { .. }) => {}
        other => panic!("heartbeat of an expired permit: {other:?}"),
    }
    let renewed = t
        .backend()
        .heartbeat(&stays, LONG_TTL)
        .await
        .expect("the live permit renews");
    assert_eq!(renewed.fence, stays.fence);
    assert!(t.backend().release(&renewed).await.unwrap());
    assert!(t.backend().release(&newcomer).await.unwrap());
}

/// Fences strictly increase across every grant of a name, whichever permit it is, through
/// releases, expiry and force-release.
pub async fn fences_rise_across_permits(t: Target) {
    let name = t.name("permit-fences");
    let mut fences = Vec::new();
    let mut held = Vec::new();
    for i in 0..4 {
        let lease = permit(t.client(i), &name, &format!("p{i}"), LONG_TTL, 4).await;
        fences.push(lease.fence);
        held.push(lease);
    }
    assert!(t.backend().release(&held.remove(1)).await.unwrap());
    let lease = permit(t.second(), &name, "refill", LONG_TTL, 4).await;
    fences.push(lease.fence);
    held.push(lease);
    assert!(t.backend().force_release(&name).await.unwrap());
    for i in 0..2 {
        let lease = permit(t.client(i), &name, &format!("after-force{i}"), LONG_TTL, 4).await;
        fences.push(lease.fence);
        assert!(t.backend().release(&lease).await.unwrap());
    }
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences must strictly increase across permits: {fences:?}"
    );
    for lease in held {
        assert!(
            !t.backend().release(&lease).await.unwrap(),
            "force_release freed every permit"
        );
    }
}

/// A name is used with one limit at a time: another limit, including a plain lock's 1, is
/// a `Config` error naming both limits, and nothing is taken. Once every permit is free,
/// another limit may be used.
pub async fn a_different_limit_is_refused_naming_both(t: Target) {
    let name = t.name("limit-mismatch");
    let lease = permit(t.backend(), &name, "two", LONG_TTL, 2).await;
    for (asked, how) in [(3, "permit"), (1, "permit"), (1, "try_acquire")] {
        let result = if how == "try_acquire" {
            t.second()
                .try_acquire(&name, &holder("one"), LONG_TTL)
                .await
        } else {
            t.second()
                .try_acquire_permit(&name, &holder("other"), LONG_TTL, asked)
                .await
        };
        match result {
            Err(e @ LockError::Config { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("limit of 2") && text.contains(&format!("limit of {asked}")),
                    "{how} with limit {asked}: {text}"
                );
            }
            other => panic!("{how} with limit {asked} on a semaphore of 2: {other:?}"),
        }
    }
    let infos = t.backend().inspect_all(&name).await.unwrap();
    assert_eq!(infos.len(), 1, "nothing was taken: {infos:?}");
    assert!(t.backend().release(&lease).await.unwrap());
    let lock = permit(t.second(), &name, "now-a-lock", LONG_TTL, 1).await;
    assert!(lock.fence > lease.fence);
    assert!(t.second().release(&lock).await.unwrap());
}

/// A limit of 1 is exactly a lock: a permit of 1 excludes `try_acquire` and the other way
/// round, and both give the same kind of lease.
pub async fn limit_one_behaves_as_a_lock(t: Target) {
    let name = t.name("limit-one");
    let lease = permit(t.backend(), &name, "permit", LONG_TTL, 1).await;
    assert!(
        t.second()
            .try_acquire(&name, &holder("plain"), LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    let info = t.second().inspect(&name).await.unwrap().expect("held");
    assert_eq!((info.fence, info.limit), (lease.fence, 1));
    assert!(t.backend().release(&lease).await.unwrap());
    let plain = t
        .second()
        .try_acquire(&name, &holder("plain"), LONG_TTL)
        .await
        .unwrap()
        .expect("free after release");
    assert!(
        t.backend()
            .try_acquire_permit(&name, &holder("permit"), LONG_TTL, 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(t.second().release(&plain).await.unwrap());
}

/// `inspect_all` and `list` show every live permit (with its holder, fence and limit),
/// `inspect` one of them; a released permit disappears from all three.
pub async fn inspect_all_and_list_show_every_permit(t: Target) {
    let name = t.name("show-permits");
    let mut leases = Vec::new();
    for i in 0..3 {
        leases.push(permit(t.client(i), &name, &format!("holder-{i}"), LONG_TTL, 3).await);
    }
    let infos = t.second().inspect_all(&name).await.unwrap();
    let fences: Vec<u64> = infos.iter().map(|i| i.fence).collect();
    let mut expected: Vec<u64> = leases.iter().map(|l| l.fence).collect();
    expected.sort_unstable();
    assert_eq!(fences, expected, "inspect_all, by fence");
    for info in &infos {
        assert_eq!(info.limit, 3);
        assert!(info.label.starts_with("holder-"), "{info:?}");
    }
    let one = t.second().inspect(&name).await.unwrap().expect("held");
    assert!(fences.contains(&one.fence));
    if t.backend().capabilities().list {
        let listed: Vec<u64> = t
            .backend()
            .list(name.as_str())
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.name == name)
            .map(|i| i.fence)
            .collect();
        assert_eq!(listed, expected, "list shows every permit, by fence");
    }
    assert!(t.backend().release(&leases.remove(0)).await.unwrap());
    assert_eq!(t.second().inspect_all(&name).await.unwrap().len(), 2);
    for lease in leases {
        assert!(t.backend().release(&lease).await.unwrap());
    }
    assert!(t.second().inspect_all(&name).await.unwrap().is_empty());
    assert!(t.second().inspect(&name).await.unwrap().is_none());
}
