//! `lockctl bench-worker` (hidden): one contending process of the hand-off and throughput
//! measurements. Once connected it prints `ready` and waits for stdin to close, so that
//! every worker of a measurement starts at once (process start-up takes longer than
//! hundreds of uncontended cycles). Then it prints `w <ns>` as it starts waiting for the
//! lock, `a <ns>` after each acquisition and `r <ns>` just before each release
//! (CLOCK_MONOTONIC, comparable between processes), and `n <count>`, the acquire attempts
//! it made, all at the end so printing does not slow the cycles. With `--steps` it also
//! prints one line per store call, `L`, `T` or `W` with its begin and end (see
//! [`super::steps`]).
//!
//! With `--raw-flock <file>` it takes a blocking `flock` on that file instead of the lock,
//! as `flock(1)` does: the raw baseline of a hand-off on one host (the kernel wakes the
//! waiter; nothing else happens). With `--raw-store` as well, each turn also takes and frees
//! a lease in the store the raw way ([`RawPair`]) while it holds the `flock`: the raw
//! baseline of a hand-off that records its lease in that store (the kernel wakes the waiter,
//! which then writes the store; nothing else happens).

use std::fmt::Write;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::Args;
use leaselock::{LockOptions, Locker};

use super::heartbeat::Counting;
use super::raw::RawPair;
use super::steps::{Call, StepLog};
use crate::error::CliError;

/// Arguments of the hidden worker subcommand.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    cycles: u32,
    #[arg(long, default_value_t = 0)]
    hold_us: u64,
    /// After each release, wait this long before asking again, so that another process
    /// (not this one) takes the lock: each acquisition is then a hand-off.
    #[arg(long, default_value_t = 0)]
    pause_us: u64,
    /// Stop after this long from the start, once one cycle is done (and after `--cycles` at
    /// most); 0: no limit.
    #[arg(long, default_value_t = 0)]
    for_ms: u64,
    /// Instead of the library, take a blocking `flock` on this file (the raw baseline).
    #[arg(long)]
    raw_flock: Option<std::path::PathBuf>,
    /// With `--raw-flock`: also take and free a lease in the store the raw way in each
    /// turn (the raw baseline of a hand-off through the store).
    #[arg(long, requires = "raw_flock")]
    raw_store: bool,
    /// Also record when each store call began and ended (see `bench --handoff-steps`).
    #[arg(long)]
    steps: bool,
}

pub(crate) async fn worker(args: WorkerArgs) -> Result<u8, CliError> {
    if let Some(path) = &args.raw_flock {
        return raw_flock_worker(path, &args).await;
    }
    let mut counting = Counting::new(leaselock::connect(&args.url).await?);
    let steps = args.steps.then(|| {
        // Per cycle: a release, a few attempts and wake-ups.
        let room = usize::try_from(args.cycles.min(RESERVED_CYCLES)).unwrap_or(0) * 8;
        Arc::new(StepLog::with_room(room))
    });
    counting.steps.clone_from(&steps);
    let counting = Arc::new(counting);
    let locker = Locker::new(counting.clone());
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(10))
        .with_wait(Duration::from_secs(300))
        .with_label("lockctl bench");
    ready_set_go().await?;
    let mut log = EventLog::with_cycles(args.cycles);
    let started = std::time::Instant::now();
    let limit = (args.for_ms > 0).then(|| Duration::from_millis(args.for_ms));
    for cycle in 0..args.cycles {
        if cycle > 0 && limit.is_some_and(|limit| started.elapsed() >= limit) {
            break;
        }
        log.now('w');
        let guard = locker.lock(args.name.as_str(), &opts).await?;
        log.now('a');
        if args.hold_us > 0 {
            tokio::time::sleep(Duration::from_micros(args.hold_us)).await;
        }
        log.now('r');
        guard.release().await?;
        if args.pause_us > 0 {
            tokio::time::sleep(Duration::from_micros(args.pause_us)).await;
        }
    }
    log.print(
        counting.attempts.load(Ordering::Relaxed),
        steps.as_deref().map(StepLog::lines),
    );
    Ok(0)
}

/// The raw baseline's loop: the same cycles with a blocking `flock` on `path`, on this
/// thread (nothing else runs in this process), as `flock(1)` waits.
async fn raw_flock_worker(path: &std::path::Path, args: &WorkerArgs) -> Result<u8, CliError> {
    let file = super::raw::open_lock_file(path)
        .map_err(|e| CliError::io("bench worker: cannot open the raw flock file", e))?;
    // Every worker of a measurement takes turns on one raw lease, named after the file.
    let mut store = if args.raw_store {
        let record = super::raw::FlockFile::record_of(path);
        Some(RawPair::connect_to(&args.url, &record).await?)
    } else {
        None
    };
    ready_set_go().await?;
    let mut log = EventLog::with_cycles(args.cycles);
    let started = std::time::Instant::now();
    let limit = (args.for_ms > 0).then(|| Duration::from_millis(args.for_ms));
    let mut attempts = 0_u64;
    for cycle in 0..args.cycles {
        if cycle > 0 && limit.is_some_and(|limit| started.elapsed() >= limit) {
            break;
        }
        log.now('w');
        loop {
            attempts += 1;
            match fs4::FileExt::lock(&file) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CliError::io("bench worker: flock failed", e)),
            }
        }
        let token = match &mut store {
            Some(raw) => Some(raw.acquire(RAW_STORE_TTL).await?),
            None => None,
        };
        log.now('a');
        if args.hold_us > 0 {
            std::thread::sleep(Duration::from_micros(args.hold_us));
        }
        log.now('r');
        if let (Some(raw), Some(token)) = (&mut store, &token) {
            raw.release(token).await?;
        }
        fs4::FileExt::unlock(&file).map_err(|e| CliError::io("bench worker: unlock failed", e))?;
        if args.pause_us > 0 {
            std::thread::sleep(Duration::from_micros(args.pause_us));
        }
    }
    log.print(attempts, None);
    Ok(0)
}

/// The TTL of the raw baseline's leases, as the library workers' (the `flock` decides who
/// holds; the TTL only has to outlast a turn).
const RAW_STORE_TTL: Duration = Duration::from_secs(10);

/// Cycles whose events are reserved room for up front (1.5 MiB): far more than any hand-off
/// measurement runs.
const RESERVED_CYCLES: u32 = 32_768;

/// A worker's events as they happen: a kind and a time, in memory reserved up front, so that
/// recording one between a release's timestamp and the release itself costs a store to
/// memory (formatting it there added a cold number formatting, and now and then a
/// reallocation, to every hand-off measured). Printed at the end.
struct EventLog {
    events: Vec<(char, u64)>,
}

impl EventLog {
    /// Room for `cycles` cycles, up to [`RESERVED_CYCLES`]: a throughput run asks for an
    /// unbounded number of cycles and stops on time; its log grows as it goes.
    fn with_cycles(cycles: u32) -> Self {
        let per_cycle = 3;
        let reserved = cycles.min(RESERVED_CYCLES);
        Self {
            events: Vec::with_capacity(usize::try_from(reserved).unwrap_or(0) * per_cycle),
        }
    }

    /// Records `kind` (`w`, `a` or `r`) at `CLOCK_MONOTONIC` now.
    fn now(&mut self, kind: char) {
        self.events.push((kind, monotonic_nanos()));
    }

    /// Prints every event, then `n <attempts>`, then the store calls' lines if they were
    /// recorded, in one write.
    fn print(&self, attempts: u64, calls: Option<String>) {
        let mut out = String::with_capacity(self.events.len() * 24 + 24);
        for (kind, at) in &self.events {
            let _ = writeln!(out, "{kind} {at}");
        }
        let _ = writeln!(out, "n {attempts}");
        out.push_str(calls.as_deref().unwrap_or_default());
        out!("{out}");
    }
}

/// Says `ready` and waits for the go (the end of stdin, or a line).
async fn ready_set_go() -> Result<(), CliError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::io("bench worker: cannot write to stdout", e))?;
    drop(stdout);
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
        .await
        .map_err(|e| CliError::Bench(format!("bench worker: waiting for the start: {e}")))?
        .map_err(|e| CliError::io("bench worker: cannot read stdin", e))?;
    Ok(())
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: one clock for every process of the host, so the
/// workers' times compare. (`Instant` reads the same clock but does not show its value.)
#[allow(unsafe_code)]
pub(crate) fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always available on Linux");
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    secs * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// One worker's events: acquisitions and releases, in its own order.
#[derive(Debug, Default)]
pub(crate) struct Events {
    /// When each `lock()` call started.
    pub(crate) waited: Vec<u64>,
    pub(crate) acquired: Vec<u64>,
    pub(crate) released: Vec<u64>,
    /// Acquire attempts made (each a store round trip).
    pub(crate) attempts: u64,
    /// Store calls with their begin and end times, recorded with `--steps` only.
    pub(crate) calls: Vec<(Call, u64, u64)>,
}

impl Events {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut events = Self::default();
        for line in text.lines() {
            let mut fields = line.split(' ');
            let kind = fields.next()?;
            let at = fields.next()?.parse().ok()?;
            if let Some(call) = Call::from_letter(kind) {
                let end = fields.next()?.parse().ok()?;
                events.calls.push((call, at, end));
            } else {
                match kind {
                    "w" => events.waited.push(at),
                    "a" => events.acquired.push(at),
                    "r" => events.released.push(at),
                    "n" => events.attempts = at,
                    _ => return None,
                }
            }
            if fields.next().is_some() {
                return None;
            }
        }
        Some(events)
    }
}

/// How evenly processes looping on one name were served: the acquisitions of each within
/// the span when all of them were running (from the last first acquisition to the first
/// last release), as (least, most).
pub(crate) fn served(workers: &[Events]) -> (usize, usize) {
    let start = workers.iter().filter_map(|e| e.acquired.first()).max();
    let end = workers.iter().filter_map(|e| e.released.last()).min();
    let (Some(&start), Some(&end)) = (start, end) else {
        return (0, 0);
    };
    let counts: Vec<usize> = workers
        .iter()
        .map(|e| {
            e.acquired
                .iter()
                .filter(|&&a| a >= start && a <= end)
                .count()
        })
        .collect();
    (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    )
}

/// One hand-off: `waiter`, which was already waiting when `releaser` released the lock
/// (its "r" at `released`), acquired it (its "a" at `acquired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handoff {
    pub(crate) releaser: usize,
    pub(crate) released: u64,
    pub(crate) waiter: usize,
    pub(crate) acquired: u64,
}

impl Handoff {
    /// From just before the release to just after the acquisition.
    pub(crate) fn latency(&self) -> u64 {
        self.acquired.saturating_sub(self.released)
    }
}

/// The hand-offs: each acquisition by a process that was already waiting when another
/// process released the lock. (A process that only asked after the release found the lock
/// free: no hand-off.)
pub(crate) fn handoffs(workers: &[Events]) -> Vec<Handoff> {
    // (time, is_acquisition, worker, cycle)
    let mut timeline: Vec<(u64, bool, usize, usize)> = Vec::new();
    for (who, events) in workers.iter().enumerate() {
        timeline.extend(
            events
                .acquired
                .iter()
                .enumerate()
                .map(|(k, &at)| (at, true, who, k)),
        );
        timeline.extend(events.released.iter().map(|&at| (at, false, who, 0)));
    }
    timeline.sort_unstable();
    let mut last_release: Option<(u64, usize)> = None;
    let mut found = Vec::new();
    for (at, is_acquire, who, cycle) in timeline {
        if is_acquire {
            if let Some((released, by)) = last_release.take()
                && by != who
                && workers[who]
                    .waited
                    .get(cycle)
                    .is_some_and(|&w| w < released)
            {
                found.push(Handoff {
                    releaser: by,
                    released,
                    waiter: who,
                    acquired: at,
                });
            }
        } else {
            last_release = Some((at, who));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_is_the_one_instant_reads() {
        let before = std::time::Instant::now();
        let a = monotonic_nanos();
        std::thread::sleep(Duration::from_millis(5));
        let b = monotonic_nanos();
        let elapsed = before.elapsed();
        assert!(b > a);
        assert!(
            Duration::from_nanos(b - a) <= elapsed,
            "{a} {b} {elapsed:?}"
        );
    }

    #[test]
    fn handoffs_count_only_waiting_processes_of_another_process_release() {
        let a = Events::parse("w 0\na 10\nr 20\nw 20\na 21\nr 30\n").unwrap();
        // b waited from 5: took a's release of 30 at 35. c asked at 45, after b's release
        // at 40, and found the lock free: not a hand-off.
        let b = Events::parse("w 5\na 35\nr 40\n").unwrap();
        let c = Events::parse("w 45\na 46\nr 50\n").unwrap();
        // a re-took its own release at 21: not a hand-off either.
        let found = handoffs(&[a, b, c]);
        assert_eq!(
            found,
            vec![Handoff {
                releaser: 0,
                released: 30,
                waiter: 1,
                acquired: 35
            }]
        );
        assert_eq!(found[0].latency(), 5);
        assert!(Events::parse("x 1").is_none());
        assert!(Events::parse("a 1 2").is_none(), "one time too many");
        assert!(Events::parse("L 1").is_none(), "a call without its end");
        assert_eq!(Events::parse("w 1\na 2\nr 3\nn 4\n").unwrap().attempts, 4);
    }

    #[test]
    fn served_counts_acquisitions_while_every_process_ran() {
        // a ran alone first (its acquisitions at 1 and 2 do not count), then with b.
        let a = Events::parse("a 1\nr 1\na 2\nr 2\na 10\nr 11\na 20\nr 21\na 30\nr 31").unwrap();
        let b = Events::parse("a 12\nr 13\na 40\nr 41").unwrap();
        // The span is [12, 31]: a 20 and 30, b 12.
        assert_eq!(served(&[a, b]), (1, 2));
    }
}
