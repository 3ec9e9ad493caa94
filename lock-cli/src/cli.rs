//! Command-line arguments.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Lease locks from the shell: run a command while holding a lock, see who holds what,
/// break a stuck lock, check a store.
///
/// The lock store comes from --url, else $LOCK_URL, else an SQLite database in your state
/// directory ($XDG_STATE_HOME/lockctl/locks.db), created on first use.
#[derive(Debug, Parser)]
#[command(name = "lockctl", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Log what lockctl does (-v: debug, -vv: trace) on stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a command while holding a lock.
    ///
    /// The lease is heartbeated while the command runs. The command sees LOCK_NAME,
    /// LOCK_FENCE (the fencing token) and LOCK_OWNER (the owner token) in its environment.
    ///
    /// Exit status: the command's own (128+N if killed by signal N); 75 if the lock was not
    /// acquired (held with --no-wait, or --wait ran out); 76 if the lease was lost while the
    /// command ran (it then gets SIGTERM, and SIGKILL after --grace); 69 if the lock store
    /// failed; 78 for bad configuration (URL, name, TTL); 64 for bad arguments; 126/127 if the
    /// command cannot be run / is not found.
    ///
    /// SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to lockctl are forwarded to the command;
    /// the lease is released when it exits. If lockctl dies, even by SIGKILL, the command
    /// is killed too.
    Run(RunArgs),
    /// Show held locks: label, pid, host, fencing token, time left.
    Status(StatusArgs),
    /// Break a stuck lock (operator action). The next holder still gets a higher fence.
    Release(ReleaseArgs),
    /// Run the conformance suite against a live store, under a random name prefix so it
    /// never touches other locks.
    Conformance(ConformanceArgs),
    /// Measure the library next to a raw baseline on the same store: acquire+release pairs,
    /// hand-off between processes, contended throughput, heartbeat cost.
    Bench(crate::bench::BenchArgs),
    /// One contending process of `lockctl bench` (internal).
    #[command(hide = true)]
    BenchWorker(crate::bench::WorkerArgs),
}

/// Where the lock store is.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Lock store URL: sqlite:///abs/path.db, sqlite://rel/path.db, file:///abs/dir,
    /// redis://[user:password@]host[:port][/db], rediss://...
    #[arg(long, env = "LOCK_URL", value_name = "URL")]
    pub(crate) url: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,

    /// Lease time to live; heartbeated every third of it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) ttl: Duration,

    /// Give up after waiting this long for the lock (default: wait as long as it takes).
    #[arg(long, value_parser = parse_duration, conflicts_with = "no_wait")]
    pub(crate) wait: Option<Duration>,

    /// Do not wait: exit with status 75 at once if the lock is held.
    #[arg(long)]
    pub(crate) no_wait: bool,

    /// Text shown by `lockctl status` for this holder (default: the command line).
    #[arg(long)]
    pub(crate) label: Option<String>,

    /// After the lease is lost, how long the command has between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) grace: Duration,

    /// The lock name.
    pub(crate) name: String,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub(crate) command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,

    /// Show only this lock (default: every held lock).
    pub(crate) name: Option<String>,

    /// Print JSON (an array of held leases) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    #[command(flatten)]
    pub(crate) store: StoreArgs,

    /// Confirm breaking the lock whoever holds it. Required: without the owner token this is
    /// the only way to release someone else's lock.
    #[arg(long)]
    pub(crate) force: bool,

    /// The lock name.
    pub(crate) name: String,
}

#[derive(Debug, Args)]
pub(crate) struct ConformanceArgs {
    /// The store to check (required: this writes test locks, under a random prefix).
    #[arg(long, value_name = "URL")]
    pub(crate) url: String,

    /// Run only cases whose name contains this text.
    #[arg(long)]
    pub(crate) filter: Option<String>,

    /// How many cases run at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) jobs: usize,
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 30s, 5m, 1h)"))
}
