//! `lock-bench`: the Redis backend's uncontended acquire + release pair, next to the least a
//! correct lease needs from Redis (`SET NX PX`, then an `EVALSHA` compare-and-delete), next
//! to rslock's `lock` + `unlock`, and next to the least a *fenced* lease needs (`fenced`:
//! a grant that reads the server's time and moves a fence counter, in one script), measured
//! interleaved in one run so that machine noise hits all four alike. Prints each side's
//! latencies and the ratios.
//!
//! ```sh
//! cargo build --release -p lock-bench
//! taskset -c 1 target/release/lock-bench            # private redis-server, pinned with it
//! target/release/lock-bench --url redis://127.0.0.1:6379 --pairs 50000
//! target/release/lock-bench --server-stats          # + INFO commandstats per pair
//! target/release/lock-bench --only library --pairs 2000   # one side (for callgrind)
//! ```
//!
//! Without `--url` it starts a private `redis-server` (`--save '' --appendonly no`) on a
//! free loopback port; the server inherits the CPU affinity of this process, so `taskset`
//! pins both.

use std::fmt;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use lock_core::{Holder, LockBackend, LockName};
use lock_redis::RedisBackend;
use serde_json::json;

/// The lease TTL of every side, in milliseconds as the raw and fenced sides send it.
const TTL_MS: u64 = 10_000;
/// The lease TTL of every side.
const TTL: Duration = Duration::from_millis(TTL_MS);

#[derive(Debug, Parser)]
#[command(about = "Redis lock pair: this library vs raw SET NX PX vs rslock")]
struct Args {
    /// The server to use; default: a private redis-server started for the run.
    #[arg(long)]
    url: Option<String>,
    /// Pairs per side.
    #[arg(long, default_value_t = 20_000)]
    pairs: usize,
    /// Blocks the pairs are split into; the sides take turns block by block.
    #[arg(long, default_value_t = 10)]
    blocks: usize,
    /// Measure one side only (no interleaving), e.g. under callgrind.
    #[arg(long, value_enum)]
    only: Option<Side>,
    /// Also run each side alone after a `CONFIG RESETSTAT` and print the server's
    /// `INFO commandstats` per pair.
    #[arg(long)]
    server_stats: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Side {
    /// This library: `LockBackend::try_acquire` + `release` on a `RedisBackend`.
    Library,
    /// `SET key token NX PX ttl`, then an `EVALSHA` compare-and-delete.
    Raw,
    /// rslock 0.10: `LockManager::lock` + `unlock` (one server).
    Rslock,
    /// The least a fenced lease needs from Redis: one script that reads the server's time,
    /// moves the fence counter (`SET ... GET`) and sets the lease with its fence
    /// (`SET NX PX`); then a compare-and-delete script that also looks for waiters
    /// (`EXISTS`). No holder fields, no corrupt-data checks, no hand-off: a floor for the
    /// library's pair, not a lock to use.
    Fenced,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Library => "library",
            Self::Raw => "raw",
            Self::Rslock => "rslock",
            Self::Fenced => "fenced",
        })
    }
}

const SIDES: [Side; 4] = [Side::Library, Side::Raw, Side::Rslock, Side::Fenced];

/// The fenced floor's grant: fence = max(counter + 1, server time in µs), in one script.
const FENCED_ACQUIRE: &str = "\
local t = redis.call('TIME')
local micros = t[1] * 1000000 + t[2]
local fence = micros
local old = tonumber(redis.call('SET', KEYS[2], string.format('%d', micros), 'GET'))
if old and old >= micros then
  fence = old + 1
  redis.call('SET', KEYS[2], string.format('%d', fence))
end
if redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. string.format('%d', fence), 'NX', 'PX', ARGV[2]) then
  return fence
end
return -1";

/// The fenced floor's release: compare-and-delete by token, unless someone waits.
const FENCED_RELEASE: &str = "\
local v = redis.call('GET', KEYS[1])
if v and string.find(v, ARGV[1], 1, true) == 1 and redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// One connected client per side.
struct Clients {
    library: RedisBackend,
    name: LockName,
    holder: Holder,
    raw: redis::aio::MultiplexedConnection,
    raw_key: String,
    raw_release: redis::Script,
    rslock: rslock::LockManager,
    rslock_key: String,
    /// The fenced floor's keys: lease, fence counter, queue (never written).
    fenced_keys: [String; 3],
    fenced_acquire: redis::Script,
    fenced_release: redis::Script,
}

impl Clients {
    async fn connect(url: &str) -> Result<Self, String> {
        let run = format!("{:08x}", rand::random::<u32>());
        let opts: lock_redis::RedisOptions = url.parse().map_err(|e| format!("{e}"))?;
        let library = RedisBackend::connect_with(opts.with_key_prefix(format!("bench:{run}:")))
            .await
            .map_err(|e| format!("library: {e}"))?;
        let raw = redis::Client::open(url)
            .map_err(|e| format!("raw: {e}"))?
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("raw: {e}"))?;
        Ok(Self {
            library,
            name: LockName::new("pair").map_err(|e| e.to_string())?,
            holder: Holder::current("lock-bench"),
            raw,
            raw_key: format!("bench-raw:{run}"),
            raw_release: redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                 return redis.call('DEL', KEYS[1]) else return 0 end",
            ),
            rslock: rslock::LockManager::new(vec![url.to_owned()]),
            rslock_key: format!("bench-rslock:{run}"),
            fenced_keys: ["", ":fence", ":queue"].map(|k| format!("bench-fenced:{{{run}}}{k}")),
            fenced_acquire: redis::Script::new(FENCED_ACQUIRE),
            fenced_release: redis::Script::new(FENCED_RELEASE),
        })
    }

    /// One acquire + release on `side`.
    async fn pair(&mut self, side: Side) -> Result<(), String> {
        match side {
            Side::Library => {
                let lease = self
                    .library
                    .try_acquire(&self.name, &self.holder, TTL)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the library's bench lock was held")?;
                if !self
                    .library
                    .release(&lease)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Err("the library released nothing".into());
                }
            }
            Side::Raw => {
                let token = format!("{:032x}", rand::random::<u128>());
                let set: Option<String> = redis::cmd("SET")
                    .arg(&self.raw_key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(TTL_MS)
                    .query_async(&mut self.raw)
                    .await
                    .map_err(|e| format!("SET NX PX: {e}"))?;
                set.ok_or("the raw key was held")?;
                let mut release = self.raw_release.key(&self.raw_key);
                release.arg(&token);
                deletes_one(release, &mut self.raw, "the raw compare-and-delete").await?;
            }
            Side::Rslock => {
                let lock = self
                    .rslock
                    .lock(self.rslock_key.as_bytes(), TTL)
                    .await
                    .map_err(|e| format!("rslock lock: {e:?}"))?;
                self.rslock.unlock(&lock).await;
            }
            Side::Fenced => {
                let token = format!("{:032x}", rand::random::<u128>());
                let [lease, fence, queue] = &self.fenced_keys;
                let fence: i64 = self
                    .fenced_acquire
                    .key(lease)
                    .key(fence)
                    .arg(&token)
                    .arg(TTL_MS)
                    .invoke_async(&mut self.raw)
                    .await
                    .map_err(|e| format!("fenced grant: {e}"))?;
                if fence < 0 {
                    return Err("the fenced key was held".into());
                }
                let mut release = self.fenced_release.key(lease);
                release.key(queue).arg(&token);
                deletes_one(release, &mut self.raw, "the fenced release").await?;
            }
        }
        Ok(())
    }
}

/// Runs a release script (`what`, for errors) that answers how many keys it deleted: an
/// error unless it deleted the one it was given.
async fn deletes_one(
    release: redis::ScriptInvocation<'_>,
    conn: &mut redis::aio::MultiplexedConnection,
    what: &str,
) -> Result<(), String> {
    let freed: i64 = release
        .invoke_async(conn)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if freed != 1 {
        return Err(format!("{what} deleted nothing"));
    }
    Ok(())
}

/// Latencies of one side.
#[derive(Default)]
struct Samples {
    nanos: Vec<u64>,
}

impl Samples {
    fn quantile_us(&self, q: f64) -> f64 {
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1000.0
    }

    fn mean_us(&self) -> f64 {
        self.nanos.iter().sum::<u64>() as f64 / self.nanos.len().max(1) as f64 / 1000.0
    }
}

async fn measure(
    clients: &mut Clients,
    sides: &[Side],
    args: &Args,
) -> Result<Vec<Samples>, String> {
    let mut samples: Vec<Samples> = sides.iter().map(|_| Samples::default()).collect();
    let per_block = args.pairs.div_ceil(args.blocks.max(1));
    let tty = std::io::stderr().is_terminal();
    for &side in sides {
        for _ in 0..per_block.min(200) {
            clients.pair(side).await?;
        }
    }
    for block in 0..args.blocks.max(1) {
        // Each block starts with another side, so no side always runs first.
        for k in 0..sides.len() {
            let i = (block + k) % sides.len();
            let into = &mut samples[i].nanos;
            for _ in 0..per_block {
                let start = Instant::now();
                clients.pair(sides[i]).await?;
                into.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
        // On a terminal, one line counts up; in a log, one line per block.
        if tty {
            eprint!("\rblock {}/{}", block + 1, args.blocks);
        } else {
            eprintln!("block {}/{}", block + 1, args.blocks);
        }
    }
    if tty {
        eprintln!();
    }
    Ok(samples)
}

/// Each side alone after `CONFIG RESETSTAT`: the server's time per pair, by command.
async fn server_stats(
    url: &str,
    clients: &mut Clients,
    pairs: usize,
) -> Result<serde_json::Value, String> {
    let mut admin = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .map_err(|e| format!("admin connection: {e}"))?;
    let mut out = serde_json::Map::new();
    for side in SIDES {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .exec(&mut admin)
            .map_err(|e| e.to_string())?;
        for _ in 0..pairs {
            clients.pair(side).await?;
        }
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut admin)
            .map_err(|e| e.to_string())?;
        let mut commands = serde_json::Map::new();
        for line in info.lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            // The measurement's own commands (`config|resetstat`, `info`) are not the side's.
            let command = name.split('|').next().unwrap_or(name);
            if command == "config" || command == "info" {
                continue;
            }
            let field = |key: &str| -> f64 {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            commands.insert(
                name.to_owned(),
                json!({
                    "calls_per_pair": field("calls") / pairs as f64,
                    "usec_per_pair": field("usec") / pairs as f64,
                    "usec_per_call": field("usec_per_call"),
                }),
            );
        }
        out.insert(side.to_string(), serde_json::Value::Object(commands));
    }
    Ok(serde_json::Value::Object(out))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let server = args
        .url
        .is_none()
        .then(lock_testkit::redis::RedisServer::start);
    let url = args
        .url
        .clone()
        .or_else(|| server.as_ref().map(lock_testkit::redis::RedisServer::url))
        .ok_or("no server")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut clients = Clients::connect(&url).await?;
        let sides: Vec<Side> = match args.only {
            Some(side) => vec![side],
            None => SIDES.to_vec(),
        };
        let samples = measure(&mut clients, &sides, &args).await?;
        let p50 = |side: Side| {
            sides
                .iter()
                .position(|s| *s == side)
                .map_or(f64::NAN, |i| samples[i].quantile_us(0.5))
        };
        let mut report = serde_json::Map::new();
        for (side, s) in sides.iter().zip(&samples) {
            report.insert(
                side.to_string(),
                json!({
                    "pairs": s.nanos.len(),
                    "p50_us": s.quantile_us(0.5),
                    "p99_us": s.quantile_us(0.99),
                    "mean_us": s.mean_us(),
                }),
            );
        }
        let ratios = json!({
            "library_over_raw": p50(Side::Library) / p50(Side::Raw),
            "library_over_rslock": p50(Side::Library) / p50(Side::Rslock),
            "rslock_over_raw": p50(Side::Rslock) / p50(Side::Raw),
            "library_over_fenced": p50(Side::Library) / p50(Side::Fenced),
            "fenced_over_raw": p50(Side::Fenced) / p50(Side::Raw),
        });
        report.insert("ratios_p50".into(), ratios.clone());
        if args.server_stats {
            let pairs = args.pairs.min(20_000);
            report.insert(
                "server_stats".into(),
                server_stats(&url, &mut clients, pairs).await?,
            );
        }
        if args.json {
            println!("{}", serde_json::Value::Object(report));
            return Ok(());
        }
        println!(
            "{:<8} {:>8} {:>10} {:>10} {:>10}",
            "side", "pairs", "p50 us", "p99 us", "mean us"
        );
        for (side, s) in sides.iter().zip(&samples) {
            println!(
                "{:<8} {:>8} {:>10.2} {:>10.2} {:>10.2}",
                side.to_string(),
                s.nanos.len(),
                s.quantile_us(0.5),
                s.quantile_us(0.99),
                s.mean_us()
            );
        }
        if sides.len() == SIDES.len() {
            println!(
                "ratios of p50: library/raw {:.3}, library/rslock {:.3}, rslock/raw {:.3}",
                ratios["library_over_raw"].as_f64().unwrap_or(f64::NAN),
                ratios["library_over_rslock"].as_f64().unwrap_or(f64::NAN),
                ratios["rslock_over_raw"].as_f64().unwrap_or(f64::NAN),
            );
            println!(
                "             library/fenced {:.3}, fenced/raw {:.3}",
                ratios["library_over_fenced"].as_f64().unwrap_or(f64::NAN),
                ratios["fenced_over_raw"].as_f64().unwrap_or(f64::NAN),
            );
        }
        if let Some(stats) = report.get("server_stats") {
            println!(
                "server time per pair (INFO commandstats, each side alone; a script's \
                 time includes the commands it calls, which are also counted on their own):"
            );
            for side in SIDES {
                let Some(commands) = stats[side.to_string()].as_object() else {
                    continue;
                };
                let mut line = format!("  {side:<8}");
                for (name, v) in commands {
                    line.push_str(&format!(
                        " {name} {:.2}x{:.2}us",
                        v["calls_per_pair"].as_f64().unwrap_or(f64::NAN),
                        v["usec_per_call"].as_f64().unwrap_or(f64::NAN)
                    ));
                }
                println!("{line}");
            }
        }
        Ok(())
    })
}
