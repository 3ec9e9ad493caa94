//! The shared conformance suite against both drivers, each test on a fresh database file.
//! The second client is an independent open of the same file (another connection, or
//! another pool), so the database, not one client's mutex, must keep contenders apart.
//! The write-loss hook restores an online backup in place (see `common::BackupRollback`).

mod common;

use std::sync::Arc;

use common::BackupRollback;

use lock_conformance::Target;
use lock_sqlite::{SqliteBackend, SqliteOptions};

async fn sqlite() -> Target {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("locks.db");
    let first = SqliteBackend::connect_with(SqliteOptions::new(&path))
        .await
        .expect("open");
    let second = SqliteBackend::connect_with(SqliteOptions::new(&path))
        .await
        .expect("open again");
    Target::new("sqlite", Arc::new(first))
        .with_second_client(Arc::new(second))
        .with_prefix("conformance/")
        .with_write_loss(Arc::new(BackupRollback::new(&path)))
        .keep_alive(dir)
}

lock_conformance::conformance_tests!(sqlite, sqlite());

#[cfg(feature = "sqlx")]
async fn sqlite_sqlx() -> Target {
    use lock_sqlite::SqlxSqliteBackend;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("app.db");
    // A pool this crate builds (busy_timeout 0: only the crate's retry loop waits)...
    let url = format!("sqlite://{}", path.display());
    let first = SqlxSqliteBackend::connect(&url).await.expect("connect");
    // ...and an application's own pool with sqlx's defaults (busy_timeout 5 s).
    let app_pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path))
        .await
        .expect("application pool");
    let second = SqlxSqliteBackend::new(app_pool).await.expect("shared pool");
    Target::new("sqlite-sqlx", Arc::new(first))
        .with_second_client(Arc::new(second))
        .with_prefix("conformance/")
        .with_write_loss(Arc::new(BackupRollback::new(&path)))
        .keep_alive(dir)
}

#[cfg(feature = "sqlx")]
lock_conformance::conformance_tests!(sqlite_sqlx, sqlite_sqlx());
