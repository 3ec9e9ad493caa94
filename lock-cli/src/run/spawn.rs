//! Starting a job's processes: the keeper (lockctl's default), the command itself (by the
//! keeper, or by lockctl with `--foreground`), and what each does in the forked child before
//! exec: tie its life to its parent's and set its signal mask.

#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;

use super::syscalls;

/// The signals lockctl passes on to the job. The keeper keeps them blocked: they reach the
/// command and its children through the group, while the keeper lives on to report the
/// command's status.
pub(crate) const FORWARDED: [libc::c_int; 4] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// The keeper's parent-death signal: catchable (unlike SIGKILL), so that when lockctl dies
/// the keeper can kill its whole group rather than only itself.
pub(crate) const KEEPER_PARENT_DEATH: libc::c_int = libc::SIGUSR1;

/// What the keeper waits for: its command changed state, or lockctl died.
pub(crate) const KEEPER_WAKE: [libc::c_int; 2] = [libc::SIGCHLD, KEEPER_PARENT_DEATH];

/// Every signal the keeper keeps blocked, from its first instruction on.
pub(crate) const KEEPER_BLOCKED: [libc::c_int; 6] = [
    FORWARDED[0],
    FORWARDED[1],
    FORWARDED[2],
    FORWARDED[3],
    KEEPER_WAKE[0],
    KEEPER_WAKE[1],
];

/// The environment the command gets.
pub(crate) type Env<'a> = [(&'a str, String)];

/// Starts the keeper (this binary, as `lockctl keeper --parent PID -- CMD...`) as the leader
/// of a new process group, its keeper signals already blocked and SIGUSR1 as its
/// parent-death signal. The keeper then runs `command` in that group.
pub(crate) fn keeper(command: &[OsString], env: &Env<'_>) -> io::Result<tokio::process::Child> {
    // /proc/self/exe rather than current_exe(): it still works when the binary was replaced
    // or deleted since lockctl started (an upgrade while jobs run).
    let mut keeper = tokio::process::Command::new("/proc/self/exe");
    keeper
        .arg("keeper")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--")
        .args(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .kill_on_drop(true);
    let std = keeper.as_std_mut();
    std.arg0("lockctl");
    before_exec(
        std,
        KEEPER_PARENT_DEATH,
        libc::SIG_BLOCK,
        syscalls::set_of(&KEEPER_BLOCKED),
    );
    inherit_holds(std);
    keeper.spawn()
}

/// Starts `command` as a plain child of lockctl, in lockctl's process group, with SIGKILL as
/// its parent-death signal (`--foreground`).
pub(crate) fn foreground(command: &[OsString], env: &Env<'_>) -> io::Result<tokio::process::Child> {
    let mut child = tokio::process::Command::new(&command[0]);
    child
        .args(&command[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    before_exec(
        child.as_std_mut(),
        libc::SIGKILL,
        libc::SIG_SETMASK,
        syscalls::set_of(&[]),
    );
    inherit_holds(child.as_std_mut());
    child.spawn()
}

/// Lets the job inherit lockctl's holds on single-host stores (see
/// `lock_core::backend_kit::hold`), as `flock(1)` lets its command inherit the lock: the
/// kernel drops a hold only when every process that has it is gone, so when lockctl dies
/// (even by SIGKILL) the next holder can take the lease over only once the whole job is gone,
/// not while the keeper is still killing it. A process of the job that escapes its group
/// (a daemon) keeps the hold: then only the lease's TTL frees it.
fn inherit_holds(command: &mut std::process::Command) {
    let fds: Vec<libc::c_int> = lock_core::backend_kit::hold::ProcessHold::all_of_process()
        .iter()
        .map(|hold| hold.as_raw_fd())
        .collect();
    if fds.is_empty() {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl(2),
    // which is async-signal-safe, on descriptors the child inherited from this process
    // (the holds stay open in lockctl while the job runs); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Starts `command` from the keeper: in the keeper's group, with an empty signal mask (the
/// keeper's blocked signals must reach it) and SIGKILL as its parent-death signal.
pub(crate) fn command_of_keeper(command: &[OsString]) -> io::Result<std::process::Child> {
    let mut child = std::process::Command::new(&command[0]);
    child.args(&command[1..]);
    before_exec(
        &mut child,
        libc::SIGKILL,
        libc::SIG_SETMASK,
        syscalls::set_of(&[]),
    );
    child.spawn()
}

/// Makes the child, between fork and exec: receive `death_signal` the moment its parent
/// dies, however it dies (even SIGKILL); fail if the parent already died; and change its
/// signal mask by `how` (SIG_BLOCK or SIG_SETMASK) with `mask`.
///
/// The death signal follows the thread that forked the child, so lockctl spawns from its
/// main thread (it runs a current-thread runtime) and the keeper has only one thread.
fn before_exec(
    command: &mut std::process::Command,
    death_signal: libc::c_int,
    how: libc::c_int,
    mask: libc::sigset_t,
) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    // A signal number is small and positive: it fits prctl's unsigned long.
    let death_signal = death_signal as libc::c_ulong;
    // SAFETY: the closure runs in the forked child before exec. It calls only prctl(2),
    // getppid(2) and pthread_sigmask(3), which are async-signal-safe, and allocates nothing
    // (its errors are raw OS errors).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then no death signal comes.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            let rc = libc::pthread_sigmask(how, &mask, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(())
        });
    }
}
