//! [`PrefixSnapshot`]: makes a Redis server (or every master of a cluster) lose the writes
//! made under one key prefix since a checkpoint, as a restart from an older snapshot or a
//! failover to a replica that lagged would, for the conformance suite's write-loss case.

use std::sync::Mutex;

use lock_conformance::WriteLoss;
use lock_core::async_trait;
use redis::aio::MultiplexedConnection;

/// One key as it was at the checkpoint: the node it lives on, its name, its `DUMP` and its
/// absolute expiry in ms (`PEXPIRETIME`: -1 for none).
type Saved = (usize, Vec<u8>, Vec<u8>, i64);

/// Checkpoints and rolls back every key under one prefix, on every node given (one server,
/// or every master of a cluster: a key is restored on the node it was read from, which owns
/// its slot). Other keys, other prefixes' included, are never touched, so tests sharing a
/// server stay apart.
///
/// ```no_run
/// # async fn demo(prefix: String) {
/// use std::sync::Arc;
/// use lock_testkit::redis::{PrefixSnapshot, shared};
///
/// let loss = Arc::new(PrefixSnapshot::new(vec![shared().url()], prefix));
/// // lock_conformance::Target::new(..).with_write_loss(loss)
/// # }
/// ```
#[derive(Debug)]
pub struct PrefixSnapshot {
    nodes: Vec<String>,
    prefix: String,
    saved: Mutex<Option<Vec<Saved>>>,
}

impl PrefixSnapshot {
    /// A hook for the keys starting with `prefix` on `nodes` (`redis://` URLs).
    pub fn new(nodes: Vec<String>, prefix: impl Into<String>) -> Self {
        Self {
            nodes,
            prefix: prefix.into(),
            saved: Mutex::new(None),
        }
    }

    async fn connect(&self, node: usize) -> MultiplexedConnection {
        let url = &self.nodes[node];
        redis::Client::open(url.as_str())
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
    }

    /// Every key under the prefix on node `node`.
    async fn keys(&self, conn: &mut MultiplexedConnection) -> Vec<Vec<u8>> {
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .unwrap_or_else(|e| panic!("SCAN: {e}"));
            keys.extend(batch);
            if next == 0 {
                return keys;
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl WriteLoss for PrefixSnapshot {
    async fn checkpoint(&self) {
        let mut saved = Vec::new();
        for node in 0..self.nodes.len() {
            let mut conn = self.connect(node).await;
            for key in self.keys(&mut conn).await {
                let (dump, expires): (Option<Vec<u8>>, i64) = redis::pipe()
                    .cmd("DUMP")
                    .arg(&key)
                    .cmd("PEXPIRETIME")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("DUMP: {e}"));
                if let Some(dump) = dump {
                    saved.push((node, key, dump, expires));
                }
            }
        }
        *self
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(saved);
    }

    async fn roll_back(&self) {
        let saved = self
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .expect("roll_back without a checkpoint");
        for node in 0..self.nodes.len() {
            let mut conn = self.connect(node).await;
            for key in self.keys(&mut conn).await {
                redis::cmd("DEL")
                    .arg(&key)
                    .exec_async(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("DEL: {e}"));
            }
            for (_, key, dump, expires) in saved.iter().filter(|s| s.0 == node) {
                let mut restore = redis::cmd("RESTORE");
                restore.arg(key).arg((*expires).max(0)).arg(dump);
                if *expires > 0 {
                    restore.arg("ABSTTL");
                }
                // A key whose absolute expiry passed since the checkpoint is not restored.
                restore
                    .exec_async(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("RESTORE: {e}"));
            }
        }
    }
}

/// Escapes the characters Redis glob patterns treat specially.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
