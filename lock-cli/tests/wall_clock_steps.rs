//! A `lockctl` whose wall clock is wrong cannot break a lock on a single-host store: SQLite
//! and the lock directory judge expiry on the host's boot clock, which every process shares
//! and wall-clock steps do not move. The wrong clocks come from `faketime` (Debian's
//! `faketime` package) with `DONT_FAKE_MONOTONIC=1`, so that only the wall clock moves, as an
//! NTP step or a VM resumed from a snapshot does.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lock_testkit::Backend;
use support::{Sandbox, assert_code, is_held, unique_name, wait_for};

/// The single-host stores, through each SQLite driver.
const STORES: [Backend; 3] = [Backend::File, Backend::Sqlite, Backend::SqliteSqlx];

/// `lockctl` in `sandbox` with its wall clock shifted by `offset` (`+120s`, `-120s`).
fn lockctl_at(sandbox: &Sandbox, offset: &str) -> Command {
    let faketime = which("faketime").unwrap_or_else(|| {
        panic!(
            "these tests need the faketime command: install it (Debian/Ubuntu: `apt-get \
             install faketime`; .ci/run does)"
        )
    });
    let plain = sandbox.lockctl();
    let mut command = Command::new(faketime);
    command.args(["-f", offset]).arg(plain.get_program());
    for (key, value) in plain.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command.env("DONT_FAKE_MONOTONIC", "1").stdin(Stdio::null());
    command
}

/// The one child process of `pid` (the program faketime started).
fn only_child(pid: u32) -> u32 {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let children = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let children: Vec<u32> = children
        .split_whitespace()
        .map(|c| c.parse().expect("a pid"))
        .collect();
    assert_eq!(
        children.len(),
        1,
        "faketime {pid} has children {children:?}"
    );
    children[0]
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Starts `command` holding `name` on `url` with `ttl` while `sleep secs` runs; returns
/// once the lock is held.
fn hold(
    sandbox: &Sandbox,
    mut command: Command,
    url: &str,
    name: &str,
    ttl: &str,
    secs: &str,
) -> Child {
    let child = command
        .args(["run", "--url", url, "--ttl", ttl, name, "--", "sleep", secs])
        .stdout(Stdio::null())
        .spawn()
        .expect("lockctl starts");
    wait_for(
        "the holder to take the lock",
        Duration::from_secs(10),
        || is_held(sandbox, url, name),
    );
    child
}

#[test]
fn a_contender_whose_clock_is_two_minutes_ahead_cannot_take_a_live_lease() {
    for kind in STORES {
        let sandbox = Sandbox::new();
        let url = sandbox.url(kind);
        let name = unique_name("ahead");
        let mut holder = hold(&sandbox, sandbox.lockctl(), &url, &name, "30s", "4");
        let output = lockctl_at(&sandbox, "+120s")
            .args(["run", "--url", &url, "--no-wait", &name, "--", "true"])
            .output()
            .expect("faketime lockctl starts");
        assert_code(&output, 75);
        let status = holder.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{kind}: the holder kept its lease");
    }
}

#[test]
fn a_holder_whose_clock_is_two_minutes_behind_keeps_its_live_lease() {
    for kind in STORES {
        let sandbox = Sandbox::new();
        let url = sandbox.url(kind);
        let name = unique_name("behind");
        let late = lockctl_at(&sandbox, "-120s");
        let mut holder = hold(&sandbox, late, &url, &name, "6s", "4");
        let output = sandbox.run(&["run", "--url", &url, "--no-wait", &name, "--", "true"]);
        assert_code(&output, 75);
        let status = holder.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{kind}: the holder kept its lease");
    }
}

#[test]
fn a_dead_holder_whose_clock_was_ahead_does_not_keep_its_lease_past_the_ttl() {
    let ttl = Duration::from_secs(3);
    for kind in STORES {
        let sandbox = Sandbox::new();
        let url = sandbox.url(kind);
        let name = unique_name("dead-ahead");
        let ahead = lockctl_at(&sandbox, "+120s");
        let mut holder = hold(&sandbox, ahead, &url, &name, "3s", "60");
        // faketime runs lockctl as its child: SIGKILL that lockctl (its keeper then kills
        // the job), and faketime exits with it.
        support::signal(only_child(holder.id()), libc::SIGKILL);
        holder.wait().unwrap();
        let start = Instant::now();
        let output = sandbox.run(&["run", "--url", &url, "--wait", "30s", &name, "--", "true"]);
        assert_code(&output, 0);
        let waited = start.elapsed();
        assert!(
            waited < ttl + Duration::from_secs(3),
            "{kind}: the lease of a dead holder whose clock was 120 s ahead lasted {waited:?} \
             (TTL {ttl:?})"
        );
    }
}
