//! The test harness itself: private servers never outlive their test, whether it passes,
//! panics, or its whole process crashes.

use std::process::Command;
use std::time::{Duration, Instant};

use lock_redis::test_support::{RedisServer, is_process_alive};

/// Set in the child process of `a_crashed_test_process_leaves_no_server`.
const CHILD_ENV: &str = "LOCK_REDIS_HARNESS_CRASH_CHILD";

fn until_gone(pid: u32, why: &str) {
    let start = Instant::now();
    while is_process_alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "redis-server {pid} outlived {why}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn kill_restart_and_drop_leave_no_process() {
    let mut server = RedisServer::start();
    let first = server.pid().unwrap();
    assert!(server.is_running());
    server.restart();
    let second = server.pid().unwrap();
    assert_ne!(first, second);
    until_gone(first, "its restart");
    server.pause();
    server.kill(); // a paused server dies too
    assert!(!server.is_running());
    until_gone(second, "kill()");
    server.restart();
    let third = server.pid().unwrap();
    drop(server);
    until_gone(third, "drop");
}

#[test]
fn a_panicking_test_still_stops_its_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let server = RedisServer::start();
        tx.send(server.pid().unwrap()).unwrap();
        panic!("a test fails while its server runs");
    })
    .join();
    assert!(outcome.is_err());
    until_gone(rx.recv().unwrap(), "a panicking test");
}

#[test]
fn a_crashed_test_process_leaves_no_server() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: a server nobody will ever drop (like a shared `static` one), then a
        // crash that runs no destructor at all.
        let server: &'static RedisServer = Box::leak(Box::new(RedisServer::start()));
        println!("redis-pid={}", server.pid().unwrap());
        std::process::abort();
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_crashed_test_process_leaves_no_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    assert!(!child.status.success(), "the child was meant to crash");
    let stdout = String::from_utf8_lossy(&child.stdout);
    let pid: u32 = stdout
        .lines()
        .find_map(|line| line.split("redis-pid=").nth(1))
        .unwrap_or_else(|| panic!("the child printed no pid: {stdout}"))
        .trim()
        .parse()
        .unwrap();
    until_gone(pid, "its crashed test process");
}
