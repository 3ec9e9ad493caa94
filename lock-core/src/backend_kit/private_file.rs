//! What the hold and turn files share: files only their owner may read or write, and an
//! exclusive `flock` taken without waiting.

use std::fs::{File, OpenOptions};
use std::io;

/// Options that create a file with mode 0600 (on Unix), to which the caller adds the access
/// and creation mode it wants.
pub(crate) fn options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Takes an exclusive `flock` on `file` without waiting: `WouldBlock` when another open file
/// description has it.
pub(crate) fn try_lock(file: &File) -> io::Result<()> {
    File::try_lock(file).map_err(|error| match error {
        std::fs::TryLockError::WouldBlock => io::ErrorKind::WouldBlock.into(),
        std::fs::TryLockError::Error(error) => error,
    })
}
