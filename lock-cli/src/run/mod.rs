//! `lockctl run`: run a command while holding a lock.
//!
//! Everything that can be checked without the store (name, TTL, grace, signal handlers) is
//! checked before the store is opened, so a bad option fails the same way whether the store
//! is reachable or not, and creates no default database.
//!
//! The parts of a run, each in its own module:
//! - [`grace`]: `--grace`, how long before its lease runs out the command is asked to stop;
//! - [`signal_handlers`]: the signals lockctl handles, as events, and the child exits it waits
//!   for;
//! - [`spawn`]: starting the keeper, or the command itself, and what the forked child does
//!   before exec;
//! - [`keeper`]: the process that leads the job's process group (`lockctl keeper`, hidden);
//! - [`supervise`](mod@supervise): the running job: signals passed on, stopping it for its lease, Ctrl-Z, and
//!   killing what it left behind;
//! - [`process_group`]: which processes of the job's group still run, from `/proc`;
//! - [`syscalls`]: the thin unsafe layer over kill(2), signal masks, sigwaitinfo(2) and
//!   waitid(2).

mod grace;
pub(crate) mod keeper;
mod process_group;
mod signal_handlers;
mod spawn;
mod supervise;
mod syscalls;
mod waiting;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use leaselock::{LockBackend, LockError, LockGuard, LockName, LockOptions, Locker};

use crate::cli::RunArgs;
use crate::error::CliError;
use crate::exit;
use grace::grace_for;
use signal_handlers::{ChildExits, Event, Signals};
use supervise::{Ended, Job, Mode, supervise};

/// Runs the command under the lock and returns lockctl's exit code.
pub(crate) async fn run(args: RunArgs) -> Result<u8, CliError> {
    let name = LockName::new(&args.name)?;
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| command_line(&args.command));
    let mut opts = LockOptions::default()
        .with_ttl(args.ttl)
        .with_label(label)
        .with_limit(args.limit);
    opts.wait = args.wait;
    opts.hold_at_least = args.hold_at_least;
    opts.validate()?;
    let grace = grace_for(args.ttl, args.grace)?;
    let mode = if args.foreground {
        Mode::Foreground
    } else {
        Mode::Group
    };
    // With --foreground the terminal stops lockctl and the command together on Ctrl-Z.
    let mut signals = Signals::install(mode == Mode::Group)?;
    let mut exits = ChildExits::install()?;

    let (url, backend) = crate::store::open(args.store.url.as_deref()).await?;
    let locker = Locker::new(backend.clone());
    let acquired = acquire(&locker, &backend, &name, &opts, &args);
    tokio::pin!(acquired);
    let guard = loop {
        tokio::select! {
            acquired = &mut acquired => break acquired,
            event = signals.next() => match event {
                Event::Forward { number, name: signal } => {
                    let name = name.clone();
                    return Err(CliError::Interrupted { name, signal, number });
                }
                Event::Suspend => syscalls::stop_self(),
                Event::Resumed => {}
            },
        }
    };
    let guard = match guard {
        Ok(Some(guard)) => guard,
        Ok(None) | Err(LockError::Timeout { .. }) => {
            let holder = backend.inspect(&name).await.ok().flatten();
            return Err(CliError::NotAcquired {
                name: name.clone(),
                no_wait: args.no_wait,
                wait: opts.wait,
                holder: holder.map(Box::new),
            });
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(lock = %name, fence = guard.fence(), "acquired");

    let env = [
        ("LOCK_NAME", guard.name().as_str().to_owned()),
        ("LOCK_FENCE", guard.fence().to_string()),
        ("LOCK_OWNER", guard.holder().token.to_hex()),
        ("LOCK_URL", url),
    ];
    let job = match Job::start(mode, &args.command, &env) {
        Ok(job) => job,
        Err(source) => {
            release(guard, &name).await;
            return Err(match mode {
                Mode::Foreground => CliError::CannotRun {
                    command: args.command[0].clone(),
                    source,
                },
                // The keeper reports the command's own failures; this is the keeper's.
                Mode::Group => CliError::Keeper {
                    what: "cannot start its keeper process (/proc/self/exe)",
                    source,
                },
            });
        }
    };
    match supervise(job, &guard, &mut signals, &mut exits, grace).await {
        Ended::Exited(status) => {
            release(guard, &name).await;
            let status = status.map_err(|e| CliError::io("lost track of the command", e))?;
            Ok(exit::for_status(status))
        }
        Ended::StoppedForLease => {
            // Release anyway, in case the store was only unreachable. Not an error: why the
            // command was stopped was said when it happened, while the command still ran.
            let _ = guard.release().await;
            Ok(exit::LEASE_LOST)
        }
    }
}

/// Takes the lock at once if it is free; else, unless `--no-wait`, waits for it, saying once
/// on stderr whom it waits for (unless `--quiet`).
async fn acquire(
    locker: &Locker,
    backend: &Arc<dyn LockBackend>,
    name: &LockName,
    opts: &LockOptions,
    args: &RunArgs,
) -> Result<Option<LockGuard>, LockError> {
    match locker.try_lock(name, opts).await {
        Ok(Some(guard)) => return Ok(Some(guard)),
        Ok(None) if args.no_wait => return Ok(None),
        Ok(None) if args.quiet => tracing::debug!(lock = %name, "the lock is held; waiting for it"),
        Ok(None) => {
            let holders = holders(backend, name).await;
            let line = waiting::waiting_line(name, &holders, opts.wait, SystemTime::now());
            say!("lockctl: {line}");
        }
        Err(error) if args.no_wait => return Err(error),
        // Waiting retries what is transient and reports the rest.
        Err(error) => tracing::debug!(lock = %name, %error, "first attempt failed; waiting"),
    }
    locker.lock(name, opts).await.map(Some)
}

/// Who holds `name`, as far as the store says within a second (nobody, if it cannot say:
/// the line is only informative, and the wait must not be held up for it).
async fn holders(backend: &Arc<dyn LockBackend>, name: &LockName) -> Vec<leaselock::LeaseInfo> {
    const PATIENCE: Duration = Duration::from_secs(1);
    match tokio::time::timeout(PATIENCE, backend.inspect_all(name)).await {
        Ok(Ok(holders)) => holders,
        Ok(Err(error)) => {
            tracing::debug!(lock = %name, %error, "cannot see who holds the lock");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}

async fn release(guard: LockGuard, name: &LockName) {
    match guard.release().await {
        Ok(true) => tracing::info!(lock = %name, "released"),
        Ok(false) => {
            say!("lockctl: the lease on lock \"{name}\" was already gone when the command finished")
        }
        Err(error) => {
            say!("lockctl: could not release lock \"{name}\" ({error}); its TTL will free it")
        }
    }
}

fn command_line(command: &[std::ffi::OsString]) -> String {
    const MAX: usize = 200;
    let mut line = command
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    if line.len() > MAX {
        let mut cut = MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}
