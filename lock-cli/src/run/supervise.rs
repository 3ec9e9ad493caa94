//! Supervising a running job: pass signals on, stop it before its lease runs out or once it
//! is revoked, stop and resume it with lockctl on Ctrl-Z, and when it exits, kill whatever it
//! left behind in its process group.

use std::ffi::OsString;
use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use leaselock::{LockGuard, LossReason};
use tokio::time::sleep_until;

use super::process_group;
use super::signal_handlers::{ChildExits, Event, Signals, name_of};
use super::spawn::{self, Env};
use super::syscalls::{self, Target};

/// How often lockctl looks whether the processes it SIGKILLed are gone.
const MOP_UP_POLL: Duration = Duration::from_millis(5);
/// After this long, lockctl says which killed processes are still exiting.
const MOP_UP_PATIENCE: Duration = Duration::from_secs(1);
/// How long lockctl waits on Ctrl-Z for the job to stop before it stops itself (a process
/// in uninterruptible sleep stops only when it leaves it).
const STOP_PATIENCE: Duration = Duration::from_millis(500);

/// How the job's processes are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The default: a keeper leads a new process group with the command in it, and lockctl
    /// signals the whole group.
    Group,
    /// `--foreground`: the command is lockctl's direct child, in lockctl's own group.
    Foreground,
}

/// A started job.
pub(crate) struct Job {
    child: tokio::process::Child,
    pid: libc::pid_t,
    target: Target,
    mode: Mode,
}

impl Job {
    /// Starts `command` in `mode`, with `env` added to its environment.
    pub(crate) fn start(mode: Mode, command: &[OsString], env: &Env<'_>) -> io::Result<Self> {
        let child = match mode {
            Mode::Group => spawn::keeper(command, env)?,
            Mode::Foreground => spawn::foreground(command, env)?,
        };
        // Never guess a pid: kill(0, ..) would hit lockctl's own group.
        let id = child.id().ok_or_else(|| {
            io::Error::other("the command was reaped before lockctl could see its pid")
        })?;
        let target = match mode {
            Mode::Group => Target::group(id),
            Mode::Foreground => Target::process(id),
        };
        let (Some(target), Ok(pid)) = (target, libc::pid_t::try_from(id)) else {
            return Err(io::Error::other(format!(
                "the command got an unusable pid {id}"
            )));
        };
        Ok(Self {
            child,
            pid,
            target,
            mode,
        })
    }

    fn send(&self, signal: libc::c_int) {
        if let Err(error) = self.target.send(signal) {
            say!(
                "lockctl: could not send {} to the command: {error}",
                name_of(signal)
            );
        }
    }

    /// SIGSTOPs the job and waits until it is stopped, so that it never runs while lockctl
    /// (and the lease's heartbeat) is stopped.
    fn stop(&self) {
        self.send(libc::SIGSTOP);
        let stopped = match self.target {
            Target::Group(group) => process_group::wait_until_stopped(group, STOP_PATIENCE),
            // --foreground has no Ctrl-Z handler: the terminal stops lockctl and it together.
            Target::Process(_) => Ok(true),
        };
        match stopped {
            Ok(true) => {}
            Ok(false) => say!(
                "lockctl: the command's processes did not all stop within {}; stopping lockctl anyway",
                humantime::format_duration(STOP_PATIENCE)
            ),
            Err(error) => say!("lockctl: cannot check that the command stopped: {error}"),
        }
    }

    /// SIGTERM, then SIGCONT so that a stopped job can act on it.
    fn terminate(&self) {
        self.send(libc::SIGTERM);
        self.send(libc::SIGCONT);
    }

    /// After the job's first process exited: SIGKILLs what is left of its group and waits
    /// until none of it runs. The keeper is still unreaped, so the group id cannot have been
    /// reused by anyone else.
    async fn mop_up(&self) {
        let Target::Group(group) = self.target else {
            return;
        };
        let start = Instant::now();
        let mut first = true;
        let mut told = false;
        loop {
            self.send(libc::SIGKILL);
            let live = match process_group::live_members(group) {
                Ok(live) => live,
                Err(error) => {
                    say!(
                        "lockctl: cannot check that the command's processes are gone ({error}); they were sent SIGKILL"
                    );
                    return;
                }
            };
            if live.is_empty() {
                return;
            }
            if first {
                tracing::info!(count = live.len(), "killing what the command left running");
                first = false;
            }
            if !told && start.elapsed() >= MOP_UP_PATIENCE {
                say!(
                    "lockctl: processes {live:?} left by the command are still exiting after SIGKILL; keeping the lease until they are gone"
                );
                told = true;
            }
            tokio::time::sleep(MOP_UP_POLL).await;
        }
    }
}

/// How the job ended.
pub(crate) enum Ended {
    /// It exited by itself or by a forwarded signal, with this status (an error if lockctl
    /// lost track of it).
    Exited(io::Result<ExitStatus>),
    /// lockctl stopped it because of the lease.
    StoppedForLease,
}

/// Where the job stands with respect to its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Running under a live lease.
    Running,
    /// Sent SIGTERM because of the lease; SIGKILL follows at `kill_at`.
    Stopping { kill_at: Instant },
    /// Sent SIGKILL because of the lease.
    Killed,
}

/// Supervises `job` until it exits and nothing of it runs any more.
pub(crate) async fn supervise(
    mut job: Job,
    guard: &LockGuard,
    signals: &mut Signals,
    exits: &mut ChildExits,
    grace: Duration,
) -> Ended {
    let supervisor = Supervisor { guard, grace };
    let mut phase = Phase::Running;
    let lost = guard.lost();
    tokio::pin!(lost);
    loop {
        // Moves later with every renewal.
        let stop_at = guard
            .deadline()
            .checked_sub(grace)
            .unwrap_or_else(Instant::now);
        let kill_at = match phase {
            Phase::Stopping { kill_at } => kill_at,
            _ => stop_at,
        };
        tokio::select! {
            biased;
            exited = exits.exited(job.pid) => {
                if let Err(error) = exited {
                    say!("lockctl: cannot wait for the command: {error}");
                }
                break;
            }
            event = signals.next() => phase = supervisor.on_signal(&job, event, phase),
            reason = &mut lost, if phase == Phase::Running => {
                phase = supervisor.on_loss(&job, reason);
            }
            () = sleep_until(stop_at.into()), if phase == Phase::Running => {
                phase = supervisor.on_renewal_overdue(&job);
            }
            () = sleep_until(kill_at.into()), if matches!(phase, Phase::Stopping { .. }) => {
                job.send(libc::SIGKILL);
                phase = Phase::Killed;
            }
        }
    }
    job.mop_up().await;
    let status = job.child.wait().await;
    match phase {
        Phase::Running => Ended::Exited(status),
        Phase::Stopping { .. } | Phase::Killed => Ended::StoppedForLease,
    }
}

struct Supervisor<'a> {
    guard: &'a LockGuard,
    grace: Duration,
}

impl Supervisor<'_> {
    fn on_signal(&self, job: &Job, event: Event, phase: Phase) -> Phase {
        match event {
            Event::Forward { number, name } => {
                let from_terminal = matches!(number, libc::SIGINT | libc::SIGQUIT);
                if job.mode == Mode::Foreground && from_terminal {
                    tracing::debug!(
                        signal = name,
                        "not passing it on: with --foreground the terminal sends it to the command itself"
                    );
                } else {
                    tracing::info!(signal = name, target = ?job.target, "passing the signal on");
                    job.send(number);
                }
                phase
            }
            Event::Suspend => {
                tracing::info!(target = ?job.target, "Ctrl-Z: stopping the command, then lockctl");
                job.stop();
                syscalls::stop_self();
                // Here again once someone sent lockctl SIGCONT.
                self.on_resumed(job, phase)
            }
            Event::Resumed => self.on_resumed(job, phase),
        }
    }

    /// lockctl runs again: so does the job, unless its lease ran out meanwhile.
    fn on_resumed(&self, job: &Job, phase: Phase) -> Phase {
        if phase == Phase::Running && !self.guard.is_held() {
            say!(
                "lockctl: the lease on lock \"{}\" ran out while lockctl was stopped; killing the command without resuming it",
                self.guard.name()
            );
            job.send(libc::SIGKILL);
            return Phase::Killed;
        }
        job.send(libc::SIGCONT);
        phase
    }

    fn on_loss(&self, job: &Job, reason: LossReason) -> Phase {
        let name = self.guard.name();
        match reason {
            LossReason::Revoked => {
                say!(
                    "lockctl: lost the lease on lock \"{name}\" (it expired, was taken over or was force-released); stopping the command (SIGTERM, SIGKILL after {})",
                    humantime::format_duration(self.grace)
                );
                job.terminate();
                Phase::Stopping {
                    kill_at: Instant::now() + self.grace,
                }
            }
            // DeadlinePassed (Released cannot happen while lockctl holds the guard).
            _ => {
                say!(
                    "lockctl: lost the lease on lock \"{name}\" (its deadline passed before the lock store could renew it); killing the command"
                );
                job.send(libc::SIGKILL);
                Phase::Killed
            }
        }
    }

    /// The lease is `grace` from its deadline: unless a renewal just moved the deadline,
    /// ask the command to stop now and kill it at the deadline.
    fn on_renewal_overdue(&self, job: &Job) -> Phase {
        if !self.guard.is_held() {
            let reason = self
                .guard
                .loss_reason()
                .unwrap_or(LossReason::DeadlinePassed);
            return self.on_loss(job, reason);
        }
        let deadline = self.guard.deadline();
        let now = Instant::now();
        if now + self.grace < deadline {
            return Phase::Running; // renewed meanwhile
        }
        say!(
            "lockctl: the lease on lock \"{}\" could not be renewed and runs out in {}; stopping the command before it does (SIGTERM now, SIGKILL then)",
            self.guard.name(),
            humantime::format_duration(round_to_ms(deadline.saturating_duration_since(now)))
        );
        job.terminate();
        Phase::Stopping { kill_at: deadline }
    }
}

fn round_to_ms(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}
