//! The test harness itself: private servers never outlive their test, whether it passes,
//! panics, or its whole process crashes; `LOCK_TEST_REDIS_URL` picks the server; and the
//! Redis backends' URLs name the shared server and cluster.

use std::process::Command;
use std::time::{Duration, Instant};

use lock_testkit::Backend;
use lock_testkit::process::alive;
use lock_testkit::redis::{RedisSentinels, RedisServer, TestRedis, URL_ENV, unique_prefix};

/// Set in the child process of `a_crashed_test_process_leaves_no_server`.
const CHILD_ENV: &str = "LOCK_REDIS_HARNESS_CRASH_CHILD";

/// Set in the child process of `a_crashed_test_process_leaves_no_sentinel_or_replica`.
const SENTINEL_CHILD_ENV: &str = "LOCK_REDIS_HARNESS_SENTINEL_CHILD";

/// Set in the child process of `the_url_variable_names_the_server_to_use`: the key the
/// child writes.
const URL_CHILD_ENV: &str = "LOCK_REDIS_HARNESS_URL_CHILD";

/// Runs this test binary's test `name` alone in a child process, with `env` set.
fn run_child(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn until_gone(pid: u32, why: &str) {
    let start = Instant::now();
    while alive(pid) {
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
    let child = run_child(
        "a_crashed_test_process_leaves_no_server",
        &[(CHILD_ENV, "1")],
    );
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

#[test]
fn the_url_variable_names_the_server_to_use() {
    if let Some(key) = std::env::var_os(URL_CHILD_ENV) {
        // The child: what it writes through its test server must land on the parent's.
        let redis = TestRedis::from_env_or_start();
        assert!(redis.server().is_none(), "started a server: {redis:?}");
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        redis::cmd("SET")
            .arg(key.to_str().unwrap())
            .arg("written by the child")
            .exec(&mut conn)
            .unwrap();
    } else {
        let server = RedisServer::start();
        let key = unique_prefix("url-env");
        // Surrounding blanks (a sloppy CI variable) are ignored.
        let url = format!(" {} ", server.url());
        let child = run_child(
            "the_url_variable_names_the_server_to_use",
            &[(URL_ENV, &url), (URL_CHILD_ENV, &key)],
        );
        assert!(
            child.status.success(),
            "the child failed: {}",
            String::from_utf8_lossy(&child.stdout)
        );
        let mut conn = redis::Client::open(server.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        let written: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
        assert_eq!(written.as_deref(), Some("written by the child"));
    }
}

#[test]
fn the_redis_backends_urls_name_the_shared_servers_and_every_node_answers() {
    let dir = std::path::Path::new("/unused");
    let single = Backend::Redis.url(dir).unwrap();
    assert_eq!(single, lock_testkit::redis::shared().url());
    let cluster = Backend::RedisCluster.url(dir).unwrap();
    let hosts = cluster
        .strip_prefix("redis+cluster://")
        .unwrap_or_else(|| panic!("{cluster}"));
    let mut urls: Vec<String> = hosts.split(',').map(|h| format!("redis://{h}")).collect();
    assert_eq!(urls.len(), 3, "{cluster}");
    urls.push(single);
    for url in urls {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
        assert_eq!(pong, "PONG", "{url}");
    }
}

/// Every process of a Sentinel group: the two data servers, then the three Sentinels.
fn group_pids(group: &RedisSentinels) -> Vec<u32> {
    group
        .servers()
        .iter()
        .chain(group.sentinels())
        .filter_map(RedisServer::pid)
        .collect()
}

#[test]
fn a_sentinel_group_fails_over_and_leaves_no_process() {
    let mut group = RedisSentinels::start();
    let pids = group_pids(&group);
    assert_eq!(pids.len(), 5, "two servers and three Sentinels");
    let first = group.primary_port();
    assert_eq!(first, group.servers()[0].port());
    group.failover();
    let second = group.primary_port();
    assert_eq!(
        second,
        group.servers()[1].port(),
        "the replica was promoted"
    );
    // Killing the new primary: the Sentinels promote the old one, now its replica.
    let killed = group.kill_primary();
    assert_eq!(killed, second);
    assert_eq!(group.wait_for_new_primary(killed), first);
    drop(group);
    for pid in pids {
        until_gone(pid, "the Sentinel group's drop");
    }
}

#[test]
fn a_crashed_test_process_leaves_no_sentinel_or_replica() {
    if std::env::var_os(SENTINEL_CHILD_ENV).is_some() {
        let group: &'static RedisSentinels = Box::leak(Box::new(RedisSentinels::start()));
        for pid in group_pids(group) {
            println!("redis-pid={pid}");
        }
        std::process::abort();
    }
    let child = run_child(
        "a_crashed_test_process_leaves_no_sentinel_or_replica",
        &[(SENTINEL_CHILD_ENV, "1")],
    );
    assert!(!child.status.success(), "the child was meant to crash");
    let stdout = String::from_utf8_lossy(&child.stdout);
    let pids: Vec<u32> = stdout
        .lines()
        .filter_map(|line| line.split("redis-pid=").nth(1))
        .map(|pid| pid.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 5, "the child printed {stdout}");
    for pid in pids {
        until_gone(pid, "its crashed test process");
    }
}
