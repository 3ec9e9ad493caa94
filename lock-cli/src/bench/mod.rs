//! `lockctl bench`: the library next to a raw baseline on the same store, in one run.
//!
//! 1. uncontended acquire + release pairs through the backend (`try_acquire` + `release`),
//!    interleaved in blocks with the raw baseline so machine noise hits both alike;
//! 2. hand-off latency between processes (2, 8 and 32 contending `lockctl bench-worker`s),
//!    and the acquire attempts they made per acquisition; on a single-host store, next to
//!    the same processes taking turns with a bare `flock` (what `flock(1)` waiters do), and
//!    with a bare `flock` and each turn's lease taken and freed in the store the raw way (the
//!    floor of a hand-off that records its lease in that store);
//! 3. contended throughput: 8 processes looping for 1 s without a pause on one name (and
//!    how evenly they were served while all ran) and on 8 names;
//! 4. heartbeat cost: many leases held through `Locker` for a while.
//!
//! With `--handoff-steps`, each hand-off is also cut into its steps (see [`steps`]).

mod heartbeat;
mod raw;
mod stats;
mod steps;
mod worker;

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use leaselock::{Holder, LockBackend, LockName};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

pub(crate) use worker::{WorkerArgs, worker};

use crate::error::CliError;

use raw::RawPair;
use stats::Samples;
use worker::Events;

/// Arguments of `lockctl bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Stores to measure (repeatable). Default: the lockctl default store. Bench locks use
    /// a random name prefix; SQLite gets a `bench_raw_leases` table for the baseline, dropped
    /// at the end; single-host stores get a `lockctl-bench-*.flock` file next to them for
    /// the hand-off baselines (a bare `flock`, and a bare `flock` with the raw baseline's
    /// lease written on each side), removed at the end, as is a lock directory's
    /// `bench-raw-*.lease` record.
    #[arg(long = "url", value_name = "URL")]
    urls: Vec<String>,

    /// Small counts and short durations: a smoke run of a few seconds.
    #[arg(long)]
    quick: bool,

    /// Acquire + release pairs per measurement (library and raw each).
    #[arg(long)]
    pairs: Option<usize>,

    /// Leases held for the heartbeat cost.
    #[arg(long)]
    leases: Option<usize>,

    /// How long the leases are held for the heartbeat cost.
    #[arg(long, value_parser = crate::cli::parse_duration)]
    duration: Option<Duration>,

    /// TTL of the leases held for the heartbeat cost. Each is renewed every TTL / 3, so
    /// the cost scales with leases / TTL. Default: the library's default TTL (30 s); 3 s
    /// with --quick.
    #[arg(long, value_parser = crate::cli::parse_duration)]
    heartbeat_ttl: Option<Duration>,

    /// Print the results as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,

    /// Also show where each hand-off's time goes: the release call, the waiter's wake-up,
    /// its successful attempt and the library's work around them (p50 of each step). The
    /// workers then record each store call's times, which adds a little to every hand-off.
    #[arg(long)]
    handoff_steps: bool,
}

/// Prints progress on stderr: one line rewritten in place on a terminal, else a line now and
/// then.
pub(crate) struct Progress {
    tty: bool,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: Instant::now() - Duration::from_secs(60),
        }
    }

    pub(crate) fn update(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{text}");
        } else if self.last.elapsed() >= Duration::from_secs(5) {
            let _ = writeln!(err, "{text}");
            self.last = Instant::now();
        }
        let _ = err.flush();
    }

    fn done(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{text}");
        self.last = Instant::now();
    }
}

struct Plan {
    pairs: usize,
    blocks: usize,
    handoff_cycles: u32,
    /// How long the processes of a throughput measurement loop.
    throughput_for: Duration,
    leases: usize,
    hold: Duration,
    heartbeat_ttl: Duration,
    /// Whether hand-off workers record their store calls (`--handoff-steps`).
    handoff_steps: bool,
}

impl Plan {
    fn new(args: &BenchArgs) -> Self {
        let quick = args.quick;
        Self {
            pairs: args.pairs.unwrap_or(if quick { 200 } else { 5_000 }),
            blocks: 10,
            handoff_cycles: if quick { 8 } else { 100 },
            throughput_for: Duration::from_millis(if quick { 100 } else { 1000 }),
            leases: args.leases.unwrap_or(if quick { 200 } else { 10_000 }),
            hold: args
                .duration
                .unwrap_or(Duration::from_secs(if quick { 2 } else { 60 })),
            // A quick run is too short to see leases of the default TTL renewed.
            heartbeat_ttl: args.heartbeat_ttl.unwrap_or_else(|| {
                if quick {
                    Duration::from_secs(3)
                } else {
                    leaselock::LockOptions::default().ttl
                }
            }),
            handoff_steps: args.handoff_steps,
        }
    }
}

/// Runs the benchmark; returns the exit code.
pub(crate) async fn bench(args: BenchArgs) -> Result<u8, CliError> {
    let plan = Plan::new(&args);
    let urls = if args.urls.is_empty() {
        vec![crate::store::open(None).await?.0]
    } else {
        args.urls.clone()
    };
    let mut progress = Progress::new();
    let mut results = Vec::new();
    for url in &urls {
        results.push(bench_store(url, &plan, &mut progress).await?);
    }
    if args.json {
        outln!("{}", serde_json::Value::Array(results));
    } else {
        print_table(&results);
    }
    Ok(0)
}

async fn bench_store(
    url: &str,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<serde_json::Value, CliError> {
    let backend = leaselock::connect(url).await?;
    let prefix = format!("lockctl-bench-{:08x}/", rand::random::<u32>());
    progress.done(&format!("benchmarking {url}"));

    let (library, raw) = pairs(url, &backend, &prefix, plan, progress).await?;
    let ratio = library.quantile_us(0.5) / raw.quantile_us(0.5);
    progress.done(&format!(
        "  pair: library p50 {:.1} us, raw p50 {:.1} us, ratio {ratio:.2}",
        library.quantile_us(0.5),
        raw.quantile_us(0.5)
    ));

    let mut handoff = serde_json::Map::new();
    let raw_flock = raw::handoff_flock_file(url)?;
    for waiters in [2, 8, 32] {
        progress.update(&format!("handoff: {waiters} processes"));
        let name = format!("{prefix}handoff-{waiters}");
        // 32 processes take turns four times fewer each, so the section takes as long as
        // the others' (each turn is 30 ms).
        let cycles = if waiters > 8 {
            plan.handoff_cycles.div_ceil(4)
        } else {
            plan.handoff_cycles
        };
        let loops = Loops {
            cycles,
            for_: Duration::ZERO,
        };
        // Each holder keeps the lock 30 ms, then pauses 20 ms before asking again: the
        // others are already waiting when it releases, and the releaser cannot take the
        // lock back before a waiter that is 20 ms late.
        let hold_pause = (30_000, 20_000);
        let library = Worker::Library {
            steps: plan.handoff_steps,
        };
        let (events, _) =
            run_workers(url, waiters, |_| name.clone(), loops, hold_pause, library).await?;
        let samples = handoff_samples(&events);
        // Every acquisition but each process's first few is a hand-off; count attempts per
        // acquisition (a woken waiter's successful one included).
        let acquisitions: usize = events.iter().map(|e| e.acquired.len()).sum();
        let attempts: u64 = events.iter().map(|e| e.attempts).sum();
        let per_acquisition = attempts as f64 / acquisitions.max(1) as f64;
        progress.done(&format!(
            "  handoff with {waiters} processes: p50 {:.0} us, p99 {:.0} us ({} hand-offs), \
             {per_acquisition:.2} acquire attempts per acquisition",
            samples.quantile_us(0.5),
            samples.quantile_us(0.99),
            samples.len()
        ));
        let mut entry = json!({
            "count": samples.len(),
            "p50_us": samples.quantile_us(0.5),
            "p99_us": samples.quantile_us(0.99),
            "acquisitions": acquisitions,
            "attempts": attempts,
            "attempts_per_acquisition": per_acquisition,
        });
        if plan.handoff_steps {
            let steps = steps::summary(&events, &worker::handoffs(&events));
            progress.done(&format!("    {}", steps::describe(&steps)));
            entry["steps"] = steps;
        }
        if let Some(file) = &raw_flock {
            let turns = Turns {
                url,
                waiters,
                name: &name,
                loops,
                hold_pause,
            };
            // The same processes, cycles and holds with a bare blocking `flock` (what
            // `flock(1)` waiters do): the floor this machine puts under a hand-off.
            let flock = Worker::RawFlock(file.path());
            let (floor, ratio) =
                handoff_floor(&turns, flock, "raw flock", &samples, progress).await?;
            entry["raw_flock"] = floor;
            entry["ratio_p50"] = json!(ratio);
            // And with each turn's lease written to the store the raw way: the floor of a
            // hand-off that records its lease in this store.
            let store = Worker::RawStore(file.path());
            let (floor, ratio) =
                handoff_floor(&turns, store, "raw store", &samples, progress).await?;
            entry["raw_store"] = floor;
            entry["ratio_store_p50"] = json!(ratio);
        }
        handoff.insert(format!("processes_{waiters}"), entry);
    }

    if let Some(file) = raw_flock {
        RawPair::connect_to(url, &file.record())
            .await?
            .cleanup()
            .await;
    }

    let mut throughput = serde_json::Map::new();
    for names in [1_usize, 8] {
        progress.update(&format!("throughput: 8 processes on {names} name(s)"));
        let (events, elapsed) = run_workers(
            url,
            8,
            |i| format!("{prefix}tp{names}-{}", i % names),
            Loops {
                cycles: u32::MAX,
                for_: plan.throughput_for,
            },
            (0, 0),
            Worker::Library { steps: false },
        )
        .await?;
        let total: usize = events.iter().map(|e| e.acquired.len()).sum();
        let per_sec = total as f64 / elapsed.as_secs_f64();
        // On one name: how evenly the processes, looping without a pause, were served.
        let (least, most) = if names == 1 {
            worker::served(&events)
        } else {
            (0, 0)
        };
        progress.done(&format!(
            "  throughput, 8 processes on {names} name(s): {per_sec:.0} acquisitions/s{}",
            if names == 1 {
                format!(", served {least} to {most} times each while all ran")
            } else {
                String::new()
            }
        ));
        throughput.insert(
            format!("names_{names}"),
            json!({
                "processes": 8,
                "acquisitions": total,
                "seconds": elapsed.as_secs_f64(),
                "per_sec": per_sec,
                "served_least": least,
                "served_most": most,
            }),
        );
    }

    let cost = heartbeat::measure(
        backend.clone(),
        &prefix,
        plan.leases,
        plan.heartbeat_ttl,
        plan.hold,
        progress,
    )
    .await?;
    progress.done(&format!(
        "  heartbeat: {} leases of TTL {:?} for {:.0}s: {:.1}% of one core, {:.0} store calls/s, {:.0} renewals/s, {} lost",
        cost.leases,
        plan.heartbeat_ttl,
        cost.seconds,
        cost.cpu_percent_of_one_core,
        cost.store_calls_per_sec,
        cost.leases_renewed_per_sec,
        cost.lost
    ));

    Ok(json!({
        "url": url,
        "pair": {
            "library": library.summary(),
            "raw": raw.summary(),
            "ratio_p50": ratio,
            "ratio_p99": library.quantile_us(0.99) / raw.quantile_us(0.99),
            "ratio_per_sec": raw.per_sec() / library.per_sec(),
        },
        "handoff": handoff,
        "throughput": throughput,
        "heartbeat": {
            "leases": cost.leases,
            "seconds": cost.seconds,
            "ttl_ms": plan.heartbeat_ttl.as_millis(),
            "cpu_percent_of_one_core": cost.cpu_percent_of_one_core,
            "store_calls_per_sec": cost.store_calls_per_sec,
            "leases_renewed_per_sec": cost.leases_renewed_per_sec,
            "lost": cost.lost,
        },
    }))
}

/// Library and raw pair latencies, measured in alternating blocks.
async fn pairs(
    url: &str,
    backend: &Arc<dyn LockBackend>,
    prefix: &str,
    plan: &Plan,
    progress: &mut Progress,
) -> Result<(Samples, Samples), CliError> {
    const TTL: Duration = Duration::from_secs(10);
    let mut raw = RawPair::connect(url).await?;
    let name = LockName::new(format!("{prefix}pair"))?;
    let holder = Holder::current("lockctl bench");
    let (mut library, mut baseline) = (Samples::default(), Samples::default());
    let per_block = plan.pairs.div_ceil(plan.blocks);
    // Warm up both paths (connections, prepared statements, page cache).
    for _ in 0..per_block.min(50) {
        library_pair(backend, &name, &holder, TTL).await?;
        raw.pair(TTL).await?;
    }
    for block in 0..plan.blocks {
        progress.update(&format!("pairs: block {}/{}", block + 1, plan.blocks));
        let start = Instant::now();
        for _ in 0..per_block {
            let t = Instant::now();
            library_pair(backend, &name, &holder, TTL).await?;
            library.push(t.elapsed());
        }
        library.elapsed += start.elapsed();
        let start = Instant::now();
        for _ in 0..per_block {
            let t = Instant::now();
            raw.pair(TTL).await?;
            baseline.push(t.elapsed());
        }
        baseline.elapsed += start.elapsed();
    }
    raw.cleanup().await;
    Ok((library, baseline))
}

async fn library_pair(
    backend: &Arc<dyn LockBackend>,
    name: &LockName,
    holder: &Holder,
    ttl: Duration,
) -> Result<(), CliError> {
    let lease = backend
        .try_acquire(name, holder, ttl)
        .await?
        .ok_or_else(|| {
            CliError::Bench(format!(
                "lock \"{name}\" is held by someone else; use a store with no bench locks"
            ))
        })?;
    backend.release(&lease).await?;
    Ok(())
}

/// The turns of one hand-off measurement: `waiters` processes on lock `name`, each looping
/// as `loops` says, holding and pausing as `hold_pause` says (in µs).
struct Turns<'a> {
    url: &'a str,
    waiters: usize,
    name: &'a str,
    loops: Loops,
    hold_pause: (u64, u64),
}

/// The same `turns` taken by `floor` workers (a raw baseline) instead of the library's:
/// reported as `what`, next to the library's hand-offs `library`. Their JSON summary and
/// the library's p50 as a ratio of theirs.
async fn handoff_floor(
    turns: &Turns<'_>,
    floor: Worker<'_>,
    what: &str,
    library: &Samples,
    progress: &mut Progress,
) -> Result<(serde_json::Value, f64), CliError> {
    let waiters = turns.waiters;
    progress.update(&format!("handoff: {waiters} processes, {what}"));
    let (events, _) = run_workers(
        turns.url,
        waiters,
        |_| turns.name.to_owned(),
        turns.loops,
        turns.hold_pause,
        floor,
    )
    .await?;
    let raw = handoff_samples(&events);
    let ratio = library.quantile_us(0.5) / raw.quantile_us(0.5);
    progress.done(&format!(
        "  {what} hand-off with {waiters} processes: p50 {:.0} us, p99 {:.0} us; \
         library / {what} p50 {ratio:.2}",
        raw.quantile_us(0.5),
        raw.quantile_us(0.99),
    ));
    let summary = json!({
        "count": raw.len(),
        "p50_us": raw.quantile_us(0.5),
        "p99_us": raw.quantile_us(0.99),
    });
    Ok((summary, ratio))
}

/// The hand-off latencies of one measurement.
fn handoff_samples(events: &[Events]) -> Samples {
    let mut samples = Samples::default();
    for handoff in worker::handoffs(events) {
        samples.push_nanos(handoff.latency());
    }
    samples.elapsed = Duration::from_secs(1);
    samples
}

/// How long each worker of a measurement loops: `cycles`, or until `for_` passed (zero: no
/// time limit), whichever comes first.
#[derive(Clone, Copy)]
struct Loops {
    cycles: u32,
    for_: Duration,
}

/// What the workers of a measurement take turns on.
#[derive(Clone, Copy)]
enum Worker<'a> {
    /// The library's lock; with `steps`, each worker records its store calls' times.
    Library { steps: bool },
    /// A blocking `flock` on this file (the raw hand-off baseline).
    RawFlock(&'a std::path::Path),
    /// The same, and each turn's lease written to the store the raw way (the raw baseline
    /// of a hand-off through the store).
    RawStore(&'a std::path::Path),
}

impl<'a> Worker<'a> {
    /// The `bench-worker` arguments that say so.
    fn args(self) -> Vec<&'a OsStr> {
        match self {
            Self::Library { steps: false } => Vec::new(),
            Self::Library { steps: true } => vec![OsStr::new("--steps")],
            Self::RawFlock(path) => vec![OsStr::new("--raw-flock"), path.as_os_str()],
            Self::RawStore(path) => vec![
                OsStr::new("--raw-flock"),
                path.as_os_str(),
                OsStr::new("--raw-store"),
            ],
        }
    }
}

/// Runs `count` worker processes (worker `i` on lock `name(i)`), started at once, each
/// looping as `loops` says, holding `hold_us` and pausing `pause_us` after each release;
/// returns their events and the time from the first acquisition to the last release.
async fn run_workers(
    url: &str,
    count: usize,
    name: impl Fn(usize) -> String,
    loops: Loops,
    (hold_us, pause_us): (u64, u64),
    worker: Worker<'_>,
) -> Result<(Vec<Events>, Duration), CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::io("bench: cannot find lockctl's own executable", e))?;
    let mut children = Vec::new();
    for i in 0..count {
        let mut child = tokio::process::Command::new(&exe)
            .args(["bench-worker", "--url", url, "--name", &name(i)])
            .args([
                "--cycles",
                &loops.cycles.to_string(),
                "--for-ms",
                &loops.for_.as_millis().to_string(),
                "--hold-us",
                &hold_us.to_string(),
            ])
            .args(["--pause-us", &pause_us.to_string()])
            .args(worker.args())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CliError::io("bench: cannot start a worker", e))?;
        let stdout = child.stdout.take().map(BufReader::new);
        children.push((child, stdout));
    }
    // Every worker connects first; then all start at once.
    for (child, stdout) in &mut children {
        let mut line = String::new();
        if let Some(stdout) = stdout {
            stdout
                .read_line(&mut line)
                .await
                .map_err(|e| CliError::io("bench: cannot read a worker", e))?;
        }
        if line.trim() != "ready" {
            let status = child.wait().await;
            return Err(CliError::Bench(format!(
                "a worker failed before it started: {status:?}"
            )));
        }
    }
    for (child, _) in &mut children {
        // Closing stdin is the go.
        drop(child.stdin.take());
    }
    let mut events = Vec::new();
    for (mut child, stdout) in children {
        let mut text = String::new();
        if let Some(mut stdout) = stdout {
            stdout
                .read_to_string(&mut text)
                .await
                .map_err(|e| CliError::io("bench: cannot read a worker", e))?;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| CliError::io("bench: cannot wait for a worker", e))?;
        let parsed = Events::parse(&text)
            .filter(|_| status.success())
            .ok_or_else(|| CliError::Bench(format!("a worker failed: {status}")))?;
        events.push(parsed);
    }
    let first = events
        .iter()
        .flat_map(|e| e.acquired.first())
        .min()
        .copied();
    let last = events.iter().flat_map(|e| e.released.last()).max().copied();
    let elapsed = match (first, last) {
        (Some(first), Some(last)) => Duration::from_nanos(last.saturating_sub(first).max(1)),
        _ => Duration::from_nanos(1),
    };
    Ok((events, elapsed))
}

fn print_table(results: &[serde_json::Value]) {
    outln!(
        "{:<44} {:>10} {:>10} {:>7} {:>11} {:>9} {:>9} {:>11} {:>11} {:>9} {:>10} {:>10} {:>9}",
        "store",
        "pair p50",
        "raw p50",
        "ratio",
        "handoff2",
        "vs flock",
        "vs store",
        "handoff8",
        "handoff32",
        "tries/acq",
        "tp 1 name",
        "tp 8 names",
        "hb cpu"
    );
    for r in results {
        let url: String = r["url"].as_str().unwrap_or("?").chars().take(44).collect();
        outln!(
            "{:<44} {:>8.1}us {:>8.1}us {:>6.2}x {:>7.0}us p50 {:>9} {:>9} {:>7.0}us p50 {:>7.0}us p50 {:>9.2} {:>8.0}/s {:>8.0}/s {:>8.1}%",
            url,
            r["pair"]["library"]["p50_us"].as_f64().unwrap_or(f64::NAN),
            r["pair"]["raw"]["p50_us"].as_f64().unwrap_or(f64::NAN),
            r["pair"]["ratio_p50"].as_f64().unwrap_or(f64::NAN),
            r["handoff"]["processes_2"]["p50_us"]
                .as_f64()
                .unwrap_or(f64::NAN),
            // Only single-host stores have the raw flock and raw store baselines.
            r["handoff"]["processes_2"]["ratio_p50"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}x")),
            r["handoff"]["processes_2"]["ratio_store_p50"]
                .as_f64()
                .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}x")),
            r["handoff"]["processes_8"]["p50_us"]
                .as_f64()
                .unwrap_or(f64::NAN),
            r["handoff"]["processes_32"]["p50_us"]
                .as_f64()
                .unwrap_or(f64::NAN),
            r["handoff"]["processes_32"]["attempts_per_acquisition"]
                .as_f64()
                .unwrap_or(f64::NAN),
            r["throughput"]["names_1"]["per_sec"]
                .as_f64()
                .unwrap_or(f64::NAN),
            r["throughput"]["names_8"]["per_sec"]
                .as_f64()
                .unwrap_or(f64::NAN),
            r["heartbeat"]["cpu_percent_of_one_core"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }
}
