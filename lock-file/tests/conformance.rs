//! The shared conformance suite, run as `file::<case>` against two independent
//! `FileBackend`s (two opens, as two processes would have) on one fresh directory, with a
//! write-loss hook that puts every lease file's old bytes back in place.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lock_conformance::{Target, WriteLoss};
use lock_core::async_trait;
use lock_file::{FileBackend, FileOptions};

/// Makes the lock directory lose its latest writes, as a restored backup or a power loss
/// without `sync=true` would: the checkpoint copies every lease file's bytes, the roll-back
/// writes them back in place (see `support::write_back`).
struct LostWrites {
    dir: PathBuf,
    checkpoint: Mutex<Vec<(PathBuf, Vec<u8>)>>,
}

#[async_trait]
impl WriteLoss for LostWrites {
    async fn checkpoint(&self) {
        *self.checkpoint.lock().unwrap() = support::snapshot_lease_files(&self.dir);
    }

    async fn roll_back(&self) {
        let checkpoint = self.checkpoint.lock().unwrap().clone();
        support::write_back(&self.dir, &checkpoint);
    }
}

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
    let loss = LostWrites {
        dir: first.dir().to_owned(),
        checkpoint: Mutex::new(Vec::new()),
    };
    Target::new("file", Arc::new(first))
        .with_second_client(Arc::new(second))
        .with_prefix("conformance/")
        .with_write_loss(Arc::new(loss))
        .keep_alive(tmp)
}

lock_conformance::conformance_tests!(file, target());
