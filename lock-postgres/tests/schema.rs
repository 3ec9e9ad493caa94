//! The lease tables: created once on first connect, refused (and left untouched) when they
//! are someone else's or newer, and a role that may not create them is told what to run.

mod common;

use common::{admin, connect, exec, options, server_url};
use lock_core::{LockBackend, LockError};
use lock_postgres::PostgresBackend;
use sqlx::{AssertSqlSafe, Row};
use std::time::{Duration, Instant};

fn config_detail(result: Result<PostgresBackend, LockError>) -> String {
    match result {
        Err(LockError::Config { detail, .. }) => detail,
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connections_create_the_tables_once() {
    let opts = options(&server_url(), "create");
    let connecting: Vec<_> = (0..8)
        .map(|_| tokio::spawn(PostgresBackend::connect_with(opts.clone())))
        .collect();
    for backend in connecting {
        backend
            .await
            .unwrap()
            .expect("every concurrent first connection succeeds");
    }
    let admin = admin(&server_url()).await;
    let row = sqlx::query(
        "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c JOIN pg_namespace n \
         ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = 'leaselock_leases'",
    )
    .bind(&opts.schema)
    .fetch_one(&admin)
    .await
    .unwrap();
    let comment: String = row.get(0);
    assert_eq!(comment, "leaselock leases, schema version 1");
}

/// lock-postgres's `ADVISORY_CLASS` ("LLck"), the first key of its advisory locks.
const ADVISORY_CLASS: i32 = 0x4c4c_636b;

/// The second key of the lock that schema creation takes: the hash of
/// `schema:<schema>.<table>/`.
fn creation_key(schema: &str) -> String {
    format!("hashtext('schema:{schema}.leaselock_leases/')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_connections_wait_for_a_creator_together_and_create_if_it_gives_up() {
    let url = server_url();
    let opts = options(&url, "together").with_timeout(Duration::from_secs(60));
    let admin = admin(&url).await;
    // Another program is creating the tables: it holds the creation lock.
    let mut creator = admin.begin().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SELECT pg_advisory_xact_lock({ADVISORY_CLASS}, {})",
        creation_key(&opts.schema)
    )))
    .execute(&mut *creator)
    .await
    .unwrap();
    let connecting: Vec<_> = (0..4)
        .map(|_| tokio::spawn(PostgresBackend::connect_with(opts.clone())))
        .collect();
    // All four wait for it at once, on the shared lock (not in a queue for the exclusive one).
    let waiting = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
         AND mode = 'ShareLock' AND classid = {ADVISORY_CLASS} AND objid = {}::oid",
        creation_key(&opts.schema)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = sqlx::raw_sql(AssertSqlSafe(waiting.clone()))
            .fetch_one(&admin)
            .await
            .unwrap();
        let n: i64 = row.get(0);
        if n == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of 4 connections wait on the shared creation lock after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connecting.iter().all(|c| !c.is_finished()));
    // It gives up without creating them: one of the waiters creates them, and all connect.
    creator.rollback().await.unwrap();
    for backend in connecting {
        let backend = backend
            .await
            .unwrap()
            .expect("every waiting connection succeeds");
        let name = lock_core::LockName::new("together").unwrap();
        assert!(backend.inspect(&name).await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_table_is_refused_and_left_untouched() {
    let url = server_url();
    let opts = options(&url, "foreign");
    let admin = admin(&url).await;
    let s = &opts.schema;
    exec(
        &admin,
        &format!(
            "CREATE SCHEMA \"{s}\"; CREATE TABLE \"{s}\".leaselock_leases (id integer); \
             INSERT INTO \"{s}\".leaselock_leases VALUES (42)"
        ),
    )
    .await;
    let detail = config_detail(PostgresBackend::connect_with(opts.clone()).await);
    assert!(detail.contains("not created by it"), "{detail}");
    assert!(
        detail.contains("untouched") && detail.contains("?table="),
        "{detail}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM \"{s}\".leaselock_leases WHERE id = 42"
    )))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(
        row.get::<i64, _>(0),
        1,
        "the foreign table was not modified"
    );
    // Another table name in the same schema works.
    let other = connect(opts.with_table("my_locks")).await;
    assert!(other.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_version_is_refused() {
    let url = server_url();
    let opts = options(&url, "newer");
    let b = connect(opts.clone()).await;
    let (leases, _) = b.tables();
    drop(b);
    let admin = admin(&url).await;
    exec(
        &admin,
        &format!("COMMENT ON TABLE {leases} IS 'leaselock leases, schema version 2'"),
    )
    .await;
    let detail = config_detail(PostgresBackend::connect_with(opts).await);
    assert!(
        detail.contains("schema version 2") && detail.contains("Upgrade"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_create_is_given_the_ddl_and_it_works() {
    let url = server_url();
    let opts = options(&url, "no_create");
    let s = opts.schema.clone();
    let role = format!("r_{s}");
    let admin = admin(&url).await;
    exec(
        &admin,
        &format!(
            "CREATE ROLE \"{role}\" LOGIN; CREATE SCHEMA \"{s}\"; \
             GRANT USAGE ON SCHEMA \"{s}\" TO \"{role}\""
        ),
    )
    .await;
    let as_role = url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(
        as_role, url,
        "the test server's URL names the postgres user"
    );
    let role_opts = options(&as_role, "unused").with_schema(s.clone());
    let detail = config_detail(PostgresBackend::connect_with(role_opts.clone()).await);
    assert!(detail.contains("may not create them"), "{detail}");
    // The message has the exact DDL: run it (as an administrator), grant, connect again.
    let ddl_start = detail
        .find("CREATE TABLE")
        .expect("the DDL is in the message");
    let ddl_end = detail.find("and grant").expect("then the grant");
    let ddl = &detail[ddl_start..ddl_end];
    exec(&admin, ddl).await;
    exec(
        &admin,
        &format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{s}\" TO \"{role}\""
        ),
    )
    .await;
    let b = connect(role_opts).await;
    let lease = b
        .try_acquire(
            &lock_core::LockName::new("granted").unwrap(),
            &lock_core::Holder::current("r"),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap()
        .expect("free");
    assert!(b.release(&lease).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_databases_are_config_errors_without_the_password() {
    let url = server_url();
    let missing_db = match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/no_such_database_here"),
        None => panic!("{url}"),
    };
    let detail = config_detail(PostgresBackend::connect(&missing_db).await);
    assert!(detail.contains("no_such_database_here"), "{detail}");
    let with_password = url.replacen("postgres@", "nobody_here:s3cret@", 1);
    let detail = config_detail(PostgresBackend::connect(&with_password).await);
    assert!(!detail.contains("s3cret"), "{detail}");
}
