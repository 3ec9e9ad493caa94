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
    /// LOCK_FENCE (the fencing token), LOCK_OWNER (the owner token) and LOCK_URL in its
    /// environment.
    ///
    /// The job is the command's whole process group: the command runs in a new process group
    /// (led by a small lockctl helper, the keeper), every signal goes to the whole group, and
    /// when the command exits, whatever it left running in the group is SIGKILLed before the
    /// lease is released (like systemd's KillMode=control-group). A process that leaves the
    /// group on purpose (setsid, a daemon) escapes this. If lockctl dies, even by SIGKILL, the
    /// whole group is killed.
    ///
    /// SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to lockctl are passed on to the group, once
    /// (Ctrl-C reaches only lockctl, which passes it on); the lease is released once the
    /// command exits. Ctrl-Z (SIGTSTP) stops the group, then lockctl; `fg` resumes both, unless
    /// the lease ran out meanwhile: then the group is killed. Being outside the terminal's
    /// foreground group, the command cannot read from the terminal: see --foreground.
    ///
    /// If lockctl dies (even by SIGKILL, or the OOM killer) on a single-host store (SQLite, a
    /// lock directory), the next waiter takes the lock over as soon as the whole job is gone
    /// (the keeper kills it at once), with a higher fence: the job inherits lockctl's hold on
    /// the store (an open file, as flock(1)'s command inherits its lock), which the kernel
    /// drops when the last of them dies. A process of the job that escapes its group keeps
    /// it: then the TTL decides. On Redis and PostgreSQL the lease stays until its TTL (--ttl)
    /// runs out. A stopped (SIGSTOP) lockctl keeps its lease until the TTL on every store.
    ///
    /// When the lease has not been renewed and runs out in --grace, the command gets SIGTERM,
    /// and SIGKILL when it runs out. When the store revokes it (force-release, takeover), the
    /// command gets SIGTERM at once and SIGKILL --grace later; fencing tokens cover that window.
    ///
    /// Exit status: the command's own (128+N if killed by signal N); 75 if the lock was not
    /// acquired (held with --no-wait, or --wait ran out); 76 if the command was stopped because
    /// of the lease; 69 if the lock store failed; 78 for bad configuration (URL, name, TTL,
    /// --grace); 64 for bad arguments; 126/127 if the command cannot be run / is not found;
    /// 128+N if signal N arrived while waiting for the lock (the command never ran). A command
    /// can itself exit with 69, 75 or 76 (as with timeout's 124): lockctl's own cases always
    /// print a line on stderr.
    Run(RunArgs),
    /// Show held locks: one row per holder (every permit of a semaphore), with label, pid,
    /// host, fencing token, limit, role and time left. The leader of an election on a name is
    /// that name's holder, shown with the role "leader".
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
    /// The leader of a `lockctl run` job's process group (internal; see run/keeper.rs).
    #[command(hide = true)]
    Keeper(KeeperArgs),
}

/// Where the lock store is.
#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// Lock store URL: sqlite:///abs/path.db, sqlite://rel/path.db, file:///abs/dir,
    /// redis://user:password@host:port/db (all but the host optional), rediss://...
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

    /// Let up to N commands hold NAME at once (a counting semaphore): each run takes one of N
    /// permits, with its own fence. Every run of one name must pass the same N.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(lock_core::MAX_PERMITS)))]
    pub(crate) limit: u32,

    /// Keep the lock at least this long after it was acquired, even if the command finishes
    /// sooner (ShedLock's lockAtLeastFor: a job started by cron on several hosts runs once per
    /// period even when their clocks differ a little). lockctl still exits when the command
    /// does; the store frees the lock when the hold ends (at most a tenth of --ttl, and 1s,
    /// later).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub(crate) hold_at_least: Option<Duration>,

    /// When the lease cannot be renewed: how long before it runs out the command gets
    /// SIGTERM (SIGKILL comes when it runs out). When the lease is revoked: the time between
    /// SIGTERM and SIGKILL. Default: the smaller of 10s and a quarter of --ttl; at most half
    /// of --ttl (more would stop commands between two normal renewals).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub(crate) grace: Option<Duration>,

    /// Run the command as a plain child in lockctl's own process group (as GNU timeout's
    /// --foreground): it can read from the terminal and gets Ctrl-C and Ctrl-Z from it
    /// directly. Then only the command itself is signalled: SIGTERM and SIGHUP are passed on,
    /// SIGINT and SIGQUIT are not (the terminal sends them to the command already), and
    /// processes it starts are not killed with it, so they can run on after the lease is
    /// released.
    #[arg(long)]
    pub(crate) foreground: bool,

    /// Print nothing of lockctl's own on stderr but errors: no line saying whom lockctl waits
    /// for when the lock is held
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// The lock name.
    pub(crate) name: String,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub(crate) command: Vec<OsString>,
}

/// Arguments of the hidden `lockctl keeper`.
#[derive(Debug, Args)]
pub(crate) struct KeeperArgs {
    /// The pid of the lockctl that started this keeper.
    #[arg(long)]
    pub(crate) parent: u32,

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

    /// Print JSON (an array of held leases, one per holder) instead of a table.
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

    /// Run only cases whose name contains this text (matching none is a usage error, 64).
    #[arg(long)]
    pub(crate) filter: Option<String>,

    /// How many cases run at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) jobs: usize,
}

/// A duration flag, written the way every store URL writes one (`500ms`, `30s`, `5m`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    lock_core::backend_kit::config::parse_duration(text)
}

/// Where every store URL and its options are documented: `leaselock::connect`.
pub(crate) const URL_DOCS: &str = "https://docs.rs/leaselock/latest/leaselock/fn.connect.html";

/// The `--url` help's last paragraph, generated from the schemes compiled into this build
/// (the facade's driver registry), so it cannot drift from what `lockctl` serves.
pub(crate) fn url_help() -> String {
    let schemes: Vec<String> = leaselock::supported_schemes()
        .iter()
        .map(|s| format!("{s}://"))
        .collect();
    format!(
        "This build serves {}. Every URL form and its options: {URL_DOCS}",
        schemes.join(", ")
    )
}

/// The command line, with each `--url` flag's long help ending in [`url_help`].
pub(crate) fn command() -> clap::Command {
    let extra = url_help();
    let with_url_help = |arg: clap::Arg| {
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        arg.long_help(format!("{help}\n\n{extra}"))
    };
    let mut root = <Cli as clap::CommandFactory>::command();
    for (sub, id) in [
        ("run", "url"),
        ("status", "url"),
        ("release", "url"),
        ("conformance", "url"),
        ("bench", "urls"),
    ] {
        root = root.mut_subcommand(sub, |cmd| cmd.mut_arg(id, with_url_help));
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_flag_lists_the_schemes_this_build_serves() {
        let mut root = command();
        root.build();
        for sub in ["run", "status", "release", "conformance", "bench"] {
            let cmd = root.find_subcommand(sub).expect(sub);
            let url = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some("url"))
                .unwrap_or_else(|| panic!("{sub} has --url"));
            let help = url.get_long_help().expect("long help").to_string();
            for scheme in leaselock::supported_schemes() {
                assert!(help.contains(&format!("{scheme}://")), "{sub}: {help}");
            }
            assert!(help.contains(URL_DOCS), "{sub}: {help}");
        }
    }
}
