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

/// The bytes of every lease file in `dir`, as a backup (or the disk after a power loss)
/// would keep them.
pub(crate) fn snapshot_lease_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    lease_files(dir)
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read a lease file");
            (path, bytes)
        })
        .collect()
}

/// Puts `snapshot` back in place (same files, same inodes, under each file's lock, as a
/// restored backup or a power loss without `sync=true` leaves them): every write since is
/// lost. A lease file created after the snapshot is left empty, as a power loss leaves a
/// file whose content was never flushed.
pub(crate) fn write_back(dir: &Path, snapshot: &[(PathBuf, Vec<u8>)]) {
    use std::os::unix::fs::FileExt;
    for path in lease_files(dir) {
        let bytes = snapshot
            .iter()
            .find(|(kept, _)| *kept == path)
            .map_or(&[][..], |(_, bytes)| bytes.as_slice());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open a lease file to roll it back");
        fs4::FileExt::lock(&file).expect("lock a lease file to roll it back");
        file.write_all_at(bytes, 0)
            .expect("write the old bytes back");
        file.set_len(u64::try_from(bytes.len()).expect("a small file"))
            .expect("cut the file to its old length");
    }
}
