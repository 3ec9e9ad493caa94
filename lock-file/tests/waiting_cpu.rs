//! Waiting sleeps in the kernel: a waiter for a held lease uses (almost) no CPU. (Polling
//! the lease file every 1-2 ms, as it did before, costs about 25 ms of CPU a second in a
//! debug build; sleeping on inotify, about 1 ms in all.)
#![cfg(target_os = "linux")]

mod support;

use std::time::Duration;

use lock_core::LockBackend;
use lock_core::backend_kit::time::monotonic_now;
use lock_file::{FileBackend, FileOptions};
use support::{acquire, name};

/// CPU time used by the calling thread so far.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: initialised by the successful call (and zeroed before).
    let usage = unsafe { usage.assume_init() };
    let micros = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap())
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap())
    };
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

#[tokio::test(flavor = "current_thread")]
async fn waiting_for_a_held_lease_costs_no_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::connect_with(FileOptions::new(dir.path()))
        .await
        .unwrap();
    let n = name("idle");
    let _lease = acquire(&backend, &n, "holder").await;
    let before = thread_cpu();
    backend
        .wait_for_change(&n, monotonic_now(), Duration::from_secs(2))
        .await;
    let used = thread_cpu() - before;
    // Polling every 1-2 ms would take a thousand looks or more.
    assert!(
        used < Duration::from_millis(15),
        "{used:?} of CPU in a 2 s wait"
    );
}
