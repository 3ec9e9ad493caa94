//! Which processes of a process group still run, and whether they are stopped, from
//! `/proc`.

use std::io;
use std::time::{Duration, Instant};

/// The pids of the processes in group `group` that have not exited (zombies, which run no
/// code, are left out).
pub(crate) fn live_members(group: libc::pid_t) -> io::Result<Vec<libc::pid_t>> {
    Ok(members(group)?.into_iter().map(|(pid, _)| pid).collect())
}

/// Waits until every live process of `group` is stopped, or cannot run again before it
/// stops, for at most `within`; returns whether they all are. A stop signal takes effect
/// when its target next returns to user space, not when kill(2) returns.
///
/// "Cannot run again before it stops": SIGSTOP is pending, so the kernel stops the process
/// before it runs any more of its own code. That covers a process that has not been
/// scheduled since the signal, and one blocked where a stop signal does not reach it: a
/// shell that `vfork`ed a command and waits (state `D`) for the child to `exec`, while the
/// child, stopped before its `exec`, never does until SIGCONT. That shell would never show
/// `T`; it stops as soon as the child `exec`s.
pub(crate) fn wait_until_stopped(group: libc::pid_t, within: Duration) -> io::Result<bool> {
    let start = Instant::now();
    loop {
        let stopped = members(group)?
            .iter()
            .all(|&(pid, state)| matches!(state, 'T' | 't') || stop_pending(pid));
        if stopped {
            return Ok(true);
        }
        if start.elapsed() >= within {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether SIGSTOP is pending for `pid`, to the process (`ShdPnd`) or its main thread
/// (`SigPnd`), as `/proc/PID/status` shows; `false` if it cannot be read (it exited).
fn stop_pending(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|status| pending_in_status(&status, libc::SIGSTOP))
}

/// Whether `/proc/PID/status` text shows `signal` pending (bit `signal - 1` of the `SigPnd`
/// or `ShdPnd` mask, in hex).
fn pending_in_status(status: &str, signal: libc::c_int) -> bool {
    let Some(bit) = u32::try_from(signal - 1).ok().filter(|&bit| bit < 64) else {
        return false;
    };
    status.lines().any(|line| {
        let mask = line
            .strip_prefix("SigPnd:")
            .or_else(|| line.strip_prefix("ShdPnd:"));
        mask.and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << bit) != 0)
    })
}

/// The live processes of `group`, with their state letters.
fn members(group: libc::pid_t) -> io::Result<Vec<(libc::pid_t, char)>> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // A process that exits while we look has no stat any more: it is not a member.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = state_and_group(&stat)
            && pgrp == group
            && state != 'Z'
            && state != 'X'
        {
            members.push((pid, state));
        }
    }
    Ok(members)
}

/// The state letter and process group id of a `/proc/PID/stat` line. The command name, in
/// parentheses, may itself contain spaces and parentheses, so fields are counted after the
/// last `)`: state, ppid, pgrp.
fn state_and_group(stat: &str) -> Option<(char, libc::pid_t)> {
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_after_the_command_name() {
        let stat = "4242 (a) b (c) S 1 4240 4240 0 -1 4194560 0 0";
        assert_eq!(state_and_group(stat), Some(('S', 4240)));
        assert_eq!(state_and_group("4242 (x) Z 1 77 77"), Some(('Z', 77)));
        assert_eq!(state_and_group("garbage"), None);
    }

    #[test]
    fn a_pending_stop_is_read_from_either_mask() {
        // A vfork parent waiting for its stopped child: SIGCHLD and SIGSTOP (bits 16, 18)
        // pending to the process.
        let waiting = "State:\tD (disk sleep)\nSigQ:\t7/96367\nSigPnd:\t0000000000000000\n\
                       ShdPnd:\t0000000000050000\nSigBlk:\tfffffffe7ffbfeff\n";
        assert!(pending_in_status(waiting, libc::SIGSTOP));
        assert!(!pending_in_status(waiting, libc::SIGTERM));
        let to_the_thread = "SigPnd:\t0000000000040000\nShdPnd:\t0000000000000000\n";
        assert!(pending_in_status(to_the_thread, libc::SIGSTOP));
        let running = "SigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n";
        assert!(!pending_in_status(running, libc::SIGSTOP));
        assert!(!pending_in_status("garbage", libc::SIGSTOP));
    }

    /// A shell that keeps `vfork`ing commands is often caught by SIGSTOP between a `vfork`
    /// and the child's `exec`: the child stops, and the shell waits for it in state `D`,
    /// never `T`. The group still counts as stopped (found under load: a shell in
    /// `kernel_clone` with SIGSTOP pending, its child stopped, in 7 of 60 Ctrl-Z tests).
    #[test]
    fn a_group_whose_shell_waits_on_a_stopped_vfork_child_counts_as_stopped() {
        use std::os::unix::process::CommandExt;

        /// The shell's group, killed when the test ends, passed or not.
        struct Group(libc::pid_t);
        impl Group {
            fn signal(&self, signal: libc::c_int) {
                // SAFETY: kill(2) on this test's own child's process group.
                #[allow(unsafe_code)]
                let rc = unsafe { libc::kill(-self.0, signal) };
                assert_eq!(rc, 0, "kill({}, {signal})", -self.0);
            }
        }
        impl Drop for Group {
            fn drop(&mut self) {
                // SAFETY: as above; a failure (the group is gone) is fine here.
                #[allow(unsafe_code)]
                let _ = unsafe { libc::kill(-self.0, libc::SIGKILL) };
            }
        }

        let mut shell = std::process::Command::new("sh")
            .args(["-c", "while :; do /bin/true; done"])
            .process_group(0)
            .spawn()
            .unwrap();
        let group = Group(libc::pid_t::try_from(shell.id()).unwrap());
        let mut caught_in_vfork = 0;
        for i in 0..200 {
            // Stops land at different points of the shell's loop.
            std::thread::sleep(Duration::from_micros(100 + (i % 7) * 150));
            group.signal(libc::SIGSTOP);
            let stopped = wait_until_stopped(group.0, Duration::from_secs(5));
            if members(group.0)
                .unwrap()
                .iter()
                .any(|&(_, state)| !matches!(state, 'T' | 't'))
            {
                caught_in_vfork += 1;
            }
            group.signal(libc::SIGCONT);
            assert_eq!(stopped.ok(), Some(true), "the group did not stop");
        }
        drop(group);
        let _ = shell.wait();
        // Not asserted: how often a stop lands inside a vfork depends on the machine (6 of
        // 200 here on an idle machine; the assertion above failed at the first one before).
        // eprintln!, not say!: the test harness captures it and shows it for a failed test.
        eprintln!(
            "{caught_in_vfork} of 200 stops found a process not yet in T, with SIGSTOP pending"
        );
    }

    #[test]
    fn this_process_is_a_live_member_of_its_own_group() {
        // SAFETY: getpgrp(2) has no preconditions.
        #[allow(unsafe_code)]
        let group = unsafe { libc::getpgrp() };
        let me = libc::pid_t::try_from(std::process::id()).unwrap();
        assert!(live_members(group).unwrap().contains(&me));
    }
}
