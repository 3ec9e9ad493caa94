//! Helpers shared by this crate's integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use lock_core::{Holder, Lease, LockBackend, LockName};

/// A TTL no test outlives.
pub(crate) const LONG_TTL: Duration = Duration::from_secs(60);

/// A valid lock name (panics on a test typo).
pub(crate) fn name(text: &str) -> LockName {
    LockName::new(text).expect("test names are valid")
}

/// Acquires a free `name` for a fresh holder labelled `label`.
pub(crate) async fn acquire(backend: &impl LockBackend, name: &LockName, label: &str) -> Lease {
    backend
        .try_acquire(name, &Holder::current(label), LONG_TTL)
        .await
        .unwrap_or_else(|e| panic!("acquiring {name:?} failed: {e}"))
        .unwrap_or_else(|| panic!("{name:?} should be free"))
}

/// Every `*.lease` file directly in `dir`.
pub(crate) fn lease_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the lock directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "lease"))
        .collect();
    files.sort();
    files
}

/// Every file (not directory) under `root`, recursively.
pub(crate) fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
