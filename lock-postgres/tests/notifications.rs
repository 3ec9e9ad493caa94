//! Release hand-off: waiters wake on `NOTIFY`; with the `LISTEN` connection terminated by an
//! administrator (and unable to come back), they poll; when it can, it comes back. Through a
//! PgBouncer in transaction mode, no `LISTEN` goes through the pooler.

mod common;

use std::time::{Duration, Instant};

use common::{admin, bouncer_url, connect, exec, options, server_url};
use lock_core::backend_kit::time::monotonic_now;
use lock_core::{Holder, LockBackend, LockName};
use lock_postgres::PostgresBackend;

const LONG: Duration = Duration::from_secs(60);

/// Waits until `b.is_listening()` is `want`, for at most `within`.
async fn until_listening(b: &PostgresBackend, want: bool, within: Duration) {
    let start = Instant::now();
    while b.is_listening() != want {
        assert!(
            start.elapsed() < within,
            "is_listening() stayed {} for {within:?}",
            !want
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long `waiter.wait_for_change` (up to 10 s) takes to return once `holder` releases
/// `name`'s lease (which it takes first) from another backend.
async fn wake_after_release(
    holder: &PostgresBackend,
    waiter: &PostgresBackend,
    name: &LockName,
) -> Duration {
    let lease = holder
        .try_acquire(name, &Holder::current("holder"), LONG)
        .await
        .unwrap()
        .expect("free");
    let since = monotonic_now();
    let waiting = {
        let (waiter, name) = (waiter.clone(), name.clone());
        tokio::spawn(async move {
            waiter
                .wait_for_change(&name, since, Duration::from_secs(10))
                .await;
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let released = Instant::now();
    assert!(holder.release(&lease).await.unwrap());
    waiting.await.unwrap().saturating_duration_since(released)
}

/// With the listener up, a wait with nothing released lasts its whole budget: the backend
/// does not poll (its poll interval is far shorter).
async fn assert_sleeps_its_budget(waiter: &PostgresBackend, name: &LockName) {
    let budget = Duration::from_millis(800);
    let start = Instant::now();
    waiter.wait_for_change(name, monotonic_now(), budget).await;
    let slept = start.elapsed();
    assert!(
        slept >= budget,
        "returned after {slept:?} with nothing released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_falls_back_to_polling_and_comes_back() {
    let url = server_url();
    let opts = options(&url, "listener");
    // The LISTEN session logs in as a role of its own, so the test can keep it out.
    let role = format!("l_{}", opts.schema);
    let admin = admin(&url).await;
    exec(&admin, &format!("CREATE ROLE \"{role}\" LOGIN")).await;
    let listen_url = url.replacen("postgres@", &format!("{role}@"), 1);
    let waiter = connect(
        opts.clone()
            .with_listen_url(listen_url.parse().unwrap())
            .with_poll(Duration::from_millis(200)),
    )
    .await;
    let holder = connect(opts.with_listen(false)).await;
    let name = LockName::new("handoff").unwrap();
    waiter
        .wait_for_change(&name, monotonic_now(), Duration::from_millis(1))
        .await;
    until_listening(&waiter, true, Duration::from_secs(10)).await;

    // Up: a wait with nothing released sleeps its whole budget (no polling), and a release
    // wakes one long before its 10 s.
    assert_sleeps_its_budget(&waiter, &name).await;
    let woke = wake_after_release(&holder, &waiter, &name).await;
    assert!(
        woke < Duration::from_secs(2),
        "NOTIFY wake-up took {woke:?}"
    );

    // An administrator terminates the LISTEN session, and the role may not log in again.
    exec(&admin, &format!("ALTER ROLE \"{role}\" NOLOGIN")).await;
    exec(
        &admin,
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"),
    )
    .await;
    until_listening(&waiter, false, Duration::from_secs(10)).await;
    // Down: a waiter returns within a poll interval (jittered: 100 to 200 ms), released or
    // not, so the Locker looks again: it never sleeps out its whole wait.
    let start = Instant::now();
    waiter
        .wait_for_change(&name, monotonic_now(), Duration::from_secs(10))
        .await;
    let polled = start.elapsed();
    assert!(
        polled < Duration::from_millis(1000),
        "a wait while down took {polled:?}"
    );
    let woke = wake_after_release(&holder, &waiter, &name).await;
    assert!(
        woke < Duration::from_millis(1000),
        "a polling wake-up took {woke:?}"
    );
    // And a Locker waiting in another backend gets the lock once it is released.
    let lease = holder
        .try_acquire(&name, &Holder::current("h"), LONG)
        .await
        .unwrap()
        .unwrap();
    let locker = lock_core::Locker::new(std::sync::Arc::new(waiter.clone()));
    let waiting = tokio::spawn({
        let name = name.clone();
        async move {
            locker
                .lock(
                    name,
                    lock_core::LockOptions::default().with_wait(Duration::from_secs(10)),
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(holder.release(&lease).await.unwrap());
    let guard = waiting.await.unwrap().expect("the waiter gets the lock");
    guard.release().await.unwrap();

    // The role may log in again: the listener comes back by itself, and NOTIFY wakes again.
    exec(&admin, &format!("ALTER ROLE \"{role}\" LOGIN")).await;
    until_listening(&waiter, true, Duration::from_secs(10)).await;
    assert_sleeps_its_budget(&waiter, &name).await;
    let woke = wake_after_release(&holder, &waiter, &name).await;
    assert!(
        woke < Duration::from_secs(2),
        "NOTIFY wake-up after coming back took {woke:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_waiters_poll_or_listen_on_a_direct_session() {
    let pooled = options(&bouncer_url(), "bouncer_wake");
    let schema = pooled.schema.clone();
    // No LISTEN through the pooler: waiters poll.
    let polling = connect(pooled.clone().with_poll(Duration::from_millis(200))).await;
    assert!(!polling.capabilities().notifies_release);
    let holder = connect(pooled.clone()).await;
    let name = LockName::new("pooled").unwrap();
    let woke = wake_after_release(&holder, &polling, &name).await;
    assert!(woke < Duration::from_millis(1000), "{woke:?}");
    assert!(!polling.is_listening());
    // listen_url: statements through the pooler, LISTEN on the server itself.
    let direct: sqlx::postgres::PgConnectOptions = server_url().parse().unwrap();
    let listening = connect(
        pooled
            .with_schema(schema)
            .with_listen_url(direct)
            .with_poll(Duration::from_secs(5)),
    )
    .await;
    listening
        .wait_for_change(&name, monotonic_now(), Duration::from_millis(1))
        .await;
    until_listening(&listening, true, Duration::from_secs(10)).await;
    // Polling every 5 s would take at least 2.5 s (jittered): this is the NOTIFY.
    let woke = wake_after_release(&holder, &listening, &name).await;
    assert!(woke < Duration::from_secs(2), "{woke:?}");
}
