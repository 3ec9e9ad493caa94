//! The signals lockctl itself handles during `lockctl run`, as events, and the SIGCHLD
//! stream that tells it when its child exited.

use std::io;
use std::task::Poll;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::spawn::FORWARDED;
use super::syscalls;
use crate::error::CliError;

/// A signal lockctl received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// One of the signals passed on to the job (while waiting for the lock: the reason to
    /// give up).
    Forward {
        /// Its number.
        number: libc::c_int,
        /// Its name, for messages.
        name: &'static str,
    },
    /// SIGTSTP (Ctrl-Z): stop the job, then lockctl.
    Suspend,
    /// SIGCONT: lockctl runs again after a stop.
    Resumed,
}

/// lockctl's handlers, installed before it touches the store so a failure costs nothing.
pub(crate) struct Signals {
    streams: Vec<(Signal, Event)>,
}

impl Signals {
    /// Handles the forwarded signals, and with `job_control` SIGTSTP and SIGCONT too.
    pub(crate) fn install(job_control: bool) -> Result<Self, CliError> {
        let mut wanted: Vec<(libc::c_int, Event)> = FORWARDED
            .iter()
            .map(|&number| {
                let event = Event::Forward {
                    number,
                    name: name_of(number),
                };
                (number, event)
            })
            .collect();
        if job_control {
            wanted.push((libc::SIGTSTP, Event::Suspend));
            wanted.push((libc::SIGCONT, Event::Resumed));
        }
        let mut streams = Vec::with_capacity(wanted.len());
        for (number, event) in wanted {
            let stream = signal(SignalKind::from_raw(number))
                .map_err(|e| CliError::io(format!("cannot handle {}", name_of(number)), e))?;
            streams.push((stream, event));
        }
        Ok(Self { streams })
    }

    /// The next signal received. Cancel-safe: a signal is never lost by dropping the future.
    pub(crate) async fn next(&mut self) -> Event {
        std::future::poll_fn(|cx| {
            for (stream, event) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return Poll::Ready(*event);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// Tells when a child exited, leaving it unreaped.
pub(crate) struct ChildExits {
    sigchld: Signal,
}

impl ChildExits {
    /// Starts listening for SIGCHLD: do this before starting the child.
    pub(crate) fn install() -> Result<Self, CliError> {
        let sigchld =
            signal(SignalKind::child()).map_err(|e| CliError::io("cannot handle SIGCHLD", e))?;
        Ok(Self { sigchld })
    }

    /// Returns once child `pid` has exited. It is not reaped: its pid, and the group it
    /// leads, stay reserved until `Child::wait`. Cancel-safe.
    pub(crate) async fn exited(&mut self, pid: libc::pid_t) -> io::Result<()> {
        loop {
            // Checked after every SIGCHLD since the stream was made, so none is missed.
            if syscalls::exited_unreaped(pid)? {
                return Ok(());
            }
            if self.sigchld.recv().await.is_none() {
                // The signal driver is gone (the runtime is shutting down): poll instead.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The name of a signal lockctl handles.
pub(crate) fn name_of(number: libc::c_int) -> &'static str {
    match number {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGCONT => "SIGCONT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSTOP => "SIGSTOP",
        _ => "a signal",
    }
}
