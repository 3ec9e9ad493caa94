//! The suite against the in-memory reference backend: proves the suite itself is sound.

use std::sync::Arc;

use lock_conformance::Target;
use lock_core::memory::MemoryBackend;

async fn memory() -> Target {
    Target::new("memory", Arc::new(MemoryBackend::new())).with_prefix("conformance/")
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
