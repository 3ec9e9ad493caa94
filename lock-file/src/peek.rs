//! Looking at a lease file without locking it, so that a waiter in this process notices a
//! release by another process within a few milliseconds (see
//! [`ReleaseLog::wait_or_poll`](lock_core::backend_kit::ReleaseLog::wait_or_poll)).

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use lock_core::OwnerToken;
use lock_core::backend_kit::{LeaseProbe, Seen};

use crate::record::decode;

/// Lease records are a few hundred bytes; a probe reads no more than this.
const PEEK_LEN: u64 = 64 * 1024;

/// A probe of one lease file, opened on first use and kept open between looks.
#[derive(Debug)]
pub(crate) struct PeekFile {
    path: PathBuf,
    file: Option<File>,
}

impl PeekFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, file: None }
    }
}

impl LeaseProbe for PeekFile {
    type Holder = (OwnerToken, u64);

    /// Reads the file without its lock (a few microseconds, on the calling thread).
    fn look(&mut self) -> impl Future<Output = Seen<Self::Holder>> + Send {
        std::future::ready(peek(&self.path, &mut self.file))
    }
}

/// What the lease file at `path` says now, reading through `file`. Never takes the file's
/// lock: a write half done by its holder reads as [`Seen::Unknown`], and the next probe sees
/// it whole.
fn peek(path: &Path, file: &mut Option<File>) -> Seen<(OwnerToken, u64)> {
    if file.is_none() {
        match File::open(path) {
            Ok(opened) => *file = Some(opened),
            // Never written: nobody holds it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Seen::Free,
            Err(_) => return Seen::Unknown,
        }
    }
    let Some(file) = file.as_mut() else {
        return Seen::Unknown;
    };
    let mut bytes = Vec::with_capacity(512);
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(PEEK_LEN).read_to_end(&mut bytes));
    if read.is_err() {
        return Seen::Unknown;
    }
    match decode(&bytes) {
        Ok(None) => Seen::Free,
        Ok(Some(decoded)) => match decoded.state.holder {
            Some(held) if held.is_live(SystemTime::now()) => {
                Seen::Held((held.token, decoded.state.fence))
            }
            _ => Seen::Free,
        },
        Err(_) => Seen::Unknown,
    }
}
