//! Where lockctl talks to the kernel about signals and processes: delivering a signal to
//! the job, stopping itself, signal masks, waiting for a signal, and seeing that a child
//! exited without reaping it.
//!
//! The functions that run in a forked child before exec live in `spawn.rs`.

#![allow(unsafe_code)]

use std::io;

/// Who a signal is for. Built only from ids that `kill(2)` reads as one process or one
/// group: never 0 (lockctl's own group), 1 or -1 (every process), so a missing pid can never
/// turn into a signal to lockctl itself or to the whole machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Every process in the process group with this id.
    Group(libc::pid_t),
    /// One process.
    Process(libc::pid_t),
}

impl Target {
    /// The process group whose id is `pid` (the keeper's pid: it leads the group).
    pub(crate) fn group(pid: u32) -> Option<Self> {
        usable_pid(pid).map(Self::Group)
    }

    /// The process `pid` alone.
    pub(crate) fn process(pid: u32) -> Option<Self> {
        usable_pid(pid).map(Self::Process)
    }

    /// Sends `signal`. A target that no longer exists is not an error.
    pub(crate) fn send(self, signal: libc::c_int) -> io::Result<()> {
        let id = match self {
            Self::Group(group) => -group,
            Self::Process(pid) => pid,
        };
        // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
        let rc = unsafe { libc::kill(id, signal) };
        if rc == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(error)
        }
    }
}

fn usable_pid(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|&pid| pid > 1)
}

/// Stops this whole process (every thread) until it gets SIGCONT.
pub(crate) fn stop_self() {
    // SAFETY: getpid(2) and kill(2) have no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGSTOP);
    }
}

/// SIGKILLs every process in the caller's own process group, the caller included.
pub(crate) fn kill_own_group() {
    // SAFETY: kill(2) has no memory-safety preconditions; 0 means the caller's group.
    unsafe {
        libc::kill(0, libc::SIGKILL);
    }
}

/// The pid of the caller's parent.
pub(crate) fn parent_pid() -> libc::pid_t {
    // SAFETY: getppid(2) has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// Names the calling process `name` in `ps` and `/proc/PID/comm` (at most 15 bytes kept).
pub(crate) fn set_process_name(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string, which a CStr is.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
    }
}

/// A set of signals, for masks and waits.
pub(crate) fn set_of(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset reads it; both only write
    // into the set we own, and fail only for invalid signal numbers, which are skipped.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Blocks `signals` in the calling thread (and in threads and processes it starts later).
pub(crate) fn block(signals: &[libc::c_int]) -> io::Result<()> {
    let set = set_of(signals);
    // SAFETY: `set` is an initialised sigset_t; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Gives `signal` its default action again (undoing an inherited SIG_IGN).
pub(crate) fn restore_default_action(signal: libc::c_int) {
    // SAFETY: installing SIG_DFL involves no handler code.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
    }
}

/// Waits until one of `signals` (which must be blocked) is pending, and takes it.
pub(crate) fn wait_for_one_of(signals: &[libc::c_int]) -> io::Result<libc::c_int> {
    let set = set_of(signals);
    loop {
        // SAFETY: `set` is initialised; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if signal >= 0 {
            return Ok(signal);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Whether child `pid` has exited, WITHOUT reaping it: until it is reaped its pid (and the
/// process group it led) cannot be reused, so signals to that group still reach only the
/// job's own processes.
pub(crate) fn exited_unreaped(pid: libc::pid_t) -> io::Result<bool> {
    let id = libc::id_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: siginfo_t is plain data, valid when zeroed; waitid writes into it.
    let mut info = unsafe { std::mem::zeroed::<libc::siginfo_t>() };
    let options = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is a valid, writable siginfo_t.
    let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, options) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // With WNOHANG and no exited child, waitid leaves si_pid zero.
    // SAFETY: reading si_pid of a siginfo_t filled (or left zeroed) by waitid.
    Ok(unsafe { info.si_pid() } != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_kill_would_misread_are_no_target() {
        for pid in [0, 1, u32::MAX, 1 << 31] {
            assert_eq!(Target::group(pid), None, "{pid}");
            assert_eq!(Target::process(pid), None, "{pid}");
        }
        assert_eq!(Target::group(42), Some(Target::Group(42)));
        assert_eq!(Target::process(42), Some(Target::Process(42)));
    }

    #[test]
    fn a_signal_to_a_process_that_is_gone_is_not_an_error() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // Reaped: the pid is free (and very unlikely to be reused within this test).
        assert!(Target::process(pid).unwrap().send(0).is_ok());
    }

    #[test]
    fn an_exited_child_is_seen_without_being_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        let start = std::time::Instant::now();
        while !exited_unreaped(pid).unwrap() {
            assert!(start.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Still there to be reaped, with its status.
        assert!(exited_unreaped(pid).unwrap());
        assert!(child.wait().unwrap().success());
    }
}
