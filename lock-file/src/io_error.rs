//! Turning I/O failures on the lock directory into [`LockError`]s that say what to do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use lock_core::LockError;

/// The backend name in every error.
pub(crate) const BACKEND: &str = "file";

/// An I/O error with what was being done and to which path.
#[derive(Debug)]
struct PathError {
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.action,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Maps a failure to `action` (a verb phrase: "open", "write") on `path`.
///
/// Permission problems and a wrong kind of file are configuration errors: retrying will not
/// help. Anything else (disk full, too many open files, I/O errors) may pass, so it is
/// [`LockError::Unavailable`]. A missing lock directory is decided by the caller, which
/// knows the directory (see `LockDir::io_error`).
pub(crate) fn io_error(action: &'static str, path: &Path, err: io::Error) -> LockError {
    use io::ErrorKind::{IsADirectory, NotADirectory, PermissionDenied, ReadOnlyFilesystem};
    let shown = path.display();
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::ELOOP) {
        return LockError::config(
            BACKEND,
            format!(
                "cannot {action} {shown}: it is a symbolic link, and lease files are never \
                 opened through links (that could reach outside the lock directory); remove it"
            ),
        );
    }
    match err.kind() {
        PermissionDenied | ReadOnlyFilesystem => LockError::config(
            BACKEND,
            format!(
                "cannot {action} {shown}: {err}; give this user write access to the lock \
                 directory, or choose another one (lease files are created with mode 0600, so \
                 every process sharing a lock directory must run as the same user)"
            ),
        ),
        IsADirectory | NotADirectory => LockError::config(
            BACKEND,
            format!(
                "cannot {action} {shown}: {err}; the lock directory holds something that is \
                 not a lease file under a lease file's name; remove it or choose another \
                 lock directory"
            ),
        ),
        _ => LockError::unavailable(
            BACKEND,
            PathError {
                action,
                path: path.to_owned(),
                source: err,
            },
        ),
    }
}
