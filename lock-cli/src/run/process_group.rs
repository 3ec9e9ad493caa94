//! Which processes of a process group still run, and whether they are stopped, from
//! `/proc`.

use std::io;
use std::time::{Duration, Instant};

/// The pids of the processes in group `group` that have not exited (zombies, which run no
/// code, are left out).
pub(crate) fn live_members(group: libc::pid_t) -> io::Result<Vec<libc::pid_t>> {
    Ok(members(group)?.into_iter().map(|(pid, _)| pid).collect())
}

/// Waits until every live process of `group` is stopped, for at most `within`; returns
/// whether they all are. A stop signal takes effect when its target next runs, not when
/// kill(2) returns.
pub(crate) fn wait_until_stopped(group: libc::pid_t, within: Duration) -> io::Result<bool> {
    let start = Instant::now();
    loop {
        let stopped = members(group)?
            .iter()
            .all(|&(_, state)| matches!(state, 'T' | 't'));
        if stopped {
            return Ok(true);
        }
        if start.elapsed() >= within {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
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
    fn this_process_is_a_live_member_of_its_own_group() {
        // SAFETY: getpgrp(2) has no preconditions.
        #[allow(unsafe_code)]
        let group = unsafe { libc::getpgrp() };
        let me = libc::pid_t::try_from(std::process::id()).unwrap();
        assert!(live_members(group).unwrap().contains(&me));
    }
}
