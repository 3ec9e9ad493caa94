//! The lease file format: a small JSON document, versioned.
//!
//! ```json
//! {"version":1,"name":"nightly-report","fence":1718000000000123,
//!  "holder":{"token":"…32 hex…","label":"cron","pid":4242,"host":"web-1",
//!            "acquired_at_ms":1718000000000,"expires_at_ms":1718000030000}}
//! ```
//!
//! `holder` is `null` when the lock is free; the fence stays, so it never goes backwards.
//! Times are milliseconds since the Unix epoch on this host's wall clock, which decides
//! expiry. An empty file is a lock that was never written: it has no fence yet.

use std::time::{Duration, SystemTime};

use lock_core::backend_kit::time::{from_unix_millis, to_unix_millis};
use lock_core::{Holder, LeaseInfo, LockName, OwnerToken};
use serde::{Deserialize, Serialize};

/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// What one lease file says about its lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// The last fence issued for the name (the current holder's, if any).
    pub(crate) fence: u64,
    /// The current or last holder; `None` once released.
    pub(crate) holder: Option<Held>,
}

/// A holder as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) token: OwnerToken,
    label: String,
    pid: u32,
    host: String,
    acquired_at_ms: i64,
    expires_at_ms: i64,
}

impl Held {
    /// `holder` acquiring at `now` for `ttl`.
    pub(crate) fn new(holder: &Holder, now: SystemTime, ttl: Duration) -> Self {
        Self {
            token: holder.token,
            label: holder.label.clone(),
            pid: holder.pid,
            host: holder.host.clone(),
            acquired_at_ms: to_unix_millis(now),
            expires_at_ms: expiry_millis(now, ttl),
        }
    }

    /// True until the stored expiry, on this host's wall clock.
    pub(crate) fn is_live(&self, now: SystemTime) -> bool {
        to_unix_millis(now) < self.expires_at_ms
    }

    /// True if `token` owns this lease and it has not expired at `now`.
    pub(crate) fn is_live_for(&self, token: OwnerToken, now: SystemTime) -> bool {
        self.token == token && self.is_live(now)
    }

    /// Moves the expiry to `ttl` after `now`.
    pub(crate) fn extend(&mut self, now: SystemTime, ttl: Duration) {
        self.expires_at_ms = expiry_millis(now, ttl);
    }

    /// The stored expiry.
    pub(crate) fn expires_at(&self) -> SystemTime {
        from_unix_millis(self.expires_at_ms)
    }

    /// The public view of this lease (without the token).
    pub(crate) fn info(&self, name: &LockName, fence: u64) -> LeaseInfo {
        LeaseInfo::new(
            name.clone(),
            self.label.clone(),
            self.pid,
            self.host.clone(),
            fence,
            from_unix_millis(self.acquired_at_ms),
            self.expires_at(),
        )
    }
}

/// `now + ttl` in milliseconds, rounded up so a lease never lasts less than its TTL.
fn expiry_millis(now: SystemTime, ttl: Duration) -> i64 {
    to_unix_millis(now + ttl + Duration::from_nanos(999_999))
}

/// A decoded, well-formed lease file.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The full lock name the file belongs to.
    pub(crate) name: String,
    /// Its state.
    pub(crate) state: State,
}

#[derive(Serialize, Deserialize)]
struct FileRecord {
    version: u32,
    name: String,
    fence: u64,
    holder: Option<FileHolder>,
}

#[derive(Serialize, Deserialize)]
struct FileHolder {
    token: String,
    label: String,
    pid: u32,
    host: String,
    acquired_at_ms: i64,
    expires_at_ms: i64,
}

/// The bytes of a lease file for `name` in `state` (JSON and a newline).
pub(crate) fn encode(name: &LockName, state: &State) -> Vec<u8> {
    let record = FileRecord {
        version: FORMAT_VERSION,
        name: name.as_str().to_owned(),
        fence: state.fence,
        holder: state.holder.as_ref().map(|h| FileHolder {
            token: h.token.to_hex(),
            label: h.label.clone(),
            pid: h.pid,
            host: h.host.clone(),
            acquired_at_ms: h.acquired_at_ms,
            expires_at_ms: h.expires_at_ms,
        }),
    };
    let mut bytes = serde_json::to_vec(&record).unwrap_or_else(|_| {
        // Serializing plain strings and integers cannot fail; keep a valid record anyway.
        format!(
            "{{\"version\":{FORMAT_VERSION},\"name\":\"\",\"fence\":{}}}",
            state.fence
        )
        .into_bytes()
    });
    bytes.push(b'\n');
    bytes
}

/// Reads a lease file's bytes: `Ok(None)` for an empty (never written) file, or why the
/// content cannot be trusted.
pub(crate) fn decode(bytes: &[u8]) -> Result<Option<Decoded>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    // The common case, a well-formed record of this version, is parsed straight into its
    // fields; anything else is looked at again, step by step, to say what is wrong with it.
    let record = match serde_json::from_slice::<FileRecord>(bytes) {
        Ok(record) if record.version == FORMAT_VERSION => record,
        _ => diagnose(bytes)?,
    };
    checked(record)
}

/// Parses a record that did not parse as one of this version, to say why: not JSON, not
/// an object, no or another format version, or a field of the wrong type. A record that
/// parses after all (which the caller's fast path rules out) is returned.
fn diagnose(bytes: &[u8]) -> Result<FileRecord, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("is not a lease record (not JSON: {e})"))?;
    let Some(object) = value.as_object() else {
        return Err("is not a lease record (JSON, but not an object)".to_owned());
    };
    match object.get("version") {
        None => return Err("has no format version".to_owned()),
        Some(v) if v.as_u64() != Some(u64::from(FORMAT_VERSION)) => {
            return Err(format!(
                "has format version {v}, but this build of lock-file reads version \
                 {FORMAT_VERSION} (was it written by another version of lock-file?)"
            ));
        }
        Some(_) => {}
    }
    serde_json::from_value(value)
        .map_err(|e| format!("is not a valid version {FORMAT_VERSION} lease record: {e}"))
}

/// Checks the fields of a parsed record that its types do not.
fn checked(record: FileRecord) -> Result<Option<Decoded>, String> {
    if record.fence == 0 {
        return Err("has fence 0, which is never issued".to_owned());
    }
    let holder = record
        .holder
        .map(|h| {
            let token = h
                .token
                .parse::<OwnerToken>()
                .map_err(|_| "has an owner token that is not 32 hex digits".to_owned())?;
            Ok::<_, String>(Held {
                token,
                label: h.label,
                pid: h.pid,
                host: h.host,
                acquired_at_ms: h.acquired_at_ms,
                expires_at_ms: h.expires_at_ms,
            })
        })
        .transpose()?;
    Ok(Some(Decoded {
        name: record.name,
        state: State {
            fence: record.fence,
            holder,
        },
    }))
}

/// The fence a damaged lease file still shows, if any: the `fence` field of any JSON
/// object, or the digits after the first `"fence":` in text that no longer parses.
pub(crate) fn recover_fence(bytes: &[u8]) -> Option<u64> {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(fence) = value.get("fence").and_then(serde_json::Value::as_u64)
    {
        return Some(fence);
    }
    let text = String::from_utf8_lossy(bytes);
    let after_key = &text[text.find("\"fence\"")? + "\"fence\"".len()..];
    let after_colon = after_key.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = after_colon
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> LockName {
        LockName::new("jobs/nightly").unwrap()
    }

    fn held_state(fence: u64) -> State {
        let now = SystemTime::now();
        State {
            fence,
            holder: Some(Held::new(
                &Holder::current("label \"quoted\" ünï"),
                now,
                Duration::from_secs(5),
            )),
        }
    }

    #[test]
    fn round_trips_held_and_free() {
        for state in [
            held_state(7),
            State {
                fence: 8,
                holder: None,
            },
        ] {
            let decoded = decode(&encode(&name(), &state)).unwrap().unwrap();
            assert_eq!(decoded.name, name().as_str());
            assert_eq!(decoded.state, state);
        }
    }

    #[test]
    fn padded_records_decode_on_the_fast_path_and_the_diagnosing_one_alike() {
        let state = held_state(11);
        let mut padded = encode(&name(), &state);
        padded.resize(padded.len() + 40, b' ');
        let fast = decode(&padded).unwrap().unwrap();
        assert_eq!(fast.state, state);
        // The diagnosing parse reads the same record the same way.
        let slow = checked(diagnose(&padded).unwrap()).unwrap().unwrap();
        assert_eq!((slow.name, slow.state), (fast.name, fast.state));
    }

    #[test]
    fn empty_is_fresh() {
        assert!(decode(b"").unwrap().is_none());
    }

    #[test]
    fn garbage_wrong_version_and_bad_fields_are_refused() {
        let good = String::from_utf8(encode(&name(), &held_state(9))).unwrap();
        let cases = [
            ("\u{0}\u{ff}garbage".to_owned(), "not a lease record"),
            (good[..good.len() / 2].to_owned(), "not a lease record"),
            (good.replace("\"version\":1", "\"version\":2"), "version 2"),
            (good.replace("\"version\":1,", ""), "no format version"),
            (
                good.replace("\"fence\":9", "\"fence\":\"9\""),
                "valid version 1",
            ),
            (good.replace("\"fence\":9", "\"fence\":0"), "fence 0"),
            ("[1,2]".to_owned(), "not an object"),
        ];
        for (text, why) in cases {
            match decode(text.as_bytes()) {
                Err(detail) => assert!(detail.contains(why), "{text:?}: {detail}"),
                Ok(d) => panic!("{text:?} decoded as {d:?}"),
            }
        }
        let bad_token = good.replacen("\"token\":\"", "\"token\":\"zz", 1);
        assert!(decode(bad_token.as_bytes()).unwrap_err().contains("token"));
    }

    #[test]
    fn expiry_rounds_up_and_liveness_follows_the_wall_clock() {
        let now = SystemTime::now();
        let held = Held::new(&Holder::current("x"), now, Duration::from_millis(10));
        assert!(held.expires_at() >= now + Duration::from_millis(10));
        assert!(held.is_live(now));
        assert!(!held.is_live(now + Duration::from_millis(12)));
    }

    #[test]
    fn fences_are_recovered_from_damaged_files() {
        let good = encode(&name(), &held_state(123_456));
        assert_eq!(recover_fence(&good), Some(123_456));
        assert_eq!(recover_fence(&good[..52]), Some(123_456), "truncated");
        assert_eq!(recover_fence(b"{\"fence\" :  42, \"x"), Some(42));
        assert_eq!(recover_fence(b"garbage"), None);
        assert_eq!(recover_fence(b"{\"fence\":\"12\"}"), None);
    }
}
