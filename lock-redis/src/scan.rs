//! Finding lease keys with `SCAN`, on one server or on every master of a cluster.

use lock_core::{LockError, Result};
use redis::Value;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use crate::BACKEND;
use crate::backend::RedisBackend;
use crate::connection::Conn;

/// Keys per `SCAN` step.
const SCAN_COUNT: usize = 1000;

/// Every key matching `pattern`, from every master.
pub(crate) async fn lease_keys(backend: &RedisBackend, pattern: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    match backend.conn() {
        Conn::Standalone(_) | Conn::Sentinel(_) => {
            scan_node(backend, pattern, None, &mut keys).await?;
        }
        Conn::Cluster(mut conn) => {
            let slots = backend
                .run(
                    "list",
                    conn.route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    ),
                )
                .await?;
            for slot in one_slot_per_master(&slots)? {
                scan_node(backend, pattern, Some(slot), &mut keys).await?;
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// Runs a full `SCAN` on one node: the server, or the master owning `slot`.
async fn scan_node(
    backend: &RedisBackend,
    pattern: &str,
    slot: Option<u16>,
    keys: &mut Vec<String>,
) -> Result<()> {
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let mut conn = backend.conn();
        let reply: Value = match (&mut conn, slot) {
            (Conn::Cluster(c), Some(slot)) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                backend
                    .run("list", c.route_command(cmd, RoutingInfo::SingleNode(route)))
                    .await?
            }
            _ => backend.run("list", cmd.query_async(&mut conn)).await?,
        };
        let (next, batch): (u64, Vec<String>) = redis::from_redis_value(reply)
            .map_err(|e| LockError::backend(BACKEND, format!("unexpected SCAN reply: {e}")))?;
        keys.extend(batch);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The first slot of each master in a `CLUSTER SLOTS` reply.
fn one_slot_per_master(reply: &Value) -> Result<Vec<u16>> {
    let bad = || {
        LockError::backend(
            BACKEND,
            format!("unexpected CLUSTER SLOTS reply: {reply:?}"),
        )
    };
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut seen = Vec::new();
    let mut slots = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Array(master))) = (fields.first(), fields.get(2))
        else {
            return Err(bad());
        };
        let node = format!("{:?}", master.get(..2));
        if !seen.contains(&node) {
            seen.push(node);
            slots.push(u16::try_from(*start).map_err(|_| bad())?);
        }
    }
    Ok(slots)
}
