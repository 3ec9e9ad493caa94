//! Faults against private PostgreSQL clusters: the server killed mid-hold and restarted,
//! paused past the TTL, lease rows changed by hand, a statement timeout, a read-only server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{FAIL_FAST, admin, assert_unavailable_within, connect, exec, options};
use lock_core::{Holder, LockBackend, LockError, LockName, LockOptions, Locker, LossReason};
use lock_testkit::postgres::PostgresServer;

fn name(s: &str) -> LockName {
    LockName::new(s).unwrap()
}

const LONG: Duration = Duration::from_secs(60);

/// How late after its deadline a guard may report its loss (scheduling delay only).
const LOSS_SLACK: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_gives_unavailable_and_the_same_backend_recovers_with_higher_fences() {
    let mut server = PostgresServer::start();
    let b = connect(options(&server.url(), "killed")).await;
    let ttl = Duration::from_secs(3);
    let locker = Locker::new(Arc::new(b.clone()));
    let guard = locker
        .lock("killed", LockOptions::default().with_ttl(ttl))
        .await
        .unwrap();
    let lease = guard.lease();
    // When the guard reports the loss, seen apart from the store calls below.
    let lost = guard.lost();
    let loss = tokio::spawn(async move {
        let reason = lost.await;
        (reason, Instant::now(), SystemTime::now())
    });
    server.kill();

    assert_unavailable_within("heartbeat", FAIL_FAST, b.heartbeat(&lease, ttl)).await;
    assert_unavailable_within("inspect", FAIL_FAST, b.inspect(&lease.name)).await;
    assert_unavailable_within(
        "acquire",
        FAIL_FAST,
        b.try_acquire(&name("other"), &Holder::current("x"), ttl),
    )
    .await;

    let (reason, noticed, noticed_wall) = tokio::time::timeout(ttl + Duration::from_secs(2), loss)
        .await
        .expect("the guard must report the loss")
        .unwrap();
    assert_eq!(reason, LossReason::DeadlinePassed);
    let late = noticed.saturating_duration_since(guard.deadline());
    assert!(
        noticed >= guard.deadline(),
        "reported lost before its deadline"
    );
    assert!(
        late <= LOSS_SLACK,
        "reported lost {late:?} after its deadline"
    );
    assert!(
        noticed_wall < lease.expires_at,
        "reported lost after the lease expired"
    );

    // The server returns with its data: the same backend value works again, and the next
    // fence of the name is higher.
    server.restart();
    let start = Instant::now();
    let next = loop {
        match b
            .try_acquire(&lease.name, &Holder::current("after"), LONG)
            .await
        {
            Ok(Some(next)) => break next,
            // The old lease may still be live on the server's clock: it was never released.
            Ok(None) | Err(LockError::Unavailable { .. })
                if start.elapsed() < ttl + Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("after the restart: {other:?}"),
        }
    };
    assert!(
        next.fence > lease.fence,
        "{} after {}",
        next.fence,
        lease.fence
    );
    assert!(b.release(&next).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_past_the_ttl_never_reports_a_false_success() {
    let server = PostgresServer::start();
    let opts = options(&server.url(), "paused").with_timeout(Duration::from_millis(800));
    let b = connect(opts.clone()).await;
    let other = connect(opts).await;
    let ttl = Duration::from_secs(1);
    let n = name("paused");
    let lease = b
        .try_acquire(&n, &Holder::current("a"), ttl)
        .await
        .unwrap()
        .unwrap();

    server.pause();
    // Everything sent while the server is stopped gives up: none of it may claim success.
    let paused_at = Instant::now();
    let mut attempts = 0;
    while paused_at.elapsed() < ttl + Duration::from_millis(500) {
        attempts += 1;
        match b.heartbeat(&lease, ttl).await {
            Err(LockError::Unavailable { .. }) => {}
            other => panic!("a heartbeat during the pause answered {other:?}"),
        }
    }
    assert!(attempts >= 1);
    server.resume();

    // The heartbeats that waited in the server's queue ran after the TTL: none renewed it.
    match b.heartbeat(&lease, ttl).await {
        Err(LockError::LeaseLost { .. }) => {}
        other => panic!("the lease outlived its TTL through the pause: {other:?}"),
    }
    assert!(!b.release(&lease).await.unwrap(), "released what was lost");
    let next = other
        .try_acquire(&n, &Holder::current("b"), LONG)
        .await
        .unwrap()
        .expect("free after the TTL");
    assert!(next.fence > lease.fence);
    assert!(other.release(&next).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_deleted_or_changed_by_hand_are_lease_lost_or_corrupt_never_a_panic() {
    let url = common::server_url();
    let opts = options(&url, "by_hand");
    let b = connect(opts.clone()).await;
    let admin = admin(&url).await;
    let (leases, _) = b.tables();
    let holder = Holder::current("a");

    // Deleted.
    let lease = b
        .try_acquire(&name("deleted"), &holder, LONG)
        .await
        .unwrap()
        .unwrap();
    exec(
        &admin,
        &format!("DELETE FROM {leases} WHERE name = 'deleted'"),
    )
    .await;
    assert!(matches!(
        b.heartbeat(&lease, LONG).await,
        Err(LockError::LeaseLost { .. })
    ));
    assert!(!b.release(&lease).await.unwrap());

    // Another token written over ours.
    let lease = b
        .try_acquire(&name("token"), &holder, LONG)
        .await
        .unwrap()
        .unwrap();
    exec(
        &admin,
        &format!("UPDATE {leases} SET token = 'someone else' WHERE name = 'token'"),
    )
    .await;
    assert!(matches!(
        b.heartbeat(&lease, LONG).await,
        Err(LockError::LeaseLost { .. })
    ));
    assert!(
        !b.release(&lease).await.unwrap(),
        "never frees another token's lease"
    );
    assert!(b.inspect(&name("token")).await.unwrap().is_some());

    // Expired by hand.
    let lease = b
        .try_acquire(&name("expired"), &holder, LONG)
        .await
        .unwrap()
        .unwrap();
    exec(
        &admin,
        &format!(
            "UPDATE {leases} SET expires_at = now() - interval '1 second' WHERE name = 'expired'"
        ),
    )
    .await;
    assert!(matches!(
        b.heartbeat(&lease, LONG).await,
        Err(LockError::LeaseLost { .. })
    ));
    assert!(b.inspect(&name("expired")).await.unwrap().is_none());

    // Garbage in the fence and pid: a typed Corrupt error, and force_release clears it.
    let lease = b
        .try_acquire(&name("garbage"), &holder, LONG)
        .await
        .unwrap()
        .unwrap();
    exec(
        &admin,
        &format!("UPDATE {leases} SET fence = -5, pid = -1 WHERE name = 'garbage'"),
    )
    .await;
    match b.inspect(&name("garbage")).await {
        Err(LockError::Corrupt { detail, .. }) => assert!(detail.contains("fence"), "{detail}"),
        other => panic!("inspecting a damaged row: {other:?}"),
    }
    // The heartbeat does not read the fence: the lease is still this token's.
    assert!(b.heartbeat(&lease, LONG).await.is_ok());
    // list skips the damaged row instead of failing.
    let listed = b.list("").await.unwrap();
    assert!(
        listed.iter().all(|i| i.name.as_str() != "garbage"),
        "{listed:?}"
    );
    assert!(b.force_release(&name("garbage")).await.unwrap());
    let again = b
        .try_acquire(&name("garbage"), &holder, LONG)
        .await
        .unwrap()
        .unwrap();
    assert!(again.fence > lease.fence, "the counter survives the damage");

    // A fence counter at its limit: Corrupt, and nothing is granted.
    let (_, fences) = b.tables();
    exec(
        &admin,
        &format!("UPDATE {fences} SET fence = 9007199254740991 WHERE name = 'garbage'"),
    )
    .await;
    assert!(b.release(&again).await.unwrap());
    match b.try_acquire(&name("garbage"), &holder, LONG).await {
        Err(LockError::Corrupt { .. }) => {}
        other => panic!("an exhausted fence counter: {other:?}"),
    }
    assert!(b.inspect(&name("garbage")).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_retried_then_a_clear_unavailable_error() {
    let url = common::server_url();
    let opts = options(&url, "stmt_timeout");
    let schema = opts.schema.clone();
    let b = connect(opts.clone()).await;
    let lease = b
        .try_acquire(&name("slow"), &Holder::current("a"), LONG)
        .await
        .unwrap()
        .unwrap();
    // A second backend whose role cuts statements at 200 ms, while an admin transaction
    // holds the lease row: each heartbeat is cancelled by the server, retried, and the
    // caller gets Unavailable naming the statement timeout once the budget runs out.
    let slow_url = format!("{url}?options=-c%20statement_timeout%3D200&schema={schema}&timeout=1s");
    let slow = lock_postgres::PostgresBackend::connect(&slow_url)
        .await
        .unwrap();
    let admin = admin(&url).await;
    let mut tx = admin.begin().await.unwrap();
    let (leases, _) = b.tables();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {leases} WHERE name = 'slow' FOR UPDATE"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    match slow.heartbeat(&lease, LONG).await {
        Err(e @ LockError::Unavailable { .. }) => {
            let text = format!(
                "{e}: {:?}",
                std::error::Error::source(&e).map(ToString::to_string)
            );
            assert!(text.contains("statement timeout"), "{text}");
            assert!(
                text.contains("?timeout="),
                "says how to wait longer: {text}"
            );
        }
        other => panic!("a heartbeat cut by statement_timeout: {other:?}"),
    }
    tx.rollback().await.unwrap();
    assert!(
        slow.heartbeat(&lease, LONG).await.is_ok(),
        "works once the row is free"
    );
    assert!(b.release(&lease).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_server_gives_config_errors_that_say_so() {
    let url = common::server_url();
    let opts = options(&url, "read_only");
    let schema = opts.schema.clone();
    // The tables exist (created read-write); a read-only session can look but not take.
    let b = connect(opts).await;
    let ro = format!("{url}?options=-c%20default_transaction_read_only%3Don&schema={schema}");
    let reader = lock_postgres::PostgresBackend::connect(&ro).await.unwrap();
    assert!(reader.inspect(&name("x")).await.unwrap().is_none());
    match reader
        .try_acquire(&name("x"), &Holder::current("r"), LONG)
        .await
    {
        Err(LockError::Config { detail, .. }) => assert!(detail.contains("read-only"), "{detail}"),
        other => panic!("acquiring on a read-only server: {other:?}"),
    }
    let lease = b
        .try_acquire(&name("x"), &Holder::current("w"), LONG)
        .await
        .unwrap()
        .unwrap();
    match reader.release(&lease).await {
        Err(LockError::Config { detail, .. }) => assert!(detail.contains("read-only"), "{detail}"),
        other => panic!("releasing on a read-only server: {other:?}"),
    }
    assert!(b.release(&lease).await.unwrap(), "the lease was untouched");
    // Without tables yet, a read-only connection cannot create them: it says what to run.
    let fresh = lock_testkit::postgres::unique_schema("read_only_fresh");
    let ro = format!("{url}?options=-c%20default_transaction_read_only%3Don&schema={fresh}");
    match lock_postgres::PostgresBackend::connect(&ro).await {
        Err(LockError::Config { detail, .. }) => {
            assert!(
                detail.contains("read-only") && detail.contains("CREATE TABLE"),
                "{detail}"
            );
        }
        other => panic!("creating tables on a read-only server: {other:?}"),
    }
}
