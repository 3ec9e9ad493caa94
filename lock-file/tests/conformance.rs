//! The shared conformance suite, run as `file::<case>` against two independent
//! `FileBackend`s (two opens, as two processes would have) on one fresh directory.

use std::sync::Arc;

use lock_conformance::Target;
use lock_file::{FileBackend, FileOptions};

async fn target() -> Target {
    let tmp = tempfile::tempdir().expect("create a temporary lock directory");
    let first =
        FileBackend::connect_with(FileOptions::new(tmp.path()).with_create_if_missing(false))
            .await
            .expect("open the lock directory");
    let second =
        FileBackend::connect_with(FileOptions::new(tmp.path()).with_create_if_missing(false))
            .await
            .expect("open it a second time");
    Target::new("file", Arc::new(first))
        .with_second_client(Arc::new(second))
        .with_prefix("conformance/")
        .keep_alive(tmp)
}

lock_conformance::conformance_tests!(file, target());
