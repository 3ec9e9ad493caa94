//! What another process on this host is doing, as `/proc/<pid>/stat` says: for the processes
//! a single-host store's waiters depend on (the head of the waiting processes, a holder).

use std::path::Path;

/// What a process is doing, from this process's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProcessState {
    /// Running or sleeping, and not exiting: it can act.
    Acting,
    /// Exiting (or exited, not yet reaped): the kernel is closing its files and dropping
    /// its locks. Linux reports the close of a file (inotify's `IN_CLOSE_WRITE`) before it
    /// drops that file's `flock`, and an exiting process's files are closed one after the
    /// other, so a waiter woken by such a close can find the lock still held for a moment.
    Leaving,
    /// Stopped (`SIGSTOP`, a debugger) or in a state that does not act.
    Stopped,
    /// Not visible from this process: gone, in another PID namespace, or no `/proc`.
    Unseen,
}

/// The kernel's flag for a task that is exiting (`PF_EXITING` in `include/linux/sched.h`).
const PF_EXITING: u64 = 0x4;

/// What process `pid` is doing now.
pub(crate) fn of(pid: u32) -> ProcessState {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_stat(&stat),
        Err(_) => ProcessState::Unseen,
    }
}

/// What the process whose id is written (in decimal, perhaps followed by a newline) at the
/// start of the file at `path` is doing; [`Unseen`](ProcessState::Unseen) when the file
/// cannot be read or names no process id.
pub(crate) fn of_pid_in(path: &Path) -> ProcessState {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        .map_or(ProcessState::Unseen, of)
}

/// Reads `pid (comm) state ppid pgrp session tty_nr tpgid flags ...` (`proc(5)`): the command
/// name may hold spaces and parentheses, so the fields follow the last `)`.
fn parse_stat(stat: &str) -> ProcessState {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return ProcessState::Unseen;
    };
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().and_then(|state| state.chars().next());
    let flags = fields.nth(5).and_then(|flags| flags.parse::<u64>().ok());
    match state {
        Some('Z' | 'X' | 'x') => ProcessState::Leaving,
        _ if flags.is_some_and(|flags| flags & PF_EXITING != 0) => ProcessState::Leaving,
        Some('R' | 'S' | 'D' | 'I' | 'W') => ProcessState::Acting,
        Some(_) => ProcessState::Stopped,
        None => ProcessState::Unseen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_and_exit_flag_after_the_command_name() {
        let line = |comm: &str, state: char, flags: u64| {
            format!("4242 ({comm}) {state} 1 4242 4242 0 -1 {flags} 120 0 0 0 5 3 0 0 20 0")
        };
        assert_eq!(
            parse_stat(&line("a b) c", 'S', 0x0040_0000)),
            ProcessState::Acting
        );
        assert_eq!(
            parse_stat(&line("w", 'R', 0x0040_0004)),
            ProcessState::Leaving
        );
        assert_eq!(
            parse_stat(&line("w", 'Z', 0x0040_0000)),
            ProcessState::Leaving
        );
        assert_eq!(
            parse_stat(&line("w", 'T', 0x0040_0000)),
            ProcessState::Stopped
        );
        assert_eq!(parse_stat("garbage"), ProcessState::Unseen);
    }

    #[test]
    fn this_process_acts_and_no_process_is_unseen() {
        assert_eq!(of(std::process::id()), ProcessState::Acting);
        assert_eq!(of(u32::MAX), ProcessState::Unseen);
    }

    #[test]
    fn a_process_killed_mid_exit_is_leaving_until_reaped() {
        // A child that exits and is not reaped yet is a zombie: leaving.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while of(pid) != ProcessState::Leaving {
            assert!(std::time::Instant::now() < deadline, "{:?}", of(pid));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.wait().unwrap();
        assert_eq!(of(pid), ProcessState::Unseen, "reaped");
    }
}
