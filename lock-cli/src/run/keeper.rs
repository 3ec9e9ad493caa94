//! The keeper: the process that leads a `lockctl run` job's process group.
//!
//! lockctl starts it as `lockctl keeper --parent PID -- CMD...` (a hidden subcommand), as the
//! leader of a new process group K, with the signals lockctl forwards already blocked and
//! SIGUSR1 as its parent-death signal (see `spawn.rs`). The keeper runs the command in K
//! (with an empty signal mask, and SIGKILL as the command's own parent-death signal), waits
//! for it, and exits with its status: its code, or 128+N if signal N killed it.
//!
//! lockctl signals the whole group K. The keeper has those signals blocked, so it survives
//! them and reports the command's status; the command and everything it started in K get
//! them. If lockctl dies, however it dies (even SIGKILL), the keeper gets SIGUSR1 and
//! SIGKILLs all of K, itself included.
//!
//! The keeper is a freshly exec'd process with one thread and no async runtime: it waits in
//! `sigwaitinfo` for its command to change state or for lockctl to die, so nothing it does
//! can race with a signal handler.

use std::io;

use super::spawn;
use super::syscalls;
use crate::cli::KeeperArgs;
use crate::exit;

/// Runs the keeper; returns its exit code.
pub(crate) fn keep(args: &KeeperArgs) -> u8 {
    let Some(lockctl) = libc::pid_t::try_from(args.parent).ok().filter(|&p| p > 1) else {
        eprintln!("lockctl keeper: --parent {} is not a pid", args.parent);
        return exit::USAGE;
    };
    // Already blocked when lockctl started the keeper; blocked again in case someone runs
    // `lockctl keeper` by hand.
    if let Err(error) = syscalls::block(&spawn::KEEPER_BLOCKED) {
        eprintln!("lockctl keeper: cannot block signals: {error}");
        return exit::CANNOT_EXECUTE;
    }
    // Started as /proc/self/exe, it would show as "exe".
    syscalls::set_process_name(c"lockctl-keeper");
    // An inherited SIG_IGN for SIGCHLD would make the kernel reap the command behind our
    // back, and lose its status.
    syscalls::restore_default_action(libc::SIGCHLD);
    if syscalls::parent_pid() != lockctl {
        // lockctl died before we got here; its death signal is pending or went to nobody.
        return 128 + u8::try_from(spawn::KEEPER_PARENT_DEATH).unwrap_or(0);
    }
    let mut command = match spawn::command_of_keeper(&args.command) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("lockctl: cannot run {:?}: {error}", args.command[0]);
            return match error.kind() {
                io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            };
        }
    };
    loop {
        match syscalls::wait_for_one_of(&spawn::KEEPER_WAKE) {
            Ok(libc::SIGCHLD) => match command.try_wait() {
                Ok(Some(status)) => return exit::for_status(status),
                Ok(None) => {} // stopped or continued, not exited
                Err(error) => {
                    eprintln!("lockctl keeper: lost track of the command: {error}");
                    return exit::BACKEND_ERROR;
                }
            },
            // SIGUSR1: lockctl died (our parent changed), unless someone sent it by hand.
            Ok(_) => {
                if syscalls::parent_pid() != lockctl {
                    syscalls::kill_own_group();
                }
            }
            Err(error) => {
                // Cannot happen for a valid set; waiting plainly still reports the status.
                eprintln!("lockctl keeper: cannot wait for signals: {error}");
                return command.wait().map_or(exit::BACKEND_ERROR, exit::for_status);
            }
        }
    }
}
