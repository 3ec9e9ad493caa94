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

use super::spawn;
use super::syscalls;
use crate::cli::KeeperArgs;
use crate::error::CliError;
use crate::exit;

/// Runs the keeper; returns its exit code: the command's status.
pub(crate) fn keep(args: &KeeperArgs) -> Result<u8, CliError> {
    let Some(lockctl) = libc::pid_t::try_from(args.parent).ok().filter(|&p| p > 1) else {
        return Err(CliError::Usage(format!(
            "keeper --parent {} is not a pid (lockctl run starts its keeper itself)",
            args.parent
        )));
    };
    // Already blocked when lockctl started the keeper; blocked again in case someone runs
    // `lockctl keeper` by hand.
    syscalls::block(&spawn::KEEPER_BLOCKED).map_err(|source| CliError::Keeper {
        what: "the keeper cannot block signals",
        source,
    })?;
    // Started as /proc/self/exe, it would show as "exe".
    syscalls::set_process_name(c"lockctl-keeper");
    // An inherited SIG_IGN for SIGCHLD would make the kernel reap the command behind our
    // back, and lose its status.
    syscalls::restore_default_action(libc::SIGCHLD);
    if syscalls::parent_pid() != lockctl {
        // lockctl died before we got here; its death signal is pending or went to nobody.
        return Ok(exit::for_signal(spawn::KEEPER_PARENT_DEATH));
    }
    let mut command =
        spawn::command_of_keeper(&args.command).map_err(|source| CliError::CannotRun {
            command: args.command[0].clone(),
            source,
        })?;
    let lost_track = |e| CliError::io("the keeper lost track of the command", e);
    loop {
        match syscalls::wait_for_one_of(&spawn::KEEPER_WAKE) {
            Ok(libc::SIGCHLD) => match command.try_wait() {
                Ok(Some(status)) => return Ok(exit::for_status(status)),
                Ok(None) => {} // stopped or continued, not exited
                Err(error) => return Err(lost_track(error)),
            },
            // SIGUSR1: lockctl died (our parent changed), unless someone sent it by hand.
            Ok(_) => {
                if syscalls::parent_pid() != lockctl {
                    syscalls::kill_own_group();
                }
            }
            Err(error) => {
                // Cannot happen for a valid set; waiting plainly still reports the status.
                say!("lockctl keeper: cannot wait for signals: {error}");
                return command.wait().map(exit::for_status).map_err(lost_track);
            }
        }
    }
}
