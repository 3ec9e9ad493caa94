//! A lock client run as a separate process by the cross-process tests; see the crate docs.
//!
//! Every line it prints on stdout is one event, so a test can tell exactly what happened:
//!
//! - `acquired <fence>`: `hold` got the lock and recorded the start of its section.
//! - `released <ns>`: `hold` was told to release, verified it still held the lease, and
//!   released it (`<ns>`: `CLOCK_MONOTONIC` after the release).
//! - `cancelled <steps> <last step ns>`: `with_lock` returned `LeaseLost`: the lease was lost
//!   and the locker cancelled the work. `<steps>` is how many work steps the work began,
//!   `<last step ns>` when it began the last one, so a test can check that no step ran after
//!   the loss.
//! - `lost-in-work <steps> <last step ns>`: the work's own `is_held()` check found the lease
//!   gone before `with_lock` cancelled it (when a SIGSTOP lands inside a work step, after
//!   `with_lock`'s own check of the lease).
//! - `summary <json>`: `cycles` finished; counts of cycles and errors by kind.
//! - `leading <fence>`: `lead` won its election's campaign.
//! - `waiting`: `wait` found the lock held (one `try_lock`, then a 300 ms `lock()`) and is
//!   about to call `lock()` for `--wait-ms`;
//!   then `timed-out <cpu µs>` when its wait ran out, or `acquired <fence>` (released at
//!   once); `<cpu µs>`: the CPU time (user + system) the process used while it waited.
//! - `error <kind> <message>`: an error ended the worker. `<kind>` is the [`LockError`]
//!   variant (`Config`, `Unavailable`, ...), or `Io` for the history file and `Runtime`.
//!
//! It never hangs on exit: stdin is read on a thread of its own, which the exit ends, and
//! the runtime is shut down without waiting for blocking tasks (see [`main`]).
//!
//! Exit codes: 0 done, 2 error, 3 cancelled, 4 lost-in-work.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use leaselock::{LockBackend, LockError, LockGuard, LockOptions, Locker};
use lock_testkit::history::{Event, Recorder, monotonic_nanos};
use tokio::sync::mpsc;

/// Exit code when a lock or I/O error ended the worker.
const EXIT_ERROR: i32 = 2;
/// Exit code when `with_lock` cancelled the work because the lease was lost.
const EXIT_CANCELLED: i32 = 3;
/// Exit code when the work itself noticed the loss before `with_lock` cancelled it.
const EXIT_LOST_IN_WORK: i32 = 4;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Acquire (waiting) with `Locker::with_lock_fn`, so the lease is heartbeated and its
    /// loss cancels the work; record a work step every few ms while held; release when stdin
    /// says `release` (or closes).
    Hold(Common),
    /// Run acquire / heartbeat / release cycles; print a JSON summary line.
    Cycles(CycleArgs),
    /// Wait for the lock with `Locker::lock` for `--wait-ms`; say what it cost.
    Wait(WaitArgs),
    /// Campaign in an `Election` on the name; say `leading <fence>` once leading, then lead
    /// until killed or until stdin closes (then resign).
    Lead(Common),
}

#[derive(Args)]
struct WaitArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    wait_ms: u64,
}

#[derive(Args)]
struct Common {
    #[arg(long)]
    url: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    ttl_ms: u64,
    #[arg(long)]
    history: PathBuf,
    #[arg(long)]
    id: String,
}

#[derive(Args)]
struct CycleArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    cycles: u32,
    /// Names to cycle over: `<name>-0` .. `<name>-(names-1)`, chosen by cycle number.
    #[arg(long, default_value_t = 1)]
    names: u32,
    #[arg(long, default_value_t = 1)]
    hold_ms: u64,
    #[arg(long, default_value_t = 60_000)]
    wait_ms: u64,
    /// Stall every Nth cycle (cycles N-1, 2N-1, ...): block the thread, heartbeats
    /// included, for `--stall-ms` while holding the lock, as a long GC pause or a blocking
    /// call would. 0: never.
    #[arg(long, default_value_t = 0)]
    stall_every: u32,
    #[arg(long, default_value_t = 0)]
    stall_ms: u64,
}

/// Runs the mode, then exits without waiting for the runtime's blocking tasks: dropping a
/// runtime waits for every blocking task to finish, and one can be stuck for good (a read
/// that never returns, a file lock another process keeps), so a worker whose work was
/// cancelled could otherwise never exit. Everything the modes start is awaited before they
/// return, so nothing is cut short.
fn main() {
    let cli = Cli::parse();
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(async {
                match cli.mode {
                    Mode::Hold(args) => hold(args).await,
                    Mode::Cycles(args) => cycles(args).await,
                    Mode::Wait(args) => wait(args).await,
                    Mode::Lead(args) => lead(args).await,
                }
            });
            runtime.shutdown_background();
            code
        }
        Err(e) => fail("Runtime", &format!("cannot start a runtime: {e}")),
    };
    std::process::exit(code);
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Reports an error of `kind` (one word) and returns the exit code for it.
fn fail(kind: &str, error: &dyn std::fmt::Display) -> i32 {
    say(&format!("error {kind} {error}"));
    EXIT_ERROR
}

/// Reports a lock error, with its variant as the kind.
fn fail_lock(error: &LockError) -> i32 {
    fail(error_kind(error), error)
}

/// Reports a failure to open or write the history file at `path`.
fn fail_history(path: &std::path::Path, error: &std::io::Error) -> i32 {
    fail("Io", &format!("history {}: {error}", path.display()))
}

/// The name of `error`'s variant, so a test can tell a `Config` error from the rest.
fn error_kind(error: &LockError) -> &'static str {
    match error {
        LockError::InvalidName { .. } => "InvalidName",
        LockError::InvalidTtl { .. } => "InvalidTtl",
        LockError::LeaseLost { .. } => "LeaseLost",
        LockError::Timeout { .. } => "Timeout",
        LockError::Unavailable { .. } => "Unavailable",
        LockError::Corrupt { .. } => "Corrupt",
        LockError::Config { .. } => "Config",
        LockError::Unsupported { .. } => "Unsupported",
        LockError::Backend { .. } => "Backend",
        _ => "Other",
    }
}

/// Lines of stdin, read on a thread of its own; the channel closes at end of input.
///
/// A read of stdin blocks until a line or end of input comes and cannot be cancelled.
/// `tokio::io::stdin` runs it on the runtime's blocking pool, where a read still pending
/// when `with_lock` cancelled the work would keep the runtime, and so the worker, from
/// ending while the parent keeps the pipe open. This thread is never joined: exiting the
/// process ends it.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (lines, received) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    received
}

/// How the work of `hold` ended.
enum Ended {
    /// Told to release, with the lease verified held just before.
    Released,
    /// Its own `is_held()` check failed.
    LostInWork,
    /// Writing the history failed.
    History(std::io::Error),
}

async fn lead(args: Common) -> i32 {
    let locker = match leaselock::connect(&args.url).await {
        Ok(backend) => Locker::new(backend),
        Err(e) => return fail_lock(&e),
    };
    let opts = LockOptions::default()
        .with_ttl(Duration::from_millis(args.ttl_ms))
        .with_label(&args.id);
    let election = match leaselock::Election::new(locker, args.name.as_str(), opts) {
        Ok(election) => election,
        Err(e) => return fail_lock(&e),
    };
    let leadership = match election.campaign().await {
        Ok(leadership) => leadership,
        Err(e) => return fail_lock(&e),
    };
    say(&format!("leading {}", leadership.fence()));
    let mut stdin = stdin_lines();
    while stdin.recv().await.is_some() {}
    match leadership.resign().await {
        Ok(_) => 0,
        Err(e) => fail_lock(&e),
    }
}

async fn wait(args: WaitArgs) -> i32 {
    let args_common = &args.common;
    let locker = match leaselock::connect(&args_common.url).await {
        Ok(backend) => Locker::new(backend),
        Err(e) => return fail_lock(&e),
    };
    let opts = LockOptions::default()
        .with_ttl(Duration::from_millis(args_common.ttl_ms))
        .with_wait(Duration::from_millis(args.wait_ms))
        .with_label(&args_common.id);
    // One attempt first, so that what is measured is the wait alone (not the first
    // statement's preparation, nor the connection's first use).
    match locker.try_lock(args_common.name.as_str(), &opts).await {
        Ok(Some(guard)) => {
            say(&format!("acquired {}", guard.fence()));
            return match guard.release().await {
                Ok(_) => 0,
                Err(e) => fail_lock(&e),
            };
        }
        Ok(None) => {}
        Err(e) => return fail_lock(&e),
    }
    // A short wait first, so that what is measured is waiting in the steady state, not the
    // first use of what a wait needs (its statements prepared, a blocking thread started).
    let warm_up = opts.clone().with_wait(Duration::from_millis(300));
    match locker.lock(args_common.name.as_str(), &warm_up).await {
        Err(LockError::Timeout { .. }) => {}
        Ok(guard) => {
            say(&format!("acquired {}", guard.fence()));
            return match guard.release().await {
                Ok(_) => 0,
                Err(e) => fail_lock(&e),
            };
        }
        Err(e) => return fail_lock(&e),
    }
    say("waiting");
    let cpu_before = lock_testkit::process::cpu_time();
    match locker.lock(args_common.name.as_str(), &opts).await {
        Ok(guard) => {
            say(&format!("acquired {}", guard.fence()));
            match guard.release().await {
                Ok(_) => 0,
                Err(e) => fail_lock(&e),
            }
        }
        Err(LockError::Timeout { .. }) => {
            let cpu = lock_testkit::process::cpu_time().saturating_sub(cpu_before);
            say(&format!("timed-out {}", cpu.as_micros()));
            0
        }
        Err(e) => fail_lock(&e),
    }
}

async fn hold(args: Common) -> i32 {
    let locker = match leaselock::connect(&args.url).await {
        Ok(backend) => Locker::new(backend),
        Err(e) => return fail_lock(&e),
    };
    let mut history = match Recorder::open(&args.history, &args.id) {
        Ok(history) => history,
        Err(e) => return fail_history(&args.history, &e),
    };
    let mut stdin = stdin_lines();
    let opts = LockOptions::default()
        .with_ttl(Duration::from_millis(args.ttl_ms))
        .with_wait(Duration::from_secs(60))
        .with_label(&args.id);
    let name = args.name.clone();
    // Work steps begun, and when the last one began: written by the work, read after it.
    let steps = Arc::new(AtomicU64::new(0));
    let last_step = Arc::new(AtomicU64::new(0));
    let (steps_seen, last_step_seen) = (Arc::clone(&steps), Arc::clone(&last_step));
    let outcome = locker
        .with_lock_fn(args.name.as_str(), &opts, |lease| async move {
            let fence = lease.fence();
            if let Err(e) = history.record(&name, fence, Event::Start) {
                return Ended::History(e);
            }
            say(&format!("acquired {fence}"));
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tokio::select! {
                    line = stdin.recv() => {
                        if line.as_deref().is_none_or(|l| l == "release") {
                            return match history.verified(&name, fence, Event::End, || lease.is_held()) {
                                Ok(true) => Ended::Released,
                                Ok(false) => Ended::LostInWork,
                                Err(e) => Ended::History(e),
                            };
                        }
                    }
                    _ = tick.tick() => {
                        // A step begins here: note it before anything else, so the test sees
                        // every step the work began, even one that then finds the lease gone.
                        last_step.store(monotonic_nanos(), Ordering::SeqCst);
                        steps.fetch_add(1, Ordering::SeqCst);
                        match history.verified(&name, fence, Event::Work, || lease.is_held()) {
                            Ok(true) => {}
                            Ok(false) => return Ended::LostInWork,
                            Err(e) => return Ended::History(e),
                        }
                    }
                }
            }
        })
        .await;
    let steps = format!(
        "{} {}",
        steps_seen.load(Ordering::SeqCst),
        last_step_seen.load(Ordering::SeqCst)
    );
    match outcome {
        Ok(Ended::Released) => {
            say(&format!("released {}", monotonic_nanos()));
            0
        }
        Ok(Ended::LostInWork) => {
            say(&format!("lost-in-work {steps}"));
            EXIT_LOST_IN_WORK
        }
        Ok(Ended::History(e)) => fail_history(&args.history, &e),
        Err(LockError::LeaseLost { .. }) => {
            say(&format!("cancelled {steps}"));
            EXIT_CANCELLED
        }
        Err(e) => fail_lock(&e),
    }
}

/// Errors seen by a cycling worker, by kind.
#[derive(Default)]
struct Errors {
    busy: u32,
    lost: u32,
    timeout: u32,
    other: u32,
    first: Option<String>,
}

/// Whether `error` or any error in its source chain is SQLite's "database is locked"
/// (`SQLITE_BUSY` / `SQLITE_LOCKED`), or the backend saying the store stayed busy.
fn is_busy(error: &LockError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let text = e.to_string().to_lowercase();
        if text.contains("database is locked")
            || text.contains("database table is locked")
            || text.contains("sqlite_busy")
            || text.contains("busy")
        {
            return true;
        }
        current = e.source();
    }
    false
}

impl Errors {
    fn count(&mut self, error: &LockError) {
        match error {
            LockError::LeaseLost { .. } => self.lost += 1,
            LockError::Timeout { .. } => self.timeout += 1,
            _ if is_busy(error) => self.busy += 1,
            _ => self.other += 1,
        }
        self.first.get_or_insert_with(|| error.to_string());
    }
}

/// How one cycle ended, when no error ended it.
enum Cycle {
    /// Held from acquisition to release, as verified before the release.
    Done,
    /// The lease was lost while held (a stall past its TTL, a late heartbeat).
    Lost,
}

/// What ended a cycle early.
enum CycleError {
    /// A lock operation failed.
    Lock(LockError),
    /// Writing the history failed: the run's evidence is incomplete, so the worker stops.
    History(std::io::Error),
}

impl From<LockError> for CycleError {
    fn from(error: LockError) -> Self {
        Self::Lock(error)
    }
}

impl From<std::io::Error> for CycleError {
    fn from(error: std::io::Error) -> Self {
        Self::History(error)
    }
}

/// One cycle's lock, store and history, and how to hold.
struct Cycler<'a> {
    locker: Locker,
    backend: Arc<dyn LockBackend>,
    history: Recorder,
    opts: LockOptions,
    args: &'a CycleArgs,
}

impl Cycler<'_> {
    /// Acquires `name`, runs its section and releases it; returns how long acquiring took
    /// (when it did) and how the cycle ended.
    async fn cycle(
        &mut self,
        name: &str,
        number: u32,
    ) -> (Option<Duration>, Result<Cycle, CycleError>) {
        let asked = Instant::now();
        let guard = match self.locker.lock(name, &self.opts).await {
            Ok(guard) => guard,
            Err(e) => return (None, Err(e.into())),
        };
        let waited = Some(asked.elapsed());
        let outcome = self.section(name, number, &guard).await;
        let released = guard.release().await;
        let outcome = match (outcome, released) {
            (Ok(Cycle::Done), Ok(true)) => Ok(Cycle::Done),
            (Ok(_), Ok(_)) => Ok(Cycle::Lost),
            (Ok(_), Err(e)) => Err(e.into()),
            (Err(e), _) => Err(e),
        };
        (waited, outcome)
    }

    /// The critical section: start (verified, so a holder descheduled past its TTL before
    /// it recorded the start records nothing), a heartbeat, the hold (or stall), the end.
    async fn section(
        &mut self,
        name: &str,
        number: u32,
        guard: &LockGuard,
    ) -> Result<Cycle, CycleError> {
        let fence = guard.fence();
        if !self
            .history
            .verified(name, fence, Event::Start, || guard.is_held())?
        {
            return Ok(Cycle::Lost);
        }
        let ttl = Duration::from_millis(self.args.common.ttl_ms);
        match self.backend.heartbeat(&guard.lease(), ttl).await {
            Ok(_) => {}
            Err(LockError::LeaseLost { .. }) => return Ok(Cycle::Lost),
            Err(e) => return Err(e.into()),
        }
        let every = self.args.stall_every;
        if every > 0 && number % every == every - 1 {
            // Deliberately blocks the runtime's only thread, so the guard cannot renew.
            std::thread::sleep(Duration::from_millis(self.args.stall_ms));
        } else {
            tokio::time::sleep(Duration::from_millis(self.args.hold_ms)).await;
        }
        let held = self
            .history
            .verified(name, fence, Event::End, || guard.is_held())?;
        Ok(if held { Cycle::Done } else { Cycle::Lost })
    }
}

async fn cycles(args: CycleArgs) -> i32 {
    let common = &args.common;
    let backend = match leaselock::connect(&common.url).await {
        Ok(backend) => backend,
        Err(e) => return fail_lock(&e),
    };
    let history = match Recorder::open(&common.history, &common.id) {
        Ok(history) => history,
        Err(e) => return fail_history(&common.history, &e),
    };
    let opts = LockOptions::default()
        .with_ttl(Duration::from_millis(common.ttl_ms))
        .with_wait(Duration::from_millis(args.wait_ms))
        .with_label(&common.id);
    let mut cycler = Cycler {
        locker: Locker::new(Arc::clone(&backend)),
        backend,
        history,
        opts,
        args: &args,
    };
    let mut errors = Errors::default();
    let mut done = 0_u32;
    let mut slowest_wait = Duration::ZERO;
    let started = Instant::now();
    for number in 0..args.cycles {
        let name = if args.names > 1 {
            format!("{}-{}", common.name, number % args.names)
        } else {
            common.name.clone()
        };
        let (waited, outcome) = cycler.cycle(&name, number).await;
        slowest_wait = slowest_wait.max(waited.unwrap_or_default());
        match outcome {
            Ok(Cycle::Done) => done += 1,
            Ok(Cycle::Lost) => errors.lost += 1,
            Err(CycleError::Lock(e)) => errors.count(&e),
            Err(CycleError::History(e)) => return fail_history(&common.history, &e),
        }
    }
    let summary = serde_json::json!({
        "id": common.id,
        "cycles": done,
        "busy": errors.busy,
        "lost": errors.lost,
        "timeout": errors.timeout,
        "other": errors.other,
        "first_error": errors.first,
        "slowest_wait_us": u64::try_from(slowest_wait.as_micros()).unwrap_or(u64::MAX),
        "elapsed_us": u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    });
    say(&format!("summary {summary}"));
    0
}
