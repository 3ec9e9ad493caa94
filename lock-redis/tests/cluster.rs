//! The conformance suite against a 3-master Redis Cluster of private `redis-server`
//! processes, plus checks of where keys land.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lock_conformance::Target;
use lock_core::{Holder, LockBackend, LockName};
use lock_redis::{RedisBackend, RedisOptions};
use lock_testkit::redis::{PrefixSnapshot, shared_cluster as cluster, unique_prefix};

async fn cluster_backend(prefix: &str) -> RedisBackend {
    let opts: RedisOptions = cluster().url().parse().expect("the test cluster's URL");
    RedisBackend::connect_with(opts.with_key_prefix(prefix))
        .await
        .unwrap_or_else(|e| panic!("connecting to the cluster: {e}"))
}

async fn target() -> Target {
    let prefix = unique_prefix("cluster");
    let first = cluster_backend(&prefix).await;
    // The second client is given the nodes one by one, the other way to name a cluster.
    let nodes = RedisOptions::cluster(cluster().node_urls()).expect("the node URLs");
    let second = RedisBackend::connect_with(nodes.with_key_prefix(prefix.clone()))
        .await
        .unwrap();
    assert!(first.is_cluster() && second.is_cluster());
    // Rolls back the keys under the prefix on every master (each key on the node owning it).
    let loss = PrefixSnapshot::new(cluster().node_urls(), prefix);
    Target::new("redis-cluster", Arc::new(first))
        .with_second_client(Arc::new(second))
        .with_prefix("cluster/")
        .with_write_loss(Arc::new(loss))
}

lock_conformance::conformance_tests!(redis_cluster, target());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_names_keys_share_a_slot_and_names_spread_over_every_master() {
    let b = cluster_backend(&unique_prefix("slots")).await;
    let mut nodes = Vec::new();
    for url in cluster().node_urls() {
        nodes.push(common::raw(&url).await);
    }
    let mut masters_used = BTreeSet::new();
    for i in 0..30 {
        let name = LockName::new(format!("spread-{i}")).unwrap();
        // Half the names are semaphores (a permits hash under the same key).
        let lease = if i % 2 == 0 {
            b.try_acquire(&name, &Holder::current("spread"), Duration::from_secs(60))
                .await
        } else {
            b.try_acquire_permit(
                &name,
                &Holder::current("spread"),
                Duration::from_secs(60),
                3,
            )
            .await
        }
        .unwrap()
        .unwrap();
        let (lease_key, fence_key) = b.keys_of(&name);
        // Every key of a name: lease, fence counter, queue of waiting clients.
        let mut slots = BTreeSet::new();
        for suffix in [":lease", ":fence", ":queue"] {
            let key = lease_key.replace(":lease", suffix);
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query_async(&mut nodes[0])
                .await
                .unwrap();
            slots.insert(slot);
        }
        assert_eq!(
            slots.len(),
            1,
            "{name:?}'s keys are in different slots: {slots:?}"
        );
        let mut holders = Vec::new();
        for (n, node) in nodes.iter_mut().enumerate() {
            // READONLY-free check: a node answers EXISTS only for keys it owns, and
            // redirects (an error) for the others.
            let exists: redis::RedisResult<u64> = redis::cmd("EXISTS")
                .arg(&lease_key)
                .arg(&fence_key)
                .query_async(node)
                .await;
            if exists == Ok(2) {
                holders.push(n);
            }
        }
        assert_eq!(holders.len(), 1, "{name:?} lives on nodes {holders:?}");
        masters_used.insert(holders[0]);
        assert!(b.release(&lease).await.unwrap());
    }
    assert_eq!(
        masters_used.len(),
        3,
        "30 names used only masters {masters_used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_many_on_a_cluster_renews_leases_on_every_master() {
    let b = cluster_backend(&unique_prefix("many")).await;
    assert!(!b.capabilities().batched_heartbeat);
    let ttl = Duration::from_secs(60);
    let mut leases = Vec::new();
    for i in 0..9 {
        let name = LockName::new(format!("many-{i}")).unwrap();
        leases.push(
            b.try_acquire(&name, &Holder::current("m"), ttl)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(b.release(&leases[4]).await.unwrap());
    let results = b.heartbeat_many(&leases, ttl).await;
    for (i, result) in results.iter().enumerate() {
        if i == 4 {
            assert!(
                matches!(result, Err(lock_core::LockError::LeaseLost { .. })),
                "{result:?}"
            );
        } else {
            assert_eq!(result.as_ref().unwrap().fence, leases[i].fence);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_waited_for_on_the_master_that_ran_the_grant() {
    // The test cluster has no replicas: WAIT 1, sent to each name's master, answers 0.
    let url = format!(
        "{}?prefix={}&replicas=1&replica_timeout=100ms",
        cluster().url(),
        unique_prefix("cluster-wait")
    );
    let b = lock_redis::connect(&url).await.unwrap();
    for i in 0..6 {
        let name = LockName::new(format!("wait-{i}")).unwrap();
        match b
            .try_acquire(&name, &Holder::current("w"), Duration::from_secs(60))
            .await
        {
            Err(e @ lock_core::LockError::Unavailable { .. }) => {
                assert!(e.to_string().contains("only 0 of the 1 replicas"), "{e}");
            }
            other => panic!("{name}: expected Unavailable, got {other:?}"),
        }
        assert!(
            b.inspect(&name).await.unwrap().is_none(),
            "the grant was given back"
        );
    }
}
