//! Why lockctl ends without a status of its own command, and the exit code for each reason.
//!
//! Failures of the lock library and the store arrive as [`LockError`] and are kept as they
//! are ([`CliError::Lock`]). Everything else that ends lockctl is a variant of its own, so
//! the exit code follows from the variant and no message is ever parsed.

use std::ffi::OsString;
use std::io;
use std::time::Duration;

use leaselock::{LeaseInfo, LockError, LockName};

use crate::exit;

/// An error that ends a lockctl subcommand.
///
/// Each message is one line that says what to do; `main` prints it after `lockctl: ` and
/// exits with [`CliError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// A bad use of the command line that clap cannot tell by itself: a `conformance
    /// --filter` that matches no case, a `keeper --parent` that is not a pid. Exit 64.
    #[error("{0}")]
    Usage(String),

    /// lockctl's own options cannot be used as given: `--grace` over half of `--ttl`,
    /// `release` without `--force`, a store `bench` has no baseline for. Exit 78.
    #[error("{0}")]
    Config(String),

    /// No `--url` or `LOCK_URL` was given, and the default store cannot be used. Exit 78.
    #[error("{reason}; pass --url or set LOCK_URL")]
    NoDefaultStore {
        /// Why there is no default store.
        reason: String,
    },

    /// `run`: the lock is held, and `--no-wait` was given or `--wait` ran out. Exit 75.
    #[error("{}", not_acquired(.name, *.no_wait, .wait, .holder))]
    NotAcquired {
        /// The lock.
        name: LockName,
        /// Whether `--no-wait` was given.
        no_wait: bool,
        /// `--wait`, if given.
        wait: Option<Duration>,
        /// Who held the lock when lockctl gave up, if it could see.
        holder: Option<Box<LeaseInfo>>,
    },

    /// `run`: a signal arrived while lockctl waited for the lock; the command never ran.
    /// Exit 128 + the signal's number.
    #[error("{signal} while waiting for lock \"{name}\"; not running the command")]
    Interrupted {
        /// The lock that was waited for.
        name: LockName,
        /// The signal's name.
        signal: &'static str,
        /// The signal's number.
        number: libc::c_int,
    },

    /// `run`: the command could not be started (by lockctl with `--foreground`, else by the
    /// keeper). Exit 127 when it was not found, else 126.
    #[error("cannot run {command:?}: {source}")]
    CannotRun {
        /// The program.
        command: OsString,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },

    /// `run`: the keeper, the lockctl process that leads the job's process group, could not
    /// be started or could not set itself up. Exit 126: the command cannot be run as
    /// documented.
    #[error("{what}: {source}")]
    Keeper {
        /// What failed.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// An operating-system call of lockctl's own failed: starting its async runtime,
    /// handling a signal, waiting for a child process. Exit 69.
    #[error("{what}: {source}")]
    Io {
        /// What lockctl was doing.
        what: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// `bench` could not complete a measurement: a worker process failed, the raw baseline
    /// failed, a bench lock was held by someone else. Exit 69.
    #[error("bench: {0}")]
    Bench(String),

    /// The lock library or the store failed. Exit 75 for [`LockError::Timeout`], 76 for
    /// [`LockError::LeaseLost`], 78 for a bad name, TTL or store configuration, else 69.
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl CliError {
    /// The exit code lockctl ends with for this error (documented in lock-cli's README and
    /// in `lockctl run --help`).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Config(_) | Self::NoDefaultStore { .. } => exit::CONFIG_ERROR,
            Self::NotAcquired { .. } => exit::NOT_ACQUIRED,
            Self::Interrupted { number, .. } => exit::for_signal(*number),
            Self::CannotRun { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                exit::NOT_FOUND
            }
            Self::CannotRun { .. } | Self::Keeper { .. } => exit::CANNOT_EXECUTE,
            Self::Io { .. } | Self::Bench(_) => exit::BACKEND_ERROR,
            Self::Lock(error) => match error {
                LockError::Timeout { .. } => exit::NOT_ACQUIRED,
                LockError::LeaseLost { .. } => exit::LEASE_LOST,
                LockError::InvalidName { .. }
                | LockError::InvalidTtl { .. }
                | LockError::Config { .. } => exit::CONFIG_ERROR,
                _ => exit::BACKEND_ERROR,
            },
        }
    }

    /// An [`Io`](Self::Io) error: `what` lockctl was doing when `source` happened.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// The message of [`CliError::NotAcquired`].
fn not_acquired(
    name: &LockName,
    no_wait: bool,
    wait: &Option<Duration>,
    holder: &Option<Box<LeaseInfo>>,
) -> String {
    let how = match (no_wait, wait) {
        (true, _) => "is held and --no-wait was given".to_owned(),
        (false, Some(wait)) => format!(
            "was not acquired within --wait {}",
            humantime::format_duration(*wait)
        ),
        (false, None) => "was not acquired".to_owned(),
    };
    match holder {
        Some(info) => format!(
            "lock \"{name}\" {how}; held by {}",
            crate::status::describe_holder(info, std::time::SystemTime::now())
        ),
        None => format!("lock \"{name}\" {how}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn name() -> LockName {
        LockName::new("nightly").unwrap()
    }

    fn os_error(kind: io::ErrorKind) -> io::Error {
        io::Error::new(kind, "from the test")
    }

    /// Asserts the code and that the message is one line.
    #[track_caller]
    fn assert_exit(error: CliError, code: u8) {
        assert_eq!(error.exit_code(), code, "{error:?}");
        let message = error.to_string();
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "{message:?}"
        );
    }

    #[test]
    fn usage_is_64() {
        assert_exit(CliError::Usage("--filter \"x\" matches no case".into()), 64);
    }

    #[test]
    fn lockctls_own_bad_configuration_is_78() {
        assert_exit(CliError::Config("add --force to confirm".into()), 78);
        let error = CliError::NoDefaultStore {
            reason: "neither XDG_STATE_HOME nor HOME is set".into(),
        };
        assert!(error.to_string().ends_with("; pass --url or set LOCK_URL"));
        assert_exit(error, 78);
    }

    #[test]
    fn not_acquired_is_75_and_names_the_holder() {
        let holder = LeaseInfo::new(
            name(),
            "the holder",
            42,
            "web1",
            7,
            SystemTime::now(),
            SystemTime::now() + Duration::from_secs(20),
        );
        let error = CliError::NotAcquired {
            name: name(),
            no_wait: true,
            wait: None,
            holder: Some(Box::new(holder)),
        };
        let message = error.to_string();
        assert!(
            message.starts_with("lock \"nightly\" is held and --no-wait was given; held by \"the holder\" (pid 42 on web1, fence 7, "),
            "{message}"
        );
        assert_exit(error, 75);
        let error = CliError::NotAcquired {
            name: name(),
            no_wait: false,
            wait: Some(Duration::from_millis(300)),
            holder: None,
        };
        assert_eq!(
            error.to_string(),
            "lock \"nightly\" was not acquired within --wait 300ms"
        );
        assert_exit(error, 75);
    }

    #[test]
    fn a_signal_while_waiting_is_128_plus_the_signal() {
        let error = CliError::Interrupted {
            name: name(),
            signal: "SIGTERM",
            number: libc::SIGTERM,
        };
        assert_eq!(
            error.to_string(),
            "SIGTERM while waiting for lock \"nightly\"; not running the command"
        );
        assert_exit(error, 128 + 15);
        let error = CliError::Interrupted {
            name: name(),
            signal: "SIGINT",
            number: libc::SIGINT,
        };
        assert_exit(error, 128 + 2);
    }

    #[test]
    fn a_command_not_found_is_127_and_one_that_cannot_run_is_126() {
        let cannot_run = |kind| CliError::CannotRun {
            command: "/no/such/command".into(),
            source: os_error(kind),
        };
        assert_exit(cannot_run(io::ErrorKind::NotFound), 127);
        assert_exit(cannot_run(io::ErrorKind::PermissionDenied), 126);
        assert_exit(cannot_run(io::ErrorKind::Other), 126);
        let keeper = CliError::Keeper {
            what: "cannot start its keeper process (/proc/self/exe)",
            // Even "not found": it is lockctl's own binary that is missing, not the command.
            source: os_error(io::ErrorKind::NotFound),
        };
        assert_exit(keeper, 126);
    }

    #[test]
    fn lockctls_own_os_failures_and_bench_failures_are_69() {
        assert_exit(
            CliError::io("lost track of the command", os_error(io::ErrorKind::Other)),
            69,
        );
        let bench = CliError::Bench("a worker failed: exit status: 1".into());
        assert_eq!(bench.to_string(), "bench: a worker failed: exit status: 1");
        assert_exit(bench, 69);
    }

    #[test]
    fn library_errors_keep_their_message_and_map_by_kind() {
        let waited = Duration::from_secs(1);
        for (error, code) in [
            (
                LockError::Timeout {
                    name: name(),
                    waited,
                },
                75,
            ),
            (LockError::LeaseLost { name: name() }, 76),
            (LockName::new("").unwrap_err(), 78),
            (
                LockError::InvalidTtl {
                    ttl: Duration::ZERO,
                    reason: "zero",
                },
                78,
            ),
            (LockError::config("redis", "bad URL"), 78),
            (LockError::unavailable("redis", "connection refused"), 69),
            (LockError::corrupt("file", "bad record"), 69),
            (LockError::backend("sqlite", "disk I/O error"), 69),
            (
                LockError::Unsupported {
                    backend: "file",
                    operation: "list",
                },
                69,
            ),
        ] {
            let message = error.to_string();
            let wrapped = CliError::from(error);
            assert_eq!(wrapped.to_string(), message, "shown as the library says it");
            assert_exit(wrapped, code);
        }
    }
}
