//! `heartbeat_many`: one statement for a whole batch, and batches that share leases (a
//! renewal still in flight when the next falls due) wait for each other instead of
//! deadlocking.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{admin, connect, options};
use lock_core::{Holder, LockBackend, LockName};
use lock_testkit::postgres::PostgresServer;
use sqlx::Row;

const TTL: Duration = Duration::from_secs(60);

async fn deadlocks(pool: &sqlx::PgPool) -> i64 {
    sqlx::query("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_batches_in_any_order_never_deadlock() {
    // A server of its own, so that its deadlock count is this test's.
    let server = PostgresServer::start();
    let b = Arc::new(connect(options(&server.url(), "batches")).await);
    let admin = admin(&server.url()).await;
    let mut leases = Vec::new();
    for i in 0..300 {
        let name = LockName::new(format!("batch-{i:03}")).unwrap();
        leases.push(
            b.try_acquire(&name, &Holder::current("batch"), TTL)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let before = deadlocks(&admin).await;
    for round in 0..5 {
        // Eight batches at once over the same leases, each in another order.
        let calls: Vec<_> = (0..8)
            .map(|k| {
                let mut batch = leases.clone();
                batch.rotate_left(k * 37);
                if k % 2 == 1 {
                    batch.reverse();
                }
                let b = Arc::clone(&b);
                tokio::spawn(async move { b.heartbeat_many(&batch, TTL).await })
            })
            .collect();
        for call in calls {
            for result in call.await.unwrap() {
                let renewed = result.unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert!(renewed.expires_at > leases[0].expires_at);
            }
        }
    }
    assert_eq!(deadlocks(&admin).await, before, "the server saw deadlocks");
    // Results come back in the order asked, lost leases included.
    assert!(b.release(&leases[1]).await.unwrap());
    let results = b.heartbeat_many(&leases[..3], TTL).await;
    assert_eq!(results[0].as_ref().unwrap().name, leases[0].name);
    assert!(matches!(
        results[1],
        Err(lock_core::LockError::LeaseLost { .. })
    ));
    assert_eq!(results[2].as_ref().unwrap().name, leases[2].name);
}
