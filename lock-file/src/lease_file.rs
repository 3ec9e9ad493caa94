//! One lease file, open and locked for the critical section of one operation.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lock_core::{LockError, LockName, Result};

use crate::io_error::{BACKEND, io_error};
use crate::record::{self, Decoded, FORMAT_VERSION, OLDEST_READ, State, Unreadable};
use crate::written::Written;
use lock_core::backend_kit::clock::ClockReading as Now;

/// Lease files are a few hundred bytes; anything much larger is not ours.
pub(crate) const MAX_LEN: u64 = 1 << 20;

/// A file up to this long keeps its length when a shorter record replaces a longer one
/// (the rest is padding); a longer one (a huge label once written) is cut back.
const KEEP_PADDED: u64 = 4096;

/// A lease file whose fs4 lock this value holds; closing it (drop) releases the lock.
#[derive(Debug)]
pub(crate) struct LeaseFile {
    file: File,
    path: PathBuf,
    sync_writes: bool,
    /// The file's length as last read or written (the lock keeps others from changing it).
    len: Option<u64>,
    /// What this process last wrote to the lock directory's lease files.
    written: Arc<Written>,
}

impl LeaseFile {
    /// Wraps an open, locked file.
    pub(crate) fn new(file: File, path: PathBuf, sync_writes: bool, written: Arc<Written>) -> Self {
        Self {
            file,
            path,
            sync_writes,
            len: None,
            written,
        }
    }

    /// Where the file is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The raw content (at most one byte past [`MAX_LEN`], so oversize is detectable): one
    /// `fstat` and, usually, one `pread` of exactly that many bytes.
    pub(crate) fn read_bytes(&mut self) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let io = |e| io_error("read", &self.path, e);
        let len = self.file.metadata().map_err(io)?.len();
        self.len = Some(len);
        let want = usize::try_from(len.min(MAX_LEN + 1)).unwrap_or(usize::MAX);
        let mut bytes = vec![0; want];
        let mut filled = 0;
        while filled < want {
            let offset = u64::try_from(filled).unwrap_or(u64::MAX);
            match self.file.read_at(&mut bytes[filled..], offset) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        bytes.truncate(filled);
        Ok(bytes)
    }

    /// The state of `name`'s lock as of `now` ([`State::fresh`] if the file was never
    /// written).
    ///
    /// # Errors
    ///
    /// [`LockError::Corrupt`] if the content cannot be read or belongs to another name;
    /// [`LockError::Config`] if a newer version of lock-file wrote it.
    pub(crate) fn load(&mut self, name: &LockName, now: &Now) -> Result<Loaded> {
        let bytes = self.read_bytes()?;
        if let Some(state) = self.written.recall(name, &bytes, now.boot()) {
            return Ok(Loaded {
                state,
                migrate: false,
            });
        }
        match decode(&bytes, now) {
            Ok(None) => Ok(Loaded {
                state: State::fresh(),
                migrate: false,
            }),
            Ok(Some(d)) if d.name.as_ref() == name.as_str() => Ok(Loaded {
                state: d.state,
                migrate: d.version < FORMAT_VERSION,
            }),
            Ok(Some(d)) => Err(self.corrupt(
                name,
                &format!("holds the lease of another lock ({:?})", d.name),
            )),
            Err(Unreadable::Corrupt(detail)) => Err(self.corrupt(name, &detail)),
            Err(Unreadable::Newer(version)) => Err(self.newer(version)),
        }
    }

    /// The decoded content as of `now`, whatever name it is for (for listing the
    /// directory): the name it holds and its state.
    pub(crate) fn load_any(&mut self, now: &Now) -> Result<Option<(String, State)>> {
        let bytes = self.read_bytes()?;
        match decode(&bytes, now) {
            Ok(decoded) => Ok(decoded.map(|d| (d.name.into_owned(), d.state))),
            Err(Unreadable::Corrupt(detail)) => Err(LockError::corrupt(
                BACKEND,
                format!("lease file {} {detail}", self.path.display()),
            )),
            Err(Unreadable::Newer(version)) => Err(self.newer(version)),
        }
    }

    /// Rewrites the file in place with `name`'s `state`.
    ///
    /// The new record is written over the old one from offset 0 in one `pwrite`, padded
    /// with spaces (which JSON ignores) to the old length, so the file holds one complete
    /// record at every moment: a process crash cannot leave a mix of old and new. The file
    /// keeps its length (cutting it costs a journal update per write on ext4) unless it
    /// grew past [`KEEP_PADDED`], and then is cut only after the new record is in place.
    /// Nothing is renamed or deleted: other processes may have the file open and be
    /// waiting for its lock.
    ///
    /// # Errors
    ///
    /// [`LockError::Config`] if the record would be too large to read back (labels and
    /// host names of many permits adding up to over a megabyte): the file is not touched.
    pub(crate) fn store(&mut self, name: &LockName, state: &State, now: &Now) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let record = record::encode(name, state, now.boot());
        if u64::try_from(record.len()).unwrap_or(u64::MAX) > MAX_LEN {
            return Err(LockError::config(
                BACKEND,
                format!(
                    "the lease record of lock {name:?} would be {} bytes, more than the {MAX_LEN} \
                     a lease file may hold; use shorter holder labels (LockOptions::with_label) \
                     or a lower semaphore limit",
                    record.len()
                ),
            ));
        }
        // Until the write is known to be complete, nothing is known of the file's content.
        self.written.forget(name);
        let io = |e| io_error("write", &self.path, e);
        let old_len = match self.len {
            Some(len) => len,
            None => self.file.metadata().map_err(io)?.len(),
        };
        let new_len = u64::try_from(record.len()).unwrap_or(u64::MAX);
        let mut padded = record;
        // (A damaged file larger than any record is padded only up to MAX_LEN.)
        if let Ok(pad_to) = usize::try_from(old_len.min(MAX_LEN))
            && pad_to > padded.len()
        {
            padded.resize(pad_to, b' ');
        }
        self.file.write_all_at(&padded, 0).map_err(io)?;
        let mut len = old_len.max(u64::try_from(padded.len()).unwrap_or(u64::MAX));
        if old_len > KEEP_PADDED && old_len > new_len {
            self.file.set_len(new_len).map_err(io)?;
            len = new_len;
        }
        self.len = Some(len);
        if self.sync_writes {
            self.file.sync_data().map_err(io)?;
        }
        if let Some(content) = usize::try_from(len).ok().and_then(|len| padded.get(..len)) {
            self.written.remember(name, content, now.boot(), state);
        }
        Ok(())
    }

    /// The error for a file a newer version of lock-file wrote, naming it and the fix.
    fn newer(&self, version: u64) -> LockError {
        LockError::config(
            BACKEND,
            format!(
                "lease file {} has format version {version}, written by a newer version of \
                 lock-file than this one (which reads versions {OLDEST_READ} to \
                 {FORMAT_VERSION}); it was left untouched. Upgrade lock-file in this program: \
                 every program sharing the lock directory must read format version {version}",
                self.path.display()
            ),
        )
    }

    /// The error for a damaged file, naming it and the fix.
    pub(crate) fn corrupt(&self, name: &LockName, detail: &str) -> LockError {
        LockError::corrupt(
            BACKEND,
            format!(
                "lease file {} of lock {name:?} {detail} (force_release rewrites it as free, \
                 and fences still go up)",
                self.path.display()
            ),
        )
    }
}

/// The outcome of [`LeaseFile::load`].
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The lock's state.
    pub(crate) state: State,
    /// The file is in an older format: the next write migrates it.
    pub(crate) migrate: bool,
}

fn decode<'a>(bytes: &'a [u8], now: &Now) -> std::result::Result<Option<Decoded<'a>>, Unreadable> {
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_LEN {
        return Err(Unreadable::Corrupt(format!(
            "is larger than {MAX_LEN} bytes"
        )));
    }
    record::decode(bytes, now)
}
