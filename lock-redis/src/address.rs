//! Parsing the URLs this backend accepts.
//!
//! - `redis://[user[:password]@]host[:port][/db][?options]`
//! - `rediss://...` the same over TLS (`#insecure` skips certificate verification)
//! - `redis+cluster://[user[:password]@]host:port,host:port,...[?options]` and
//!   `rediss+cluster://...` for a Redis Cluster, given by any of its nodes
//! - `redis+sentinel://[user[:password]@]host:port[,host:port...]/master-name[/db][?options]`
//!   and `rediss+sentinel://...`: the primary the Sentinels at those addresses name
//!
//! Options: `prefix=<key prefix>`, `timeout=<operation timeout, e.g. 2s>`,
//! `replicas=<n>` and `replica_timeout=<duration>`, and the driver's own
//! `protocol=resp2|resp3`.

use std::fmt;

use lock_core::backend_kit::config::StoreUrl;
use lock_core::{LockError, Result};
use url::Url;

use crate::BACKEND;
use crate::options::RedisOptions;

/// The URL schemes [`connect`](crate::connect) accepts.
pub const URL_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
];

/// Where the server is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// One server (or a proxy in front of several).
    Standalone(Url),
    /// The seed nodes of a Redis Cluster.
    Cluster(Vec<Url>),
    /// The primary that Sentinels name.
    Sentinel(SentinelEndpoint),
}

/// Sentinels, and how to talk to the primary they name.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelEndpoint {
    /// The Sentinels, as `redis://host:port` (or `rediss://`, with `#insecure` when the
    /// certificates are not checked).
    pub(crate) sentinels: Vec<Url>,
    /// The name the Sentinels monitor the primary by.
    pub(crate) master: String,
    /// The primary's address as a URL template: credentials, database, protocol and TLS
    /// as given, host and port `sentinel.invalid:1` (replaced by what the Sentinels name).
    pub(crate) node: Url,
}

impl Endpoint {
    /// True when the connection uses TLS.
    pub(crate) fn uses_tls(&self) -> bool {
        match self {
            Self::Standalone(url) => url.scheme() == "rediss",
            Self::Cluster(nodes) => nodes.iter().any(|n| n.scheme() == "rediss"),
            Self::Sentinel(s) => s.node.scheme() == "rediss",
        }
    }

    /// The database index (always 0 on a Redis Cluster).
    pub(crate) fn database(&self) -> i64 {
        match self {
            // `parse` wrote the path as `/<db>` with a non-negative number.
            Self::Standalone(url) => url.path().trim_start_matches('/').parse().unwrap_or(0),
            Self::Sentinel(s) => s.node.path().trim_start_matches('/').parse().unwrap_or(0),
            Self::Cluster(_) => 0,
        }
    }

    /// The nodes, for connections that go to one node (a plain-text probe when TLS fails):
    /// the server, the cluster's seed nodes, or the Sentinels.
    pub(crate) fn nodes(&self) -> Vec<Url> {
        match self {
            Self::Standalone(url) => vec![url.clone()],
            Self::Cluster(nodes) => nodes.clone(),
            Self::Sentinel(s) => s.sentinels.clone(),
        }
    }
}

impl fmt::Debug for Endpoint {
    /// Shows where, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standalone(url) => write!(f, "{}", redacted(url)),
            Self::Cluster(nodes) => {
                let shown: Vec<String> = nodes.iter().map(redacted).collect();
                write!(f, "cluster[{}]", shown.join(", "))
            }
            Self::Sentinel(s) => {
                let shown: Vec<String> = s.sentinels.iter().map(redacted).collect();
                write!(f, "sentinel[{}]/{}", shown.join(", "), s.master)
            }
        }
    }
}

fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

const USAGE: &str = "expected redis://[user[:password]@]host[:port][/db], rediss://... for \
     TLS, redis+cluster://host:port,host:port,..., or \
     redis+sentinel://host:port[,host:port...]/master-name[/db] (options: ?prefix=, \
     ?timeout=2s, ?replicas=1&replica_timeout=500ms, ?protocol=resp2|resp3)";

/// Parses a Redis URL into an endpoint and the options its query sets on top of
/// [`RedisOptions`]' defaults.
pub(crate) fn parse(input: &str) -> Result<RedisOptions> {
    let mut url = StoreUrl::parse(input, BACKEND, URL_SCHEMES, USAGE)?;
    let (tls, kind) = match url.scheme() {
        "redis" => (false, Kind::Standalone),
        "rediss" => (true, Kind::Standalone),
        "redis+cluster" => (false, Kind::Cluster),
        "rediss+cluster" => (true, Kind::Cluster),
        "redis+sentinel" => (false, Kind::Sentinel),
        _ => (true, Kind::Sentinel),
    };
    let cluster = kind == Kind::Cluster;
    let node_scheme = if tls { "rediss" } else { "redis" };
    let fragment = url.fragment().map(str::to_owned);
    if let Some(fragment) = &fragment
        && !(tls && fragment == "insecure")
    {
        return Err(url.error("the only fragment allowed is #insecure, and only with TLS"));
    }
    let Some(rest) = url.body().strip_prefix("//") else {
        return Err(url.error("it names no host"));
    };
    let rest = rest.to_owned();
    let (authority, path) = rest.split_once('/').unwrap_or((&rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let hosts: Vec<&str> = hosts.split(',').collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err(url.error("it names no host"));
    }
    if kind == Kind::Standalone && hosts.len() > 1 {
        return Err(
            url.error("several hosts need the redis+cluster:// or redis+sentinel:// scheme")
        );
    }
    let (master, path) = match kind {
        Kind::Sentinel => {
            let (master, db) = path.split_once('/').unwrap_or((path, ""));
            let master = lock_core::backend_kit::config::percent_decode(master)
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    url.error("it names no master: write redis+sentinel://host:port/master-name")
                })?;
            (Some(master), db)
        }
        _ => (None, path),
    };
    let db: i64 =
        match path.trim_end_matches('/') {
            "" => 0,
            db => db.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                url.error(format_args!("the database index {db:?} is not a number"))
            })?,
        };
    if cluster && db != 0 {
        return Err(url.error("a Redis Cluster has only database 0"));
    }
    let query = url.query();
    let prefix = query.string("prefix")?;
    let timeout = query.duration("timeout")?;
    if timeout.is_some_and(|t| t.is_zero()) {
        return Err(query.error("timeout", "it must be above zero"));
    }
    let protocol = query.string("protocol")?;
    let replicas = query.number::<usize>("replicas")?;
    let replica_timeout = query.duration("replica_timeout")?;
    let mut nodes = Vec::with_capacity(hosts.len());
    let node_hosts = if kind == Kind::Sentinel {
        // The primary's address comes from the Sentinels; the template keeps the rest.
        vec!["sentinel.invalid:1"]
    } else {
        hosts.clone()
    };
    for host in node_hosts {
        let mut node = format!("{node_scheme}://");
        if let Some(userinfo) = userinfo {
            node.push_str(userinfo);
            node.push('@');
        }
        node.push_str(host);
        node.push_str(&format!("/{db}"));
        if let Some(protocol) = &protocol {
            node.push_str("?protocol=");
            node.push_str(protocol);
        }
        if let Some(fragment) = &fragment {
            node.push('#');
            node.push_str(fragment);
        }
        let node = Url::parse(&node).map_err(|e| url.error(e))?;
        if node.host_str().is_none_or(str::is_empty) {
            return Err(url.error("it names no host"));
        }
        // Let the driver check what it will use, so a bad value fails here, not later.
        redis::Client::open(node.clone()).map_err(|e| url.error(e))?;
        nodes.push(node);
    }
    let endpoint = match (kind, master) {
        (Kind::Cluster, _) => Endpoint::Cluster(nodes),
        (Kind::Sentinel, Some(master)) => {
            let mut sentinels = Vec::with_capacity(hosts.len());
            for host in hosts {
                let mut sentinel = format!("{node_scheme}://{host}");
                if let Some(fragment) = &fragment {
                    sentinel.push('#');
                    sentinel.push_str(fragment);
                }
                let sentinel = Url::parse(&sentinel).map_err(|e| url.error(e))?;
                if sentinel.host_str().is_none_or(str::is_empty) {
                    return Err(url.error("it names no host"));
                }
                sentinels.push(sentinel);
            }
            Endpoint::Sentinel(SentinelEndpoint {
                sentinels,
                master,
                node: nodes.remove(0),
            })
        }
        _ => Endpoint::Standalone(nodes.remove(0)),
    };
    let mut opts = RedisOptions::at(endpoint);
    if let Some(prefix) = prefix {
        opts.key_prefix = prefix;
    }
    if let Some(timeout) = timeout {
        opts.operation_timeout = timeout;
    }
    if let Some(replicas) = replicas {
        opts.replicas = replicas;
    }
    if let Some(replica_timeout) = replica_timeout {
        opts.replica_timeout = replica_timeout;
    }
    opts.validate().map_err(|e| match e {
        LockError::Config { detail, .. } => url.error(detail),
        other => other,
    })?;
    url.finish()?;
    Ok(opts)
}

/// The kinds of deployment a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Standalone,
    Cluster,
    Sentinel,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lock_core::LockError;

    use super::*;

    fn ok(input: &str) -> (Endpoint, RedisOptions) {
        let opts = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        (opts.endpoint.clone(), opts)
    }

    fn config_error(input: &str) -> String {
        match parse(input) {
            Err(LockError::Config { detail, .. }) => detail,
            other => panic!("{input}: expected Config, got {other:?}"),
        }
    }

    #[test]
    fn standalone_urls() {
        let (e, o) = ok("redis://127.0.0.1:6380/3?prefix=app:&timeout=1500ms");
        let Endpoint::Standalone(url) = &e else {
            panic!()
        };
        assert_eq!(url.port(), Some(6380));
        assert_eq!(url.path(), "/3");
        assert_eq!(e.database(), 3);
        assert_eq!(o.key_prefix, "app:");
        assert_eq!(o.operation_timeout, Duration::from_millis(1500));
        assert!(!e.uses_tls());
        let (e, o) = ok("redis://localhost");
        assert_eq!(o, RedisOptions::at(e.clone()));
        assert_eq!(e.database(), 0);
        assert!(matches!(e, Endpoint::Standalone(_)));
        assert!(ok("rediss://h:1/0#insecure").0.uses_tls());
        ok("redis://user:pa%40ss@h:1/?protocol=resp3");
        ok("REDIS://h");
    }

    #[test]
    fn cluster_urls() {
        let (e, o) = ok("redis+cluster://u:p@a:1,b:2,c:3/?prefix=x:");
        let Endpoint::Cluster(nodes) = &e else {
            panic!()
        };
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[1].host_str(), Some("b"));
        assert_eq!(nodes[2].password(), Some("p"));
        assert_eq!(o.key_prefix, "x:");
        assert!(ok("rediss+cluster://a:1").0.uses_tls());
    }

    #[test]
    fn sentinel_urls() {
        let (e, o) = ok("redis+sentinel://u:p%40ss@s1:26379,s2:26380/mymaster/2?prefix=x:");
        let Endpoint::Sentinel(s) = &e else { panic!() };
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.sentinels.len(), 2);
        assert_eq!(s.sentinels[1].port(), Some(26380));
        assert_eq!(
            s.sentinels[0].password(),
            None,
            "the Sentinels get no credentials"
        );
        assert_eq!(s.node.password(), Some("p%40ss"));
        assert_eq!(e.database(), 2);
        assert_eq!(o.key_prefix, "x:");
        assert!(!e.uses_tls());
        assert!(o.is_sentinel() && !o.is_cluster());
        let (e, _) = ok("rediss+sentinel://s1:26379/m#insecure");
        assert!(e.uses_tls());
        assert_eq!(e.database(), 0);
        let Endpoint::Sentinel(s) = &e else { panic!() };
        assert_eq!(s.sentinels[0].scheme(), "rediss");
        assert_eq!(s.sentinels[0].fragment(), Some("insecure"));
        let (_, o) = ok("redis+sentinel://s1:26379/my%20master/");
        let Endpoint::Sentinel(s) = &o.endpoint else {
            panic!()
        };
        assert_eq!(s.master, "my master");
        assert!(!format!("{:?}", ok("redis+sentinel://u:s3cret@s1:1/m").0).contains("s3cret"));
    }

    #[test]
    fn replica_options() {
        let (_, o) = ok("redis://h?replicas=2&replica_timeout=250ms");
        assert_eq!(
            (o.replicas, o.replica_timeout),
            (2, Duration::from_millis(250))
        );
        let (_, o) = ok("redis://h");
        assert_eq!(o.replicas, 0);
        for bad in [
            "redis://h?replicas=-1",
            "redis://h?replicas=two",
            "redis://h?replicas=1&replica_timeout=0s",
            "redis://h?replicas=1&replica_timeout=1s",
            "redis://h?replicas=1&replica_timeout=900ms&timeout=800ms",
            "redis://h?replica_timeout=100",
        ] {
            let detail = config_error(bad);
            assert!(detail.contains("replica"), "{bad}: {detail}");
        }
    }

    #[test]
    fn bad_urls_are_config_errors_that_explain() {
        for bad in [
            "",
            "localhost:6379",
            "http://h",
            "redis://",
            "redis:h",
            "redis://h:notaport",
            "redis://h/notadb",
            "redis://h/-1",
            "redis://a:1,b:2",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:1/2",
            "redis+sentinel://s1:1",
            "redis+sentinel://s1:1/",
            "redis+sentinel://s1:1/m/x",
            "redis+sentinel://s1:1,,s2:2/m",
            "redis://h?prefx=typo",
            "redis://h?timeout=0s",
            "redis://h?timeout=1500",
            "redis://h?timeout_ms=1500",
            "redis://h?protocol=9",
            "redis://h#insecure",
            "rediss://h#other",
        ] {
            let detail = config_error(bad);
            assert!(detail.contains("redis://"), "{bad}: {detail}");
        }
        let detail = config_error("redis://h?prefx=typo");
        assert!(
            detail.contains(
                "unknown option `prefx` (known: prefix, timeout, protocol, replicas, \
                 replica_timeout)"
            ),
            "{detail}"
        );
    }

    #[test]
    fn passwords_are_never_shown() {
        let detail = config_error("redis://me:s3cret@h/notadb");
        assert!(!detail.contains("s3cret"), "{detail}");
        let (e, _) = ok("redis://me:s3cret@h:1/");
        assert!(!format!("{e:?}").contains("s3cret"));
        let (e, _) = ok("redis+cluster://me:s3cret@a:1,b:2");
        assert!(!format!("{e:?}").contains("s3cret"));
    }
}
