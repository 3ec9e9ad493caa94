//! Noticing that the database file at the path is no longer the file this backend opened.
//!
//! An open SQLite connection keeps its file descriptors. When the database file (with its
//! -wal and -shm files) is deleted, or another file is renamed over it, the connection goes
//! on using the old file, which nobody else can open any more: in WAL mode SQLite does not
//! notice at all, and in rollback-journal mode it refuses writes
//! (`SQLITE_READONLY_DBMOVED`) but still answers reads. A lease granted or renewed there is
//! seen by nobody, and a client that opens the path gets another database, where it may
//! take the same name: two holders.
//!
//! So the engine compares, after each operation that grants or renews a lease, the device
//! and inode of the file the path names now (one `stat`) with those of the file it named
//! when the backend opened (recorded by the backend's first operation, the look at the
//! schema). Once they differ, the backend refuses every operation before it runs, without
//! looking again: the file it opened is lost for good, and the lock store has to be
//! reopened.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use lock_core::LockError;

use crate::BACKEND;

/// The error for a database file that was deleted or replaced while the backend had it open.
pub(crate) fn replaced(db: &str) -> LockError {
    LockError::config(
        BACKEND,
        format!(
            "database {db} was deleted or replaced while this backend had it open; reopen the \
             lock store (other processes may have opened a new database at that path, so the \
             leases this backend held there are not held any more)"
        ),
    )
}

/// What the backend expects to find at the path when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A database file: the path was checked and SQLite opens (or creates) a file there.
    File,
    /// An application's pool, which may be an in-memory database: nothing at the path means
    /// there is no file to watch.
    FileOrMemory,
}

/// Device and inode: which file a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// The file the backend opened, and whether it is still the one at the path.
#[derive(Debug)]
pub(crate) struct OpenedFile {
    /// Absolute, as SQLite itself resolves the path when it opens it: a later change of the
    /// current directory does not change which file is meant.
    path: PathBuf,
    expect: Expect,
    /// Recorded by the first check: `None` when there is no file (an in-memory database).
    opened: OnceLock<Option<FileId>>,
    /// Set once the path was found to name another file, or none.
    lost: AtomicBool,
}

impl OpenedFile {
    /// Watches the database file at `path` (not looked at yet).
    pub(crate) fn new(path: &Path, expect: Expect) -> Self {
        Self {
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
            expect,
            opened: OnceLock::new(),
            lost: AtomicBool::new(false),
        }
    }

    /// The [`replaced`] error if a [`check`](Self::check) found the file lost; no system
    /// call.
    pub(crate) fn refuse_if_lost(&self, db: &str) -> Result<(), LockError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(replaced(db));
        }
        Ok(())
    }

    /// Whether a first [`check`](Self::check) has recorded which file the path names.
    pub(crate) fn recorded(&self) -> bool {
        self.opened.get().is_some()
    }

    /// `Ok` if the path still names the file it named at the first check (which records
    /// it); otherwise the [`replaced`] error, now and from then on. One `stat` per call
    /// until the file is lost, none after.
    pub(crate) fn check(&self, db: &str) -> Result<(), LockError> {
        self.refuse_if_lost(db)?;
        let now = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            }),
            Err(e) if is_gone(&e) => None,
            Err(e) => return Err(cannot_look(db, &e)),
        };
        let opened = *self.opened.get_or_init(|| {
            if now.is_none() && self.expect == Expect::FileOrMemory {
                tracing::debug!(
                    db,
                    "no file at the database's path (in memory?): not watched"
                );
            }
            now
        });
        match (opened, now) {
            (Some(opened), Some(now)) if opened == now => Ok(()),
            (None, _) if self.expect == Expect::FileOrMemory => Ok(()),
            _ => {
                if !self.lost.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        db,
                        "the database file was deleted or replaced while open; every \
                         operation of this backend now fails"
                    );
                }
                Err(replaced(db))
            }
        }
    }
}

/// The path names nothing any more (the file, or a directory above it, is gone).
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// The path cannot be looked at: whether the file is still there is unknown.
fn cannot_look(db: &str, e: &io::Error) -> LockError {
    let detail = format!(
        "cannot check that database {db} is still the file this backend opened ({e}); check \
         that this user may search the directories above it"
    );
    if e.kind() == io::ErrorKind::PermissionDenied {
        LockError::config(BACKEND, detail)
    } else {
        LockError::backend(BACKEND, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_replaced(result: Result<(), LockError>) -> bool {
        matches!(result, Err(LockError::Config { detail, .. }) if detail.contains("deleted or replaced"))
    }

    #[test]
    fn the_same_file_passes_and_a_replaced_or_deleted_one_fails_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let other = dir.path().join("b.db");
        std::fs::write(&path, b"a").unwrap();
        std::fs::write(&other, b"b").unwrap();
        let watched = OpenedFile::new(&path, Expect::File);
        watched.check("a.db").unwrap();
        watched.check("a.db").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(is_replaced(watched.check("a.db")));
        // The lost file does not come back, even if the path names a file again.
        assert!(is_replaced(watched.check("a.db")));

        let deleted = OpenedFile::new(&path, Expect::File);
        deleted.check("a.db").unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(is_replaced(deleted.check("a.db")));
    }

    #[test]
    fn a_file_missing_at_open_is_lost_unless_the_database_may_be_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.db");
        assert!(is_replaced(OpenedFile::new(&path, Expect::File).check("m")));
        let memory = OpenedFile::new(Path::new(":memory:"), Expect::FileOrMemory);
        memory.check(":memory:").unwrap();
        memory.check(":memory:").unwrap();
    }

    #[test]
    fn a_relative_path_keeps_meaning_the_file_it_meant_at_open() {
        let watched = OpenedFile::new(Path::new("x.db"), Expect::File);
        assert!(watched.path.is_absolute(), "{:?}", watched.path);
    }
}
