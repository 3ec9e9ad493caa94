//! [`RedisCluster`]: private servers joined into a Redis Cluster.

use std::time::{Duration, Instant};

use super::RedisServer;

/// Hash slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// A Redis Cluster of private `redis-server` processes on loopback ports, one master each
/// and no replicas, with the slots split evenly. Dropping it stops every node.
///
/// ```no_run
/// use lock_testkit::redis::RedisCluster;
///
/// let cluster = RedisCluster::start(3);
/// let url = cluster.url(); // redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes, assigns the slots, joins them, and waits until every node
    /// reports `cluster_state:ok`.
    ///
    /// # Panics
    ///
    /// When `masters` is zero, no `redis-server` is installed, or the cluster does not
    /// form within 30 seconds.
    pub fn start(masters: u16) -> Self {
        assert!(masters > 0, "a cluster needs at least one master");
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_cluster_node(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let cluster = Self { nodes };
        cluster
            .form(masters)
            .unwrap_or_else(|e| panic!("the Redis Cluster did not form: {e}"));
        cluster
    }

    fn form(&self, masters: u16) -> redis::RedisResult<()> {
        let per_node = SLOTS / masters;
        let mut first = None;
        for (i, node) in (0_u16..).zip(&self.nodes) {
            let mut con = connect(node)?;
            let start = i * per_node;
            let end = if i + 1 == masters {
                SLOTS - 1
            } else {
                start + per_node - 1
            };
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(start)
                .arg(end)
                .exec(&mut con)?;
            redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .exec(&mut con)?;
            if first.is_none() {
                first = Some(con);
            }
        }
        if let Some(mut con) = first {
            for node in &self.nodes[1..] {
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(node.port())
                    .arg(bus_port_of(node)?)
                    .exec(&mut con)?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ready = true;
            for node in &self.nodes {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut connect(node)?)?;
                ready &= info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()));
            }
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("no cluster_state:ok within 30 s").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,...`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Each node's `redis://` URL.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

fn connect(node: &RedisServer) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(node.url())?.get_connection_with_timeout(Duration::from_secs(5))
}

fn bus_port_of(node: &RedisServer) -> redis::RedisResult<u16> {
    node.cluster_port()
        .ok_or_else(|| std::io::Error::other("a cluster node without a bus port").into())
}
