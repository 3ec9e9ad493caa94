//! What this crate's tests share: backends on the shared test server (each in a schema of its
//! own), a way to make the tables lose their latest writes, and timing assertions.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lock_conformance::{Target, WriteLoss};
use lock_core::{LockError, async_trait};
use lock_postgres::{PostgresBackend, PostgresOptions};
use lock_testkit::postgres::{shared, shared_bouncer, unique_schema};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

/// How quickly an operation must fail with `Unavailable` once the server is gone: the
/// default 2 s operation budget, plus slack for a loaded machine.
pub const FAIL_FAST: Duration = Duration::from_secs(4);

/// Options for `url` in a fresh schema.
pub fn options(url: &str, tag: &str) -> PostgresOptions {
    let opts: PostgresOptions = url.parse().expect("the test server's URL");
    opts.with_schema(unique_schema(tag))
}

/// A backend with `opts`, panicking with context.
pub async fn connect(opts: PostgresOptions) -> PostgresBackend {
    let shown = format!("{opts:?}");
    PostgresBackend::connect_with(opts)
        .await
        .unwrap_or_else(|e| panic!("connecting with {shown}: {e}"))
}

/// A superuser pool on `url`, for tests that change the tables by hand.
pub async fn admin(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("admin connection to {url}: {e}"))
}

/// Runs `sql` as the admin.
pub async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Makes a schema's lease tables lose every write since a checkpoint, as a restore from a
/// backup or a failover to a replica that lagged would, while the backends stay connected.
pub struct TableSnapshot {
    pub pool: PgPool,
    pub schema: String,
    pub table: String,
}

#[async_trait]
impl WriteLoss for TableSnapshot {
    async fn checkpoint(&self) {
        let (s, t) = (&self.schema, &self.table);
        exec(
            &self.pool,
            &format!(
                "DROP TABLE IF EXISTS \"{s}\".snap_l, \"{s}\".snap_f; \
                 CREATE TABLE \"{s}\".snap_l AS SELECT * FROM \"{s}\".\"{t}\"; \
                 CREATE TABLE \"{s}\".snap_f AS SELECT * FROM \"{s}\".\"{t}_fences\""
            ),
        )
        .await;
    }

    async fn roll_back(&self) {
        let (s, t) = (&self.schema, &self.table);
        exec(
            &self.pool,
            &format!(
                "BEGIN; DELETE FROM \"{s}\".\"{t}\"; INSERT INTO \"{s}\".\"{t}\" SELECT * FROM \"{s}\".snap_l; \
                 DELETE FROM \"{s}\".\"{t}_fences\"; INSERT INTO \"{s}\".\"{t}_fences\" SELECT * FROM \"{s}\".snap_f; COMMIT"
            ),
        )
        .await;
    }
}

/// A conformance target on `url`: two backends in one fresh schema, with a write-loss hook.
pub async fn target_on(label: &str, url: &str, tag: &str) -> Target {
    let opts = options(url, tag);
    let first = connect(opts.clone()).await;
    let second = connect(opts.clone()).await;
    let loss = TableSnapshot {
        pool: admin(url).await,
        schema: opts.schema.clone(),
        table: opts.table.clone(),
    };
    Target::new(label, Arc::new(first))
        .with_second_client(Arc::new(second))
        .with_prefix("conformance/")
        .with_write_loss(Arc::new(loss))
}

/// The shared server's URL.
pub fn server_url() -> String {
    shared().url()
}

/// The shared server's database through the shared PgBouncer (transaction mode), with
/// prepared statements off.
pub fn bouncer_url() -> String {
    format!("{}?statement_cache=0", shared_bouncer().url())
}

/// Asserts that `op` fails with `Unavailable` within `within`.
pub async fn assert_unavailable_within<T: std::fmt::Debug>(
    what: &str,
    within: Duration,
    op: impl Future<Output = Result<T, LockError>>,
) -> Duration {
    let start = Instant::now();
    let result = tokio::time::timeout(within + Duration::from_secs(5), op)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer at all"));
    let took = start.elapsed();
    match result {
        Err(e @ LockError::Unavailable { .. }) => {
            assert!(
                took <= within,
                "{what}: Unavailable after {took:?} (> {within:?}): {e}"
            );
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
    took
}
