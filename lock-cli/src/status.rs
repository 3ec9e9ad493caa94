//! `lockctl status` and `lockctl release --force`.
//!
//! Status shows one row per holder: every permit of a semaphore has a row of its own, with
//! the semaphore's limit. A lock's one holder has the role "leader": an `Election` on a name
//! is a lock on it, and its leader is simply that lock's holder.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leaselock::{LeaseInfo, LockName};

use crate::cli::{ReleaseArgs, StatusArgs};
use crate::error::CliError;

/// Prints held locks; returns the exit code.
pub(crate) async fn status(args: StatusArgs) -> Result<u8, CliError> {
    let (_, backend) = crate::store::open(args.store.url.as_deref()).await?;
    let leases = match &args.name {
        Some(name) => backend.inspect_all(&LockName::new(name)?).await?,
        None => backend.list("").await?,
    };
    if args.json {
        outln!("{}", to_json(&leases));
    } else if leases.is_empty() {
        match &args.name {
            Some(name) => outln!("lock \"{name}\" is free"),
            None => outln!("no locks are held"),
        }
    } else {
        out!("{}", to_table(&leases));
    }
    Ok(0)
}

/// Breaks a lock; returns the exit code.
pub(crate) async fn release(args: ReleaseArgs) -> Result<u8, CliError> {
    if !args.force {
        return Err(CliError::Config(
            "releasing someone else's lock breaks it; add --force to confirm (the holder's command keeps running but loses the lease)".into(),
        ));
    }
    let name = LockName::new(&args.name)?;
    let (_, backend) = crate::store::open(args.store.url.as_deref()).await?;
    let holders = backend.inspect_all(&name).await.unwrap_or_default();
    if backend.force_release(&name).await? {
        match holders.as_slice() {
            [] => outln!("released lock \"{name}\""),
            holders => {
                let by: Vec<String> = holders
                    .iter()
                    .map(|info| {
                        format!(
                            "\"{}\", pid {} on {}, fence {}",
                            info.label, info.pid, info.host, info.fence
                        )
                    })
                    .collect();
                outln!("released lock \"{name}\" (was held by {})", by.join("; "));
            }
        }
    } else {
        outln!("lock \"{name}\" was not held");
    }
    Ok(0)
}

/// A compact human rendering of the time left on a lease.
pub(crate) fn format_left(left: Duration) -> String {
    let rounded = if left >= Duration::from_secs(10) {
        Duration::from_secs(left.as_secs())
    } else {
        Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    };
    humantime::format_duration(rounded).to_string()
}

/// One holder, for a line of text: `"label" (pid P on HOST, fence F, held for D, L left)`;
/// the time held is left out when the holder's clock is ahead of `now` (another host).
pub(crate) fn describe_holder(info: &LeaseInfo, now: SystemTime) -> String {
    let held = now
        .duration_since(info.acquired_at)
        .map(|held| format!("held for {}, ", format_left(held)))
        .unwrap_or_default();
    format!(
        "\"{}\" (pid {} on {}, fence {}, {held}{} left)",
        info.label.escape_debug(),
        info.pid,
        info.host,
        info.fence,
        format_left(info.time_left())
    )
}

/// What a holder is to its name: "leader" for a lock's one holder (the leader of an
/// election on that name), "permit" for one of a semaphore's holders.
fn role(lease: &LeaseInfo) -> &'static str {
    if lease.limit == 1 { "leader" } else { "permit" }
}

fn to_table(leases: &[LeaseInfo]) -> String {
    let header = [
        "NAME",
        "HOLDER",
        "PID",
        "HOST",
        "FENCE",
        "LIMIT",
        "ROLE",
        "TIME LEFT",
    ];
    let rows: Vec<[String; 8]> = leases
        .iter()
        .map(|l| {
            [
                l.name.as_str().escape_debug().to_string(),
                l.label.escape_debug().to_string(),
                l.pid.to_string(),
                l.host.clone(),
                l.fence.to_string(),
                l.limit.to_string(),
                role(l).to_owned(),
                format_left(l.time_left()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

fn to_json(leases: &[LeaseInfo]) -> String {
    let items: Vec<serde_json::Value> = leases
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name.as_str(),
                "label": l.label,
                "pid": l.pid,
                "host": l.host,
                "fence": l.fence,
                "limit": l.limit,
                "role": role(l),
                "acquired_at_ms": unix_ms(l.acquired_at),
                "expires_at_ms": unix_ms(l.expires_at),
                "time_left_ms": u64::try_from(l.time_left().as_millis()).unwrap_or(u64::MAX),
            })
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
