//! [`Written`]: the records this process last wrote to its lock directory's lease files,
//! so that reading one back finds its state without decoding it.
//!
//! A holder's release reads the record its own acquire or heartbeat wrote, and a process
//! that takes a lock again reads the record its own release wrote; decoding that JSON was
//! about half of the instructions of an acquire + release pair (callgrind: ~7,400 per
//! decode). A version 2 record decodes the same for the same bytes and boot (see
//! [`decode`](crate::record::decode)), so a read whose bytes are exactly those this process
//! wrote, under the same boot and for the same name, takes the state it wrote. Any other
//! content (another process wrote since) is decoded as usual.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use lock_core::LockName;
use lock_core::backend_kit::clock::BootId;

use crate::record::State;

/// How many lease files' records are remembered; past that all are forgotten.
const REMEMBERED: usize = 256;

/// The last record this process wrote to each lease file of one lock directory (up to
/// [`REMEMBERED`] files), by lock name (hashing a name is cheaper than hashing its path).
#[derive(Debug, Default)]
pub(crate) struct Written {
    records: Mutex<HashMap<String, Record>>,
}

#[derive(Debug)]
struct Record {
    /// The file's content after the write, byte for byte.
    bytes: Vec<u8>,
    boot: BootId,
    state: State,
}

impl Written {
    /// Remembers that `name`'s lease file now holds exactly `bytes`, the record of `state`
    /// written under `boot`.
    pub(crate) fn remember(&self, name: &LockName, bytes: &[u8], boot: &BootId, state: &State) {
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if records.len() >= REMEMBERED && !records.contains_key(name.as_str()) {
            records.clear();
        }
        let record = Record {
            bytes: bytes.to_vec(),
            boot: boot.clone(),
            state: state.clone(),
        };
        records.insert(name.as_str().to_owned(), record);
    }

    /// The state `bytes` read from `name`'s lease file hold, if they are exactly what this
    /// process last wrote there under `boot`.
    pub(crate) fn recall(&self, name: &LockName, bytes: &[u8], boot: &BootId) -> Option<State> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        let record = records.get(name.as_str())?;
        (record.bytes == bytes && record.boot == *boot).then(|| record.state.clone())
    }

    /// Forgets what was written to `name`'s lease file (a write whose outcome is unknown).
    pub(crate) fn forget(&self, name: &LockName) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(fence: u64) -> State {
        State {
            fence,
            limit: 1,
            holders: Vec::new(),
        }
    }

    #[test]
    fn only_the_same_bytes_name_and_boot_are_recalled() {
        let written = Written::default();
        let (name, other_name) = (LockName::new("a").unwrap(), LockName::new("b").unwrap());
        let (boot, other_boot) = (BootId::new("boot-1"), BootId::new("boot-2"));
        written.remember(&name, b"record", &boot, &state(7));
        assert_eq!(written.recall(&name, b"record", &boot), Some(state(7)));
        assert_eq!(written.recall(&name, b"recorD", &boot), None);
        assert_eq!(written.recall(&name, b"record ", &boot), None);
        assert_eq!(written.recall(&other_name, b"record", &boot), None);
        assert_eq!(written.recall(&name, b"record", &other_boot), None);
        written.remember(&name, b"newer", &boot, &state(8));
        assert_eq!(written.recall(&name, b"record", &boot), None);
        assert_eq!(written.recall(&name, b"newer", &boot), Some(state(8)));
        written.forget(&name);
        assert_eq!(written.recall(&name, b"newer", &boot), None);
    }

    #[test]
    fn at_most_the_bound_is_remembered() {
        let written = Written::default();
        let boot = BootId::new("boot");
        for i in 0..REMEMBERED * 2 + 1 {
            let name = LockName::new(format!("job/{i}")).unwrap();
            written.remember(&name, b"r", &boot, &state(1));
            assert_eq!(written.recall(&name, b"r", &boot), Some(state(1)));
        }
        let kept = written.records.lock().unwrap().len();
        assert!(kept <= REMEMBERED, "{kept}");
    }
}
