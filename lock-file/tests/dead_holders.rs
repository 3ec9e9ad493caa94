//! Single-host liveness: a lease whose holder's process is gone (its hold file's `flock` is
//! free) is taken over at once by the next contender, with a higher fence; a live or
//! doubtful holder keeps its lease until its TTL; waiters sleep until something changes.
//!
//! A dead process is played by a hold file this test makes and locks itself, named in the
//! lease record in place of the real holder's: dropping the file (closing it) is what the
//! kernel does when a holder's process dies.

mod support;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lock_core::backend_kit::time::monotonic_now;
use lock_core::{Holder, Lease, LockBackend, LockError, LockName, LockOptions, Locker};
use lock_file::{FileBackend, FileOptions};
use support::{LONG_TTL, acquire, name};

async fn open(dir: &Path) -> FileBackend {
    FileBackend::connect_with(FileOptions::new(dir).with_create_if_missing(false))
        .await
        .unwrap()
}

fn record(backend: &FileBackend, n: &LockName) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(backend.lease_file(n)).unwrap()).unwrap()
}

/// A hold file of a process that is not this one: locked while the returned file is open
/// (and the lock not dropped).
struct FakeHold {
    path: PathBuf,
    file: File,
}

impl FakeHold {
    fn new(backend: &FileBackend) -> Self {
        std::fs::create_dir_all(backend.holds_dir()).unwrap();
        let file_name = format!("{:032x}.hold", rand_u128());
        let path = backend.holds_dir().join(file_name);
        let file = File::create(&path).unwrap();
        file.try_lock().expect("a new file's lock is free");
        Self { path, file }
    }

    /// The stamp a record of `owner`'s lease stores for this hold.
    fn stamp(&self, lease: &Lease) -> String {
        let meta = self.file.metadata().unwrap();
        let token = lease.holder.token.as_u128();
        #[allow(clippy::cast_possible_truncation)]
        let tag = (token as u64) ^ ((token >> 64) as u64);
        format!(
            "{}:{}:{}:{tag:016x}",
            self.path.file_name().unwrap().to_str().unwrap(),
            meta.dev(),
            meta.ino()
        )
    }
}

fn rand_u128() -> u128 {
    lock_core::OwnerToken::random().as_u128()
}

/// Rewrites the lease file so that its holder with `lease`'s token names `stamp` as its
/// hold, as a record written by another process would (under the file's lock).
fn restamp(backend: &FileBackend, lease: &Lease, stamp: Option<&str>) {
    let path = backend.lease_file(&lease.name);
    let mut value = record(backend, &lease.name);
    let holders = value["holders"].as_array_mut().unwrap();
    let held = holders
        .iter_mut()
        .find(|h| h["token"] == lease.holder.token.to_hex())
        .expect("the lease's holder is in the file");
    let held = held.as_object_mut().unwrap();
    match stamp {
        Some(stamp) => held.insert("hold".to_owned(), stamp.into()),
        None => held.remove("hold"),
    };
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    fs4::FileExt::lock(&file).unwrap();
    file.set_len(0).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, value.to_string().as_bytes(), 0).unwrap();
}

#[tokio::test]
async fn a_record_names_its_holders_hold_and_one_without_a_hold_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path()).await;
    let n = name("stamped");
    let lease = acquire(&backend, &n, "stamped").await;
    let on_disk = record(&backend, &n);
    assert_eq!(on_disk["version"], 2, "{on_disk}");
    let stamp = on_disk["holders"][0]["hold"].as_str().expect("a stamp");
    let hold_file = stamp.split(':').next().unwrap();
    let holds: Vec<_> = std::fs::read_dir(backend.holds_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(holds, [hold_file], "this process's one hold file");
    // A renewal keeps the stamp.
    let lease = backend.heartbeat(&lease, LONG_TTL).await.unwrap();
    assert_eq!(record(&backend, &n)["holders"][0]["hold"], stamp);

    // As an older build of format 2 writes it: no `hold`. Read, honoured and renewed.
    restamp(&backend, &lease, None);
    assert!(backend.inspect(&n).await.unwrap().is_some());
    let other = Holder::current("other");
    assert!(
        backend
            .try_acquire(&n, &other, LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    let lease = backend.heartbeat(&lease, LONG_TTL).await.unwrap();
    assert!(record(&backend, &n)["holders"][0].get("hold").is_none());
    assert!(backend.release(&lease).await.unwrap());
}

#[tokio::test]
async fn a_dead_holders_lease_is_taken_over_at_once_with_a_higher_fence() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path()).await;
    let n = name("dead");
    let dead = acquire(&backend, &n, "dead").await;
    let hold = FakeHold::new(&backend);
    restamp(&backend, &dead, Some(&hold.stamp(&dead)));

    // Its process lives (the hold is locked): the TTL decides.
    let next = Holder::current("next");
    assert!(
        backend
            .try_acquire(&n, &next, LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    assert!(hold.path.exists());

    // Its process dies: the next contender takes over at once.
    let FakeHold { path, file } = hold;
    drop(file);
    let taken = backend
        .try_acquire(&n, &next, LONG_TTL)
        .await
        .unwrap()
        .expect("the dead holder's lease is taken over");
    assert!(taken.fence > dead.fence, "{} > {}", taken.fence, dead.fence);
    assert!(!path.exists(), "the dead holder's hold file is deleted");
    let info = backend.inspect(&n).await.unwrap().unwrap();
    assert_eq!((info.label.as_str(), info.fence), ("next", taken.fence));
    assert!(matches!(
        backend.heartbeat(&dead, LONG_TTL).await,
        Err(LockError::LeaseLost { .. })
    ));
    assert!(backend.release(&taken).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_racing_contenders_exactly_one_takes_a_dead_holders_lease() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        // Two clients of one directory, as two processes would be.
        let (a, b) = (open(dir.path()).await, open(dir.path()).await);
        let n = name(&format!("race-{round}"));
        let dead = acquire(&a, &n, "dead").await;
        let hold = FakeHold::new(&a);
        restamp(&a, &dead, Some(&hold.stamp(&dead)));
        drop(hold.file);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let contend = |backend: FileBackend, label: &'static str| {
            let (n, barrier) = (n.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                backend
                    .try_acquire(&n, &Holder::current(label), LONG_TTL)
                    .await
                    .unwrap()
            })
        };
        let (first, second) = (contend(a.clone(), "a"), contend(b, "b"));
        let won: Vec<Lease> = [first.await.unwrap(), second.await.unwrap()]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        assert!(won[0].fence > dead.fence);
        assert_eq!(a.inspect_all(&n).await.unwrap().len(), 1);
        assert!(!hold.path.exists());
    }
}

#[tokio::test]
async fn a_replaced_hold_file_is_doubt_and_the_ttl_decides() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path()).await;
    let n = name("replaced");
    let ttl = Duration::from_millis(400);
    let held = backend
        .try_acquire(&n, &Holder::current("held"), ttl)
        .await
        .unwrap()
        .unwrap();
    let acquired = Instant::now();
    let hold = FakeHold::new(&backend);
    restamp(&backend, &held, Some(&hold.stamp(&held)));
    // Its lock dropped, but the file deleted and another put at its path (the original
    // stays open, so the new one cannot get its inode): not the file the stamp names.
    hold.file.unlock().unwrap();
    std::fs::remove_file(&hold.path).unwrap();
    std::fs::write(&hold.path, b"").unwrap();
    let next = Holder::current("next");
    assert!(
        backend
            .try_acquire(&n, &next, LONG_TTL)
            .await
            .unwrap()
            .is_none(),
        "never taken over on doubt"
    );
    // Nor when the stamp names a file that is not there, or belongs to another owner.
    std::fs::remove_file(&hold.path).unwrap();
    assert!(
        backend
            .try_acquire(&n, &next, LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    if acquired.elapsed() < ttl {
        assert!(backend.inspect(&n).await.unwrap().is_some(), "still live");
    }
    tokio::time::sleep_until((acquired + ttl + Duration::from_millis(50)).into()).await;
    let taken = backend
        .try_acquire(&n, &next, LONG_TTL)
        .await
        .unwrap()
        .expect("expired");
    assert!(taken.fence > held.fence);
}

#[tokio::test]
async fn another_owners_stamp_is_doubt() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path()).await;
    let n = name("foreign-stamp");
    let held = acquire(&backend, &n, "held").await;
    let hold = FakeHold::new(&backend);
    // The stamp of another lease's owner, left behind in this holder's entry.
    let other = acquire(&backend, &name("elsewhere"), "other").await;
    restamp(&backend, &held, Some(&hold.stamp(&other)));
    drop(hold.file);
    assert!(
        backend
            .try_acquire(&n, &Holder::current("next"), LONG_TTL)
            .await
            .unwrap()
            .is_none()
    );
    assert!(hold.path.exists(), "left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_permit_of_a_full_semaphore_is_taken_over_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let backend = open(dir.path()).await;
    let n = name("builds");
    let permit = |label: &'static str| {
        let (backend, n) = (backend.clone(), n.clone());
        async move {
            backend
                .try_acquire_permit(&n, &Holder::current(label), LONG_TTL, 2)
                .await
                .unwrap()
        }
    };
    let alive = permit("alive").await.unwrap();
    let dead = permit("dead").await.unwrap();
    let hold = FakeHold::new(&backend);
    restamp(&backend, &dead, Some(&hold.stamp(&dead)));
    assert!(permit("next").await.is_none(), "full, both alive");
    drop(hold.file);
    let taken = permit("next").await.expect("the dead permit is taken over");
    assert!(taken.fence > dead.fence);
    let labels: Vec<_> = backend
        .inspect_all(&n)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.label)
        .collect();
    assert_eq!(labels, ["alive", "next"]);
    assert!(backend.heartbeat(&alive, LONG_TTL).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_at_a_release_by_another_client_within_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path()).await, open(dir.path()).await);
    let n = name("handover");
    let lease = acquire(&a, &n, "holder").await;
    let waiter = {
        let n = n.clone();
        tokio::spawn(async move {
            b.wait_for_change(&n, monotonic_now(), Duration::from_secs(30))
                .await;
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "nothing changed yet");
    let released = Instant::now();
    assert!(a.release(&lease).await.unwrap());
    let woke = waiter.await.unwrap();
    let after = woke.saturating_duration_since(released);
    assert!(after < Duration::from_millis(100), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_when_another_process_rewrites_the_file() {
    // Another process's release does not pass through this process's release log: only
    // the lease file tells.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path()).await, open(dir.path()).await);
    let n = name("foreign-release");
    let lease = acquire(&a, &n, "holder").await;
    let waiter = {
        let n = n.clone();
        tokio::spawn(async move {
            b.wait_for_change(&n, monotonic_now(), Duration::from_secs(30))
                .await;
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "nothing changed yet");
    let mut value = record(&a, &n);
    value["holders"] = serde_json::json!([]);
    value.as_object_mut().unwrap().remove("boot");
    let released = Instant::now();
    std::fs::write(a.lease_file(&n), value.to_string()).unwrap();
    let woke = waiter.await.unwrap();
    let after = woke.saturating_duration_since(released);
    assert!(after < Duration::from_millis(100), "{after:?}");
    assert!(!a.release(&lease).await.unwrap(), "already freed");
}

/// A heartbeat rewrites the lease file, which wakes a waiter straight into its next attempt
/// (no look in between: see `PeekFile::events_are_changes`): it wakes at the renewal, not
/// before, and a `Locker` waiting through renewals gets the lease only once it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_at_a_heartbeat_and_a_renewed_lease_stays_held_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path()).await, Arc::new(open(dir.path()).await));
    let n = name("renewed");
    let ttl = Duration::from_millis(500);
    let lease = a
        .try_acquire(&n, &Holder::current("holder"), ttl)
        .await
        .unwrap()
        .unwrap();
    let waiter = {
        let (b, n) = (b.clone(), n.clone());
        tokio::spawn(async move {
            b.wait_for_change(&n, monotonic_now(), Duration::from_secs(30))
                .await;
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let renewing = Instant::now();
    let lease = a.heartbeat(&lease, ttl).await.unwrap();
    let woke = waiter.await.unwrap();
    assert!(woke >= renewing, "woke before anything changed");
    assert!(
        woke < renewing + Duration::from_millis(250),
        "woke {:?} after the renewal",
        woke - renewing
    );
    // A waiting Locker: renewed twice more, the lease stays held until it expires.
    let locker = Locker::new(b);
    let opts = LockOptions::default()
        .with_ttl(LONG_TTL)
        .with_wait(Duration::from_secs(10))
        .with_label("next");
    let next = tokio::spawn(async move {
        let guard = locker.lock(&n, &opts).await.unwrap();
        (Instant::now(), guard)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let lease = a.heartbeat(&lease, ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    a.heartbeat(&lease, ttl).await.unwrap();
    let renewed = Instant::now();
    let (acquired, guard) = next.await.unwrap();
    assert!(
        acquired >= renewed + ttl - Duration::from_millis(20),
        "acquired {:?} after the last renewal, before its expiry",
        acquired.saturating_duration_since(renewed)
    );
    assert!(
        acquired < renewed + ttl + Duration::from_secs(2),
        "acquired {:?} after the last renewal",
        acquired - renewed
    );
    assert!(guard.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_wakes_when_the_holders_process_dies_and_lock_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(open(dir.path()).await);
    let n = name("dies");
    let dead = acquire(&*backend, &n, "dead").await;
    let hold = FakeHold::new(&backend);
    restamp(&backend, &dead, Some(&hold.stamp(&dead)));
    let locker = Locker::new(backend.clone());
    let opts = LockOptions::default()
        .with_ttl(LONG_TTL)
        .with_wait(Duration::from_secs(30))
        .with_label("next");
    let waiter = {
        let n = n.clone();
        tokio::spawn(async move {
            let guard = locker.lock(n, &opts).await.unwrap();
            (Instant::now(), guard.fence())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the holder lives");
    let died = Instant::now();
    drop(hold.file);
    let (got, fence) = waiter.await.unwrap();
    let after = got.saturating_duration_since(died);
    assert!(
        after < Duration::from_millis(500),
        "{after:?}, not the 60 s TTL"
    );
    assert!(fence > dead.fence);
    assert!(!hold.path.exists());
}
