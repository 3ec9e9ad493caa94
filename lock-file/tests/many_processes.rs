//! Mutual exclusion between OS processes: this test binary runs itself as several child
//! processes that all increment one counter file under the same lock.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lock_core::{LockOptions, Locker};
use lock_file::{FileBackend, FileOptions};

/// Set in child processes: the lock directory to work in.
const CHILD_DIR: &str = "LOCK_FILE_TEST_CHILD_DIR";
const PROCESSES: usize = 4;
const INCREMENTS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_exclusion_across_processes() {
    match std::env::var_os(CHILD_DIR) {
        Some(dir) => increment_under_the_lock(Path::new(&dir)).await,
        None => run_children().await,
    }
}

/// Parent: starts the children and checks what they left behind.
async fn run_children() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "mutual_exclusion_across_processes",
                    "--nocapture",
                ])
                .env(CHILD_DIR, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a child process")
        })
        .collect();
    for child in children {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "a child process failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let counter: u64 = std::fs::read_to_string(dir.path().join("counter"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(counter, PROCESSES as u64 * INCREMENTS, "lost updates");
    let fences: Vec<u64> = std::fs::read_to_string(dir.path().join("fences"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(fences.len(), PROCESSES * INCREMENTS as usize);
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences not increasing in lock order"
    );
}

/// Child: non-atomic read-modify-write of the counter file, under the lock.
async fn increment_under_the_lock(dir: &Path) {
    let locker = Locker::new(Arc::new(
        FileBackend::connect_with(FileOptions::new(dir).with_create_if_missing(false))
            .await
            .unwrap(),
    ));
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(10))
        .with_wait(Duration::from_secs(120))
        .with_backoff(Duration::from_millis(1), Duration::from_millis(10));
    let counter = dir.join("counter");
    let fences = dir.join("fences");
    for _ in 0..INCREMENTS {
        let guard = locker.lock("counter", &opts).await.expect("lock");
        let seen: u64 = std::fs::read_to_string(&counter)
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0);
        tokio::task::yield_now().await; // invite a racer in, if the lock let one
        std::fs::write(&counter, format!("{}\n", seen + 1)).unwrap();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&fences)
            .unwrap();
        std::io::Write::write_all(&mut log, format!("{}\n", guard.fence()).as_bytes()).unwrap();
        assert!(
            guard.release().await.expect("release"),
            "lease lost mid-increment"
        );
    }
}
