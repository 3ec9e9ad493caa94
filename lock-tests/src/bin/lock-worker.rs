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
//!   gone before `with_lock` cancelled it (a fallback the tests expect never to fire).
//! - `summary <json>`: `cycles` finished; counts of cycles and errors by kind.
//! - `error <message>`: a lock or I/O error ended the worker.
//!
//! Exit codes: 0 done, 2 error, 3 cancelled, 4 lost-in-work.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use lock::{LockError, LockOptions, Locker};
use lock_conformance::history::{Event, Recorder, monotonic_nanos};
use tokio::io::{AsyncBufReadExt, BufReader};

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
}

fn main() {
    let cli = Cli::parse();
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(async {
            match cli.mode {
                Mode::Hold(args) => hold(args).await,
                Mode::Cycles(args) => cycles(args).await,
            }
        }),
        Err(e) => fail(&format!("cannot start a runtime: {e}")),
    };
    std::process::exit(code);
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(error: &dyn std::fmt::Display) -> i32 {
    say(&format!("error {error}"));
    EXIT_ERROR
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

async fn hold(args: Common) -> i32 {
    let locker = match lock::connect(&args.url).await {
        Ok(backend) => Locker::new(backend),
        Err(e) => return fail(&e),
    };
    let mut history = match Recorder::open(&args.history, &args.id) {
        Ok(history) => history,
        Err(e) => return fail(&format!("history {}: {e}", args.history.display())),
    };
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
            let mut stdin = BufReader::new(tokio::io::stdin()).lines();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tokio::select! {
                    line = stdin.next_line() => {
                        let line = line.ok().flatten();
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
        Ok(Ended::History(e)) => fail(&format!("history {}: {e}", args.history.display())),
        Err(LockError::LeaseLost { .. }) => {
            say(&format!("cancelled {steps}"));
            EXIT_CANCELLED
        }
        Err(e) => fail(&e),
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

async fn cycles(args: CycleArgs) -> i32 {
    let common = &args.common;
    let backend = match lock::connect(&common.url).await {
        Ok(backend) => backend,
        Err(e) => return fail(&e),
    };
    let locker = Locker::new(backend.clone());
    let history_error =
        |e: std::io::Error| fail(&format!("history {}: {e}", common.history.display()));
    let mut history = match Recorder::open(&common.history, &common.id) {
        Ok(history) => history,
        Err(e) => return history_error(e),
    };
    let ttl = Duration::from_millis(common.ttl_ms);
    let opts = LockOptions::default()
        .with_ttl(ttl)
        .with_wait(Duration::from_millis(args.wait_ms))
        .with_label(&common.id);
    let mut errors = Errors::default();
    let mut done = 0_u32;
    let mut slowest_wait = Duration::ZERO;
    let started = Instant::now();
    for cycle in 0..args.cycles {
        let name = if args.names > 1 {
            format!("{}-{}", common.name, cycle % args.names)
        } else {
            common.name.clone()
        };
        let asked = Instant::now();
        let guard = match locker.lock(name.as_str(), &opts).await {
            Ok(guard) => guard,
            Err(e) => {
                errors.count(&e);
                continue;
            }
        };
        slowest_wait = slowest_wait.max(asked.elapsed());
        let fence = guard.fence();
        if let Err(e) = history.record(&name, fence, Event::Start) {
            return history_error(e);
        }
        if let Err(e) = backend.heartbeat(&guard.lease(), ttl).await {
            errors.count(&e);
        }
        tokio::time::sleep(Duration::from_millis(args.hold_ms)).await;
        let held = match history.verified(&name, fence, Event::End, || guard.is_held()) {
            Ok(held) => held,
            Err(e) => return history_error(e),
        };
        match guard.release().await {
            Ok(true) if held => done += 1,
            Ok(_) => errors.lost += 1,
            Err(e) => errors.count(&e),
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
