//! [`WakeFiles`]: how a release tells waiters in other processes that a name may be free.
//!
//! A waiting process watches its name's wake file (inotify; see the engine's
//! `wait_for_change`), which the first waiter creates. A release writes one byte into it,
//! at offset 0 so that it stays one byte long. Only writes wake the watchers: opening the
//! file, or closing it unwritten, does not.
//!
//! The descriptor is kept open after the first write, so that each later release is one
//! `fstat` and one `pwrite` instead of an `open`, a `write` and a `close`: measured on
//! 2-process SQLite hand-offs (release build, both processes asleep 20-30 ms before), that
//! step took 38-44 µs p50 cold, most of it the path lookup and the close. A kept
//! descriptor of a file that was deleted or replaced since would wake nobody, so the
//! `fstat` checks that the file still has a name, and the file is opened again if not.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// How many wake files one engine keeps open at most (one per name it released lately);
/// past that, they are all closed and the next releases open theirs again.
const KEPT_AT_MOST: usize = 64;

/// The wake files this engine wrote, kept open.
#[derive(Debug, Default)]
pub(crate) struct WakeFiles {
    kept: Mutex<HashMap<PathBuf, File>>,
}

impl WakeFiles {
    /// Writes one byte into the wake file at `path` if a waiter made it (one failed `open`
    /// otherwise), which wakes the processes watching it.
    pub(crate) fn wake(&self, path: &Path) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = kept.get(path) {
            // Still named (not deleted, nor replaced by a rename over it)? Then the watches
            // on the path see this write.
            if file.metadata().is_ok_and(|meta| meta.nlink() > 0) {
                let _ = file.write_all_at(b"\n", 0);
                return;
            }
            kept.remove(path);
        }
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(path) else {
            return;
        };
        let _ = file.write_all_at(b"\n", 0);
        if kept.len() >= KEPT_AT_MOST {
            kept.clear();
        }
        kept.insert(path.to_owned(), file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn a_wake_writes_one_byte_and_the_file_stays_one_byte_long() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wake");
        std::fs::write(&path, b"").unwrap();
        let wakes = WakeFiles::default();
        for _ in 0..3 {
            wakes.wake(&path);
            assert_eq!(content(&path), b"\n");
        }
    }

    #[test]
    fn no_wake_file_means_no_waiter_and_none_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.wake");
        WakeFiles::default().wake(&path);
        assert!(!path.exists());
    }

    #[test]
    fn a_wake_file_deleted_or_replaced_after_a_wake_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.wake");
        std::fs::write(&path, b"").unwrap();
        let wakes = WakeFiles::default();
        wakes.wake(&path);

        // Deleted and made again by the next waiter.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"").unwrap();
        wakes.wake(&path);
        assert_eq!(content(&path), b"\n", "the new file was written");

        // Replaced by a rename over it.
        let other = dir.path().join("b.new");
        std::fs::write(&other, b"").unwrap();
        std::fs::rename(&other, &path).unwrap();
        wakes.wake(&path);
        assert_eq!(content(&path), b"\n", "the replacement was written");

        // Deleted for good: nothing is made.
        std::fs::remove_file(&path).unwrap();
        wakes.wake(&path);
        assert!(!path.exists());
    }

    #[test]
    fn at_most_so_many_files_are_kept_open() {
        let dir = tempfile::tempdir().unwrap();
        let wakes = WakeFiles::default();
        for i in 0..KEPT_AT_MOST + 5 {
            let path = dir.path().join(format!("{i}.wake"));
            std::fs::write(&path, b"").unwrap();
            wakes.wake(&path);
            assert_eq!(content(&path), b"\n");
        }
        assert!(wakes.kept.lock().unwrap().len() <= KEPT_AT_MOST);
    }
}
