//! `lockctl bench-worker` (hidden): one contending process of the hand-off and throughput
//! measurements. It prints `a <ns>` after each acquisition and `r <ns>` just before each
//! release (CLOCK_MONOTONIC, comparable between processes), all at the end so printing does
//! not slow the cycles.

use std::fmt::Write;
use std::time::Duration;

use clap::Args;
use lock::{LockError, LockOptions, Locker};
use lock_conformance::history::monotonic_nanos;

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
}

pub(crate) async fn worker(args: WorkerArgs) -> Result<u8, LockError> {
    let locker = Locker::new(lock::connect(&args.url).await?);
    let opts = LockOptions::default()
        .with_ttl(Duration::from_secs(10))
        .with_wait(Duration::from_secs(300))
        .with_label("lockctl bench");
    let mut out = String::new();
    for _ in 0..args.cycles {
        let guard = locker.lock(args.name.as_str(), &opts).await?;
        let _ = writeln!(out, "a {}", monotonic_nanos());
        if args.hold_us > 0 {
            tokio::time::sleep(Duration::from_micros(args.hold_us)).await;
        }
        let _ = writeln!(out, "r {}", monotonic_nanos());
        guard.release().await?;
        if args.pause_us > 0 {
            tokio::time::sleep(Duration::from_micros(args.pause_us)).await;
        }
    }
    print!("{out}");
    Ok(0)
}

/// One worker's events: acquisitions and releases, in its own order.
#[derive(Debug, Default)]
pub(crate) struct Events {
    pub(crate) acquired: Vec<u64>,
    pub(crate) released: Vec<u64>,
}

impl Events {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut events = Self::default();
        for line in text.lines() {
            let (kind, at) = line.split_once(' ')?;
            let at = at.parse().ok()?;
            match kind {
                "a" => events.acquired.push(at),
                "r" => events.released.push(at),
                _ => return None,
            }
        }
        Some(events)
    }
}

/// Hand-off latencies: for each acquisition that followed another process's release of
/// the same lock, the time between the release and the acquisition.
pub(crate) fn handoffs(workers: &[Events]) -> Vec<u64> {
    let mut timeline: Vec<(u64, bool, usize)> = Vec::new();
    for (who, events) in workers.iter().enumerate() {
        timeline.extend(events.acquired.iter().map(|&at| (at, true, who)));
        timeline.extend(events.released.iter().map(|&at| (at, false, who)));
    }
    timeline.sort_unstable();
    let mut last_release: Option<(u64, usize)> = None;
    let mut latencies = Vec::new();
    for (at, is_acquire, who) in timeline {
        if is_acquire {
            if let Some((released, by)) = last_release.take()
                && by != who
            {
                latencies.push(at.saturating_sub(released));
            }
        } else {
            last_release = Some((at, who));
        }
    }
    latencies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoffs_count_only_other_processes() {
        let a = Events::parse("a 10\nr 20\na 21\nr 30\n").unwrap();
        let b = Events::parse("a 35\nr 40\n").unwrap();
        // a re-took its own release at 21 (not a hand-off); b took a's release of 30 at 35.
        assert_eq!(handoffs(&[a, b]), vec![5]);
        assert!(Events::parse("x 1").is_none());
    }
}
