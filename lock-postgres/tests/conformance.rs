//! The whole conformance suite against the test binary's PostgreSQL server (a private
//! cluster, or `LOCK_TEST_POSTGRES_URL`), directly and through a private PgBouncer in
//! transaction mode with prepared statements off. Each test has its own schema.

mod common;

use common::{bouncer_url, server_url, target_on};
use lock_conformance::Target;

async fn direct() -> Target {
    target_on("postgres", &server_url(), "conformance").await
}

async fn through_pgbouncer() -> Target {
    target_on("postgres-pgbouncer", &bouncer_url(), "bouncer").await
}

lock_conformance::conformance_tests!(postgres, direct());
lock_conformance::conformance_tests!(postgres_pgbouncer, through_pgbouncer());
