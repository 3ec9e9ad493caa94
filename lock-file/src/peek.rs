//! Looking at a lease file without locking it, so that a waiter in this process notices a
//! release by another process within a few milliseconds (see
//! [`ReleaseLog::wait_or_poll`](lock_core::backend_kit::ReleaseLog::wait_or_poll)).

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lock_core::OwnerToken;
use lock_core::backend_kit::clock::HostClock;
use lock_core::backend_kit::{LeaseProbe, Seen};

use crate::lease_file::MAX_LEN;
use crate::record::decode;
use lock_core::backend_kit::clock::ClockReading as Now;

/// A probe reads no more than a lease file may hold (and one byte to tell it is too long).
const PEEK_LEN: u64 = MAX_LEN + 1;

/// A probe of one lease file, opened on first use and kept open between looks.
#[derive(Debug)]
pub(crate) struct PeekFile {
    path: PathBuf,
    file: Option<File>,
    clock: Arc<dyn HostClock>,
}

impl PeekFile {
    pub(crate) fn new(path: PathBuf, clock: Arc<dyn HostClock>) -> Self {
        Self {
            path,
            file: None,
            clock,
        }
    }
}

impl LeaseProbe for PeekFile {
    type Holder = (OwnerToken, u64);

    /// Reads the file without its lock (a few microseconds, on the calling thread).
    fn look(&mut self) -> impl Future<Output = Seen<Self::Holder>> + Send {
        std::future::ready(peek(&self.path, &mut self.file, &*self.clock))
    }
}

/// What the lease file at `path` says now, reading through `file`: free while fewer permits
/// are live than its limit (for a lock: none), else held by its latest permit (a token and
/// fence that change whenever a permit changes hands). Never takes the file's lock: a write
/// half done by its holder reads as [`Seen::Unknown`], and the next probe sees it whole.
fn peek(path: &Path, file: &mut Option<File>, clock: &dyn HostClock) -> Seen<(OwnerToken, u64)> {
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
    let now = Now::read(clock);
    match decode(&bytes, &now) {
        Ok(None) => Seen::Free,
        Ok(Some(decoded)) => {
            let state = decoded.state;
            let live = state.live(&now).count();
            match state.live(&now).last() {
                Some(latest) if live >= usize::try_from(state.limit).unwrap_or(usize::MAX) => {
                    Seen::Held((latest.token, latest.fence))
                }
                _ => Seen::Free,
            }
        }
        Err(_) => Seen::Unknown,
    }
}
