//! The suite against the in-memory reference backend: proves the suite itself is sound.

use std::sync::{Arc, Mutex};

use lock_conformance::{Target, WriteLoss};
use lock_core::async_trait;
use lock_core::memory::{MemoryBackend, Snapshot};

/// Rolls the in-memory store back to a snapshot.
struct MemoryWriteLoss {
    store: MemoryBackend,
    checkpoint: Mutex<Option<Snapshot>>,
}

#[async_trait]
impl WriteLoss for MemoryWriteLoss {
    async fn checkpoint(&self) {
        *self.checkpoint.lock().unwrap() = Some(self.store.snapshot());
    }

    async fn roll_back(&self) {
        let checkpoint = self.checkpoint.lock().unwrap().clone();
        self.store
            .restore(&checkpoint.expect("checkpoint before roll_back"));
    }
}

async fn memory() -> Target {
    let store = MemoryBackend::new();
    let loss = MemoryWriteLoss {
        store: store.clone(),
        checkpoint: Mutex::new(None),
    };
    Target::new("memory", Arc::new(store))
        .with_prefix("conformance/")
        .with_write_loss(Arc::new(loss))
}

lock_conformance::conformance_tests!(memory, memory());

#[test]
fn the_registry_lists_every_case_once() {
    let mut names: Vec<_> = lock_conformance::CASES.iter().map(|c| c.name).collect();
    let total = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), total, "duplicate case names");
    assert!(total >= 25, "only {total} cases");
}
