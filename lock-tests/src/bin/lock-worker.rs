//! A lock client run as a separate process by the cross-process tests; see the crate docs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use lock::{Holder, LockError, LockName, LockOptions, Locker};
use lock_conformance::history::{Event, Recorder, monotonic_nanos};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Acquire (waiting), record work every few ms while held, release when stdin says
    /// `release`; exit 3 with `lost` if the lease is lost first.
    Hold(Common),
    /// Acquire once with `try_acquire` (no guard, no heartbeat), print it, then sleep until
    /// killed.
    HoldRaw(Common),
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let code = runtime.block_on(async {
        match cli.mode {
            Mode::Hold(args) => hold(args).await,
            Mode::HoldRaw(args) => hold_raw(args).await,
            Mode::Cycles(args) => cycles(args).await,
        }
    });
    std::process::exit(code);
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn fail(error: &LockError) -> i32 {
    say(&format!("error {error}"));
    2
}

async fn hold(args: Common) -> i32 {
    let locker = match lock::connect(&args.url).await {
        Ok(backend) => Locker::new(backend),
        Err(e) => return fail(&e),
    };
    let mut history = Recorder::open(&args.history, &args.id).expect("history file");
    let opts = LockOptions::default()
        .with_ttl(Duration::from_millis(args.ttl_ms))
        .with_wait(Duration::from_secs(60))
        .with_label(&args.id);
    let name = args.name.clone();
    let outcome = locker
        .with_lock_fn(args.name.as_str(), &opts, |lease| async move {
            let fence = lease.fence();
            history.record(&name, fence, Event::Start).expect("history");
            say(&format!("acquired {fence}"));
            let mut stdin = BufReader::new(tokio::io::stdin()).lines();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            loop {
                tokio::select! {
                    line = stdin.next_line() => {
                        let line = line.ok().flatten();
                        if line.as_deref().is_none_or(|l| l == "release") {
                            let _ = history.verified(&name, fence, Event::End, || lease.is_held());
                            return true;
                        }
                    }
                    _ = tick.tick() => {
                        if !history.verified(&name, fence, Event::Work, || lease.is_held()).expect("history") {
                            return false;
                        }
                    }
                }
            }
        })
        .await;
    match outcome {
        Ok(true) => {
            say(&format!("released {}", monotonic_nanos()));
            0
        }
        Ok(false) | Err(LockError::LeaseLost { .. }) => {
            say("lost");
            3
        }
        Err(e) => fail(&e),
    }
}

async fn hold_raw(args: Common) -> i32 {
    let backend = match lock::connect(&args.url).await {
        Ok(backend) => backend,
        Err(e) => return fail(&e),
    };
    let name = LockName::new(&args.name).expect("a valid name");
    let holder = Holder::current(&args.id);
    loop {
        let sent = monotonic_nanos();
        match backend
            .try_acquire(&name, &holder, Duration::from_millis(args.ttl_ms))
            .await
        {
            Ok(Some(lease)) => {
                say(&format!("acquired {} {sent}", lease.fence));
                break;
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return fail(&e),
        }
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    0
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

impl Errors {
    fn count(&mut self, error: &LockError) {
        let text = error.to_string();
        match error {
            LockError::LeaseLost { .. } => self.lost += 1,
            LockError::Timeout { .. } => self.timeout += 1,
            _ if text.contains("database is locked") || text.contains("busy") => self.busy += 1,
            _ => self.other += 1,
        }
        self.first.get_or_insert(text);
    }
}

async fn cycles(args: CycleArgs) -> i32 {
    let common = &args.common;
    let backend = match lock::connect(&common.url).await {
        Ok(backend) => backend,
        Err(e) => return fail(&e),
    };
    let locker = Locker::new(backend.clone());
    let mut history = Recorder::open(&common.history, &common.id).expect("history file");
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
        history.record(&name, fence, Event::Start).expect("history");
        if let Err(e) = backend.heartbeat(&guard.lease(), ttl).await {
            errors.count(&e);
        }
        tokio::time::sleep(Duration::from_millis(args.hold_ms)).await;
        let held = history
            .verified(&name, fence, Event::End, || guard.is_held())
            .expect("history");
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
