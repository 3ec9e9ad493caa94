//! `lockctl run`: run a command while holding a lock.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use lock::{LeaseInfo, LockError, LockGuard, LockName, LockOptions, Locker, LossReason};
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::RunArgs;
use crate::exit;
use crate::signals;

/// The signals lockctl passes on to the command.
const FORWARDED: [(SignalKind, i32, &str); 4] = [
    (SignalKind::interrupt(), libc::SIGINT, "SIGINT"),
    (SignalKind::terminate(), libc::SIGTERM, "SIGTERM"),
    (SignalKind::hangup(), libc::SIGHUP, "SIGHUP"),
    (SignalKind::quit(), libc::SIGQUIT, "SIGQUIT"),
];

/// Runs the command under the lock and returns lockctl's exit code.
pub(crate) async fn run(args: RunArgs) -> Result<u8, LockError> {
    let name = LockName::new(&args.name)?;
    let mut signals = Signals::install()?;
    let (url, backend) = crate::store::open(args.store.url.as_deref()).await?;
    let locker = Locker::new(backend.clone());
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| command_line(&args.command));
    let mut opts = LockOptions::default().with_ttl(args.ttl).with_label(label);
    opts.wait = args.wait;
    opts.validate()?;

    let guard = tokio::select! {
        acquired = acquire(&locker, &name, &opts, args.no_wait) => acquired,
        (signal, signal_name) = signals.next() => {
            eprintln!("lockctl: {signal_name} while waiting for lock \"{name}\"; not running the command");
            return Ok(u8::try_from(128 + signal).unwrap_or(255));
        }
    };
    let guard = match guard {
        Ok(Some(guard)) => guard,
        Ok(None) | Err(LockError::Timeout { .. }) => {
            let holder = backend.inspect(&name).await.ok().flatten();
            eprintln!(
                "lockctl: {}",
                not_acquired_message(&name, args.no_wait, opts.wait, holder.as_ref())
            );
            return Ok(exit::NOT_ACQUIRED);
        }
        Err(error) => return Err(error),
    };
    tracing::info!(lock = %name, fence = guard.fence(), "acquired");

    let mut child = match spawn(&args, &guard, &url) {
        Ok(child) => child,
        Err(error) => {
            let code = match error.kind() {
                io::ErrorKind::NotFound => exit::NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            };
            eprintln!("lockctl: cannot run {:?}: {error}", args.command[0]);
            release(guard, &name).await;
            return Ok(code);
        }
    };
    match supervise(&mut child, &guard, &mut signals, args.grace).await {
        Ended::Exited(code) => {
            release(guard, &name).await;
            Ok(code)
        }
        Ended::LeaseLost => {
            // Already reported; release anyway in case the store was only unreachable.
            let _ = guard.release().await;
            Ok(exit::LEASE_LOST)
        }
    }
}

async fn acquire(
    locker: &Locker,
    name: &LockName,
    opts: &LockOptions,
    no_wait: bool,
) -> Result<Option<LockGuard>, LockError> {
    if no_wait {
        locker.try_lock(name, opts).await
    } else {
        locker.lock(name, opts).await.map(Some)
    }
}

fn spawn(args: &RunArgs, guard: &LockGuard, url: &str) -> io::Result<Child> {
    let mut command = Command::new(&args.command[0]);
    command
        .args(&args.command[1..])
        .env("LOCK_NAME", guard.name().as_str())
        .env("LOCK_FENCE", guard.fence().to_string())
        .env("LOCK_OWNER", guard.holder().token.to_hex())
        .env("LOCK_URL", url)
        .kill_on_drop(true);
    signals::kill_child_when_parent_dies(&mut command);
    command.spawn()
}

/// How the command's run ended.
enum Ended {
    /// It exited by itself (or by a forwarded signal): lockctl's exit code for that.
    Exited(u8),
    /// The lease was lost and the command was terminated.
    LeaseLost,
}

/// Waits for the child while forwarding signals; terminates it if the lease is lost.
async fn supervise(
    child: &mut Child,
    guard: &LockGuard,
    signals: &mut Signals,
    grace: Duration,
) -> Ended {
    let pid = child.id().unwrap_or(0);
    let lost = guard.lost();
    tokio::pin!(lost);
    loop {
        tokio::select! {
            status = child.wait() => return Ended::Exited(exit_code(status)),
            reason = &mut lost => {
                let why = match reason {
                    LossReason::Revoked => "it expired, was taken over or was force-released",
                    _ => "the lock store could not be reached before the lease deadline",
                };
                eprintln!(
                    "lockctl: lost the lease on lock \"{}\" ({why}); stopping the command (SIGTERM, SIGKILL after {})",
                    guard.name(),
                    humantime::format_duration(grace)
                );
                terminate(child, pid, grace).await;
                return Ended::LeaseLost;
            }
            (signal, signal_name) = signals.next() => {
                tracing::info!(signal = signal_name, pid, "forwarding signal to the command");
                if let Err(error) = signals::send(pid, signal) {
                    eprintln!("lockctl: could not forward {signal_name} to the command: {error}");
                }
            }
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`, then reap.
async fn terminate(child: &mut Child, pid: u32, grace: Duration) {
    let _ = signals::send(pid, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
}

fn exit_code(status: io::Result<ExitStatus>) -> u8 {
    match status {
        Ok(status) => exit::for_status(status),
        Err(error) => {
            eprintln!("lockctl: lost track of the command: {error}");
            exit::BACKEND_ERROR
        }
    }
}

async fn release(guard: LockGuard, name: &LockName) {
    match guard.release().await {
        Ok(true) => tracing::info!(lock = %name, "released"),
        Ok(false) => eprintln!(
            "lockctl: the lease on lock \"{name}\" was already gone when the command finished"
        ),
        Err(error) => {
            eprintln!("lockctl: could not release lock \"{name}\" ({error}); its TTL will free it")
        }
    }
}

fn not_acquired_message(
    name: &LockName,
    no_wait: bool,
    wait: Option<Duration>,
    holder: Option<&LeaseInfo>,
) -> String {
    let how = match (no_wait, wait) {
        (true, _) => "is held and --no-wait was given".to_owned(),
        (false, Some(wait)) => format!(
            "was not acquired within --wait {}",
            humantime::format_duration(wait)
        ),
        (false, None) => "was not acquired".to_owned(),
    };
    match holder {
        Some(info) => format!(
            "lock \"{name}\" {how}; held by \"{}\" (pid {} on {}, fence {}, {} left)",
            info.label,
            info.pid,
            info.host,
            info.fence,
            crate::status::format_left(info.time_left())
        ),
        None => format!("lock \"{name}\" {how}"),
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

/// The forwarded signals, as one stream.
struct Signals {
    streams: Vec<(Signal, i32, &'static str)>,
}

impl Signals {
    fn install() -> Result<Self, LockError> {
        let mut streams = Vec::new();
        for (kind, number, name) in FORWARDED {
            let stream = signal(kind)
                .map_err(|e| LockError::config("lockctl", format!("cannot handle {name}: {e}")))?;
            streams.push((stream, number, name));
        }
        Ok(Self { streams })
    }

    /// The next signal received: its number and name.
    async fn next(&mut self) -> (i32, &'static str) {
        std::future::poll_fn(|cx| {
            for (stream, number, name) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready((*number, *name));
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}
