//! The two places lockctl talks to the kernel directly: delivering a signal to the child,
//! and tying the child's life to lockctl's (Linux parent-death signal).

#![allow(unsafe_code)]

use std::io;

/// Sends `signal` to process `pid`. A process that already exited is not an error.
pub(crate) fn send(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, signal) };
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

/// Makes the child receive SIGKILL the moment lockctl dies, however it dies (even SIGKILL),
/// so a command never runs on without the lease that protects it.
///
/// The death signal follows the thread that forked the child, so lockctl spawns children
/// from its main thread (it runs a current-thread runtime).
pub(crate) fn kill_child_when_parent_dies(command: &mut tokio::process::Command) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2) and
    // getppid(2), which are async-signal-safe, and allocates nothing on success.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // lockctl may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::other(
                    "lockctl exited before the command started",
                ));
            }
            Ok(())
        });
    }
}
