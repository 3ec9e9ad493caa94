//! The PostgreSQL harness itself: private clusters and PgBouncers never outlive their test,
//! whether it passes, panics, or its whole process crashes, and leave no directory behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lock_testkit::postgres::{PgBouncer, PostgresServer};
use lock_testkit::process::{alive, children, is_stopped};

/// Set in the child process of `a_crashed_test_process_leaves_no_server`.
const CHILD_ENV: &str = "LOCK_POSTGRES_HARNESS_CRASH_CHILD";

fn until<T>(why: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = done() {
            return value;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{why}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True when the server on `port` accepts TCP connections.
fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn pause_kill_restart_and_drop_leave_no_process_and_no_directory() {
    let mut server = PostgresServer::start();
    let dir = server.dir().to_owned();
    assert!(answers(server.port()));
    let first = server.pid().unwrap();
    let backends = children(first);
    assert!(
        !backends.is_empty(),
        "the postmaster has its helper processes"
    );
    server.pause();
    // Every child that still exists (an autovacuum worker may have finished meanwhile).
    until("the postmaster and its children stop", || {
        (is_stopped(first) && backends.iter().all(|p| is_stopped(*p) || !alive(*p))).then_some(())
    });
    server.resume();
    until("the postmaster runs again", || {
        (!is_stopped(first)).then_some(())
    });
    server.restart();
    let second = server.pid().unwrap();
    assert_ne!(first, second);
    until("the first postmaster and its children are gone", || {
        (!alive(first) && backends.iter().all(|p| !alive(*p))).then_some(())
    });
    assert!(answers(server.port()), "it came back on the same port");
    // Paused when dropped: it still goes.
    server.pause();
    let all: Vec<u32> = std::iter::once(second).chain(children(second)).collect();
    drop(server);
    assert!(
        all.iter().all(|p| !alive(*p)),
        "processes outlived the drop"
    );
    assert!(!dir.exists(), "{} outlived the drop", dir.display());
}

#[test]
fn a_pgbouncer_pools_a_server_and_goes_with_its_drop() {
    let server = PostgresServer::start();
    let bouncer = PgBouncer::start("127.0.0.1", server.port(), 2);
    assert!(answers(bouncer.port()));
    assert!(
        bouncer
            .url("postgres")
            .contains(&bouncer.port().to_string())
    );
    let (pid, dir) = (bouncer.pid().unwrap(), bouncer.dir().to_owned());
    drop(bouncer);
    assert!(!alive(pid));
    assert!(!dir.exists(), "{} outlived the drop", dir.display());
}

#[test]
fn a_crashed_test_process_leaves_no_server() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The child: start a server, report it, and die without dropping it.
        let server = PostgresServer::start();
        println!(
            "server pid={} dir={}",
            server.pid().unwrap(),
            server.dir().display()
        );
        std::process::abort();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_crashed_test_process_leaves_no_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("server pid=").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("the child said: {stdout}"));
    let (pid, dir) = line.split_once(" dir=").unwrap();
    let pid: u32 = pid.parse().unwrap();
    let dir = PathBuf::from(dir);
    until(
        "the crashed process's server is stopped and its directory removed",
        || (!alive(pid) && !dir.exists()).then_some(()),
    );
}
