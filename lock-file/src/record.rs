//! The lease file format: a small JSON document, versioned.
//!
//! Version 2, which this build writes:
//!
//! ```json
//! {"version":2,"name":"nightly-report","fence":1718000000000125,"limit":2,
//!  "boot":"6b1c5f0e-2a4d-4c1e-9d7a-0f3e8b9c1d2e","holders":[
//!   {"token":"…32 hex…","label":"cron","pid":4242,"host":"web-1",
//!    "fence":1718000000000123,"acquired_at_ms":1718000000000,"expires_boot_ms":86430000,
//!    "hold":"…32 hex….hold:2049:1311:…16 hex…"},
//!   {"token":"…","label":"cron","pid":4243,"host":"web-1",
//!    "fence":1718000000000125,"acquired_at_ms":1718000000001,"expires_boot_ms":86431000}]}
//! ```
//!
//! - `fence` is the last fence issued for the name: the counter of the hybrid fences. It is
//!   kept when the lock is free, so it never goes backwards, and is at least every holder's.
//! - `limit` is the limit the holders were granted with (1 for a lock).
//! - `holders` are the permits, by fence: each its own token, fence and expiry. Empty when
//!   the lock is free.
//! - `expires_boot_ms` is on the boot clock (milliseconds since the host booted), which
//!   decides expiry, and only means something in the boot `boot` names: when this host's
//!   boot id is another, every holder died with that boot and the lock is free. A record
//!   without holders has no `boot`.
//! - `acquired_at_ms` is on the wall clock (milliseconds since the Unix epoch), for people.
//! - `hold` (optional) names the holder's process hold
//!   ([`hold`](lock_core::backend_kit::hold)): a file in the lock directory's hold directory,
//!   `flock`ed for as long as the holder's process lives, with its device, inode and a tag of
//!   the holder's token. A contender that finds the lease live and that file's lock free
//!   knows the holder's process is gone, and takes the lease over at once. Absent when the
//!   holder's process has no hold (the hold directory could not be written) and in records
//!   of builds older than the field; such a holder's lease ends by its TTL only.
//!
//! `hold` was added within version 2, without a new version: older builds of version 2
//! read records that have it (serde skips fields a struct does not name) and just ignore
//! it, so they never take a lease over early; when one of them rewrites a record, the
//! stamps of the holders it keeps are dropped, which only leaves those holders to their
//! TTL. A stamp names its owner's token, so one left behind can never be read as another
//! holder's.
//!
//! Version 1, written by older builds, had one `holder` (or `null`) and its `expires_at_ms`
//! on the wall clock. It is still read, its expiry converted to this boot's clock (a live
//! lease keeps the time it had left), and the next write turns it into version 2. A newer
//! version is refused and never written over.
//!
//! An empty file is a lock that was never written: it has no fence yet.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use lock_core::backend_kit::clock::{BootId, HostClock};
use lock_core::backend_kit::fence::MAX_FENCE;
use lock_core::backend_kit::hex;
use lock_core::backend_kit::permits::MAX_PERMITS;
use lock_core::backend_kit::time::from_unix_millis;
use lock_core::{Holder, LeaseInfo, LockName, OwnerToken};
use serde::Deserialize;

use lock_core::backend_kit::clock::ClockReading as Now;

/// The format version this build writes.
pub(crate) const FORMAT_VERSION: u32 = 2;

/// The oldest format version this build reads (and migrates on its next write).
pub(crate) const OLDEST_READ: u32 = 1;

/// What one lease file says about its lock, as of one [`Now`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct State {
    /// The last fence issued for the name (0 when none was ever issued).
    pub(crate) fence: u64,
    /// The limit the holders were granted with.
    pub(crate) limit: u32,
    /// This boot's holders, live or expired, by fence. Holders recorded in another boot
    /// are dropped when the file is read: they died with it.
    pub(crate) holders: Vec<Held>,
}

impl State {
    /// A lock that was never written.
    pub(crate) fn fresh() -> Self {
        Self {
            fence: 0,
            limit: 1,
            holders: Vec::new(),
        }
    }

    /// The holders whose leases are live at `now`, by fence.
    pub(crate) fn live<'a>(&'a self, now: &'a Now) -> impl Iterator<Item = &'a Held> + 'a {
        self.holders.iter().filter(move |h| h.is_live(now))
    }

    /// The limit of the live holders, if there are any.
    pub(crate) fn live_limit(&self, now: &Now) -> Option<u32> {
        self.live(now).next().map(|_| self.limit)
    }

    /// Drops the holders whose leases expired: nobody can renew them any more.
    pub(crate) fn prune(&mut self, now: &Now) {
        self.holders.retain(|h| h.is_live(now));
    }

    /// The public view of every live permit at `now`, by fence.
    pub(crate) fn infos(&self, name: &LockName, now: &Now) -> Vec<LeaseInfo> {
        self.live(now)
            .map(|h| h.info(name, self.limit, now))
            .collect()
    }
}

/// One holder (one permit) as stored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct Held {
    #[serde(with = "token_hex")]
    pub(crate) token: OwnerToken,
    label: String,
    pub(crate) pid: u32,
    host: String,
    pub(crate) fence: u64,
    acquired_at_ms: i64,
    expires_boot_ms: u64,
    /// The holder's process hold
    /// ([`ProcessHold::stamp`](lock_core::backend_kit::hold::ProcessHold::stamp)), if it
    /// had one.
    #[serde(default)]
    pub(crate) hold: Option<String>,
}

impl Held {
    /// `holder` granted `fence` at `now` for `ttl`, stamped with its process's hold (see
    /// [`ProcessHold::stamp`](lock_core::backend_kit::hold::ProcessHold::stamp)), if that
    /// process has one.
    pub(crate) fn new(
        holder: &Holder,
        fence: u64,
        now: &Now,
        ttl: Duration,
        hold: Option<String>,
    ) -> Self {
        Self {
            token: holder.token,
            label: holder.label.clone(),
            pid: holder.pid,
            host: holder.host.clone(),
            fence,
            acquired_at_ms: now.wall_ms(),
            expires_boot_ms: now.expiry_ms(ttl),
            hold,
        }
    }

    /// The host the holder ran on.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Milliseconds from `now` until the lease expires (0 once it has), on the boot clock.
    pub(crate) fn expires_in_ms(&self, now: &Now) -> u64 {
        self.expires_boot_ms.saturating_sub(now.boot_ms())
    }

    /// True until the stored expiry, on the boot clock.
    pub(crate) fn is_live(&self, now: &Now) -> bool {
        now.boot_ms() < self.expires_boot_ms
    }

    /// Moves the expiry to `ttl` after `now`.
    pub(crate) fn extend(&mut self, now: &Now, ttl: Duration) {
        self.expires_boot_ms = now.expiry_ms(ttl);
    }

    /// The stored expiry as a wall-clock time as of `now`, for people and for
    /// [`Lease::expires_at`](lock_core::Lease::expires_at).
    pub(crate) fn expires_at(&self, now: &Now) -> SystemTime {
        now.wall_at(Duration::from_millis(self.expires_boot_ms))
    }

    /// The public view of this lease as of `now` (without the token).
    pub(crate) fn info(&self, name: &LockName, limit: u32, now: &Now) -> LeaseInfo {
        LeaseInfo::new(
            name.clone(),
            self.label.clone(),
            self.pid,
            self.host.clone(),
            self.fence,
            from_unix_millis(self.acquired_at_ms),
            self.expires_at(now),
        )
        .with_limit(limit)
    }
}

/// A decoded, well-formed lease file.
#[derive(Debug)]
pub(crate) struct Decoded<'a> {
    /// The full lock name the file belongs to.
    pub(crate) name: Cow<'a, str>,
    /// Its state.
    pub(crate) state: State,
    /// The format version it was written in (older than [`FORMAT_VERSION`]: rewrite it).
    pub(crate) version: u32,
}

impl Decoded<'_> {
    /// The same, owning its name.
    fn into_owned(self) -> Decoded<'static> {
        Decoded {
            name: Cow::Owned(self.name.into_owned()),
            state: self.state,
            version: self.version,
        }
    }
}

/// Why a lease file's content cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// It is damaged or not a lease file: what is wrong with it.
    Corrupt(String),
    /// It was written by a newer version of lock-file, in this format version.
    Newer(u64),
}

/// A version 2 record, as read: the name borrowed from the bytes unless it holds escapes;
/// the boot id (never escaped in practice) borrowed, and an escaped one read on the slower
/// path ([`diagnose`]), which borrows it from the parsed value.
#[derive(Deserialize)]
struct RecordIn<'a> {
    version: u32,
    #[serde(borrow)]
    name: Cow<'a, str>,
    fence: u64,
    limit: u32,
    #[serde(default)]
    boot: Option<&'a str>,
    holders: Vec<Held>,
}

/// A version 1 record (older builds): one holder, expiry on the wall clock.
#[derive(Deserialize)]
struct RecordV1 {
    name: String,
    fence: u64,
    holder: Option<HolderV1>,
}

#[derive(Deserialize)]
struct HolderV1 {
    #[serde(with = "token_hex")]
    token: OwnerToken,
    label: String,
    pid: u32,
    host: String,
    acquired_at_ms: i64,
    expires_at_ms: i64,
}

/// Reads owner tokens as 32 hex digits.
mod token_hex {
    use lock_core::OwnerToken;
    use serde::Deserializer;
    use serde::de::Visitor;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OwnerToken, D::Error> {
        d.deserialize_str(Hex)
    }

    /// Parses the text where it lies (borrowed from the file, or from a parsed value).
    struct Hex;

    impl Visitor<'_> for Hex {
        type Value = OwnerToken;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an owner token of 32 hex digits")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<OwnerToken, E> {
            text.parse()
                .map_err(|_| E::custom("an owner token that is not 32 hex digits"))
        }
    }
}

/// The bytes of a lease file for `name` in `state`, measured in boot `boot` (JSON and a
/// newline).
///
/// Written by hand, field by field, rather than through serde: every operation writes a
/// record, and this is several times cheaper. [`decode`] reads it with serde, and the tests
/// check the two agree on every kind of string.
pub(crate) fn encode(name: &LockName, state: &State, boot: &BootId) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENCODED_CAPACITY);
    out.extend_from_slice(b"{\"version\":");
    push_u64(&mut out, u64::from(FORMAT_VERSION));
    out.extend_from_slice(b",\"name\":");
    push_json_str(&mut out, name.as_str());
    out.extend_from_slice(b",\"fence\":");
    push_u64(&mut out, state.fence);
    out.extend_from_slice(b",\"limit\":");
    push_u64(&mut out, u64::from(state.limit));
    // Only holders' expiries need a boot to mean something.
    if !state.holders.is_empty() {
        out.extend_from_slice(b",\"boot\":");
        push_json_str(&mut out, boot.as_str());
    }
    out.extend_from_slice(b",\"holders\":[");
    let mut token = String::with_capacity(32);
    for (i, held) in state.holders.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        token.clear();
        hex::push_lower(&mut token, &held.token.as_u128().to_be_bytes());
        out.extend_from_slice(b"{\"token\":\"");
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(b"\",\"label\":");
        push_json_str(&mut out, &held.label);
        out.extend_from_slice(b",\"pid\":");
        push_u64(&mut out, u64::from(held.pid));
        out.extend_from_slice(b",\"host\":");
        push_json_str(&mut out, &held.host);
        out.extend_from_slice(b",\"fence\":");
        push_u64(&mut out, held.fence);
        out.extend_from_slice(b",\"acquired_at_ms\":");
        if held.acquired_at_ms < 0 {
            out.push(b'-');
        }
        push_u64(&mut out, held.acquired_at_ms.unsigned_abs());
        out.extend_from_slice(b",\"expires_boot_ms\":");
        push_u64(&mut out, held.expires_boot_ms);
        if let Some(hold) = &held.hold {
            out.extend_from_slice(b",\"hold\":");
            push_json_str(&mut out, hold);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}\n");
    out
}

/// Appends `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] += u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Which bytes a JSON string must escape: quotes, backslashes and control characters.
const ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends `text` as a JSON string (RFC 8259): quotes, backslashes and control characters
/// escaped, everything else as it is (it is UTF-8 already).
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.push(b'"');
    let mut plain = 0;
    while let Some(at) = bytes[plain..].iter().position(|&b| ESCAPE[usize::from(b)]) {
        let at = plain + at;
        out.extend_from_slice(&bytes[plain..at]);
        match bytes[at] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            control => {
                let mut hex = String::with_capacity(2);
                hex::push_lower(&mut hex, &[control]);
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(hex.as_bytes());
            }
        }
        plain = at + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// Room for a typical record (one holder) and its newline, so encoding one allocates once.
const ENCODED_CAPACITY: usize = 512;

/// Reads a lease file's bytes as of `now`: `Ok(None)` for an empty (never written) file, or
/// why the content cannot be used.
pub(crate) fn decode<'a>(bytes: &'a [u8], now: &Now) -> Result<Option<Decoded<'a>>, Unreadable> {
    if bytes.is_empty() {
        return Ok(None);
    }
    // The common case, a well-formed record of this version, is parsed straight into its
    // fields; anything else is looked at again, step by step, to read an older version or
    // say what is wrong with it. The padding a shorter record leaves (spaces up to the
    // file's length) is cut first: JSON ignores it, but skipping it byte by byte costs.
    match serde_json::from_slice::<RecordIn<'_>>(bytes.trim_ascii_end()) {
        Ok(record) if record.version == FORMAT_VERSION => checked(record, now).map(Some),
        _ => diagnose(bytes, now).map(Some),
    }
}

fn corrupt(detail: impl Into<String>) -> Unreadable {
    Unreadable::Corrupt(detail.into())
}

/// Parses a record that did not parse as one of this version: an older version, or a
/// newer one, or why it is not a lease record (not JSON, not an object, no format version,
/// a field of the wrong type).
fn diagnose(bytes: &[u8], now: &Now) -> Result<Decoded<'static>, Unreadable> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(format!("is not a lease record (not JSON: {e})")))?;
    let Some(object) = value.as_object() else {
        return Err(corrupt("is not a lease record (JSON, but not an object)"));
    };
    let Some(version) = object.get("version") else {
        return Err(corrupt("has no format version"));
    };
    match version.as_u64() {
        Some(2) => RecordIn::deserialize(&value)
            .map_err(|e| corrupt(format!("is not a valid version 2 lease record: {e}")))
            .and_then(|record| checked(record, now))
            .map(Decoded::into_owned),
        Some(1) => RecordV1::deserialize(&value)
            .map_err(|e| corrupt(format!("is not a valid version 1 lease record: {e}")))
            .and_then(|record| from_v1(record, now)),
        Some(newer) if newer > u64::from(FORMAT_VERSION) => Err(Unreadable::Newer(newer)),
        _ => Err(corrupt(format!(
            "has format version {version}, which no version of lock-file writes"
        ))),
    }
}

/// Checks the counter every format has.
fn checked_fence(fence: u64) -> Result<u64, Unreadable> {
    match fence {
        0 => Err(corrupt("has fence 0, which is never issued")),
        f if f > MAX_FENCE => Err(corrupt(format!(
            "has fence {f}, above the largest fence 2^53 - 1, which is never issued"
        ))),
        f => Ok(f),
    }
}

/// Checks the fields of a parsed version 2 record that its types do not, and drops the
/// holders of another boot.
fn checked<'a>(record: RecordIn<'a>, now: &Now) -> Result<Decoded<'a>, Unreadable> {
    let fence = checked_fence(record.fence)?;
    if record.limit == 0 || record.limit > MAX_PERMITS {
        return Err(corrupt(format!(
            "has a limit of {}, outside 1 to {MAX_PERMITS}",
            record.limit
        )));
    }
    if record.holders.len() > usize::try_from(record.limit).unwrap_or(usize::MAX) {
        return Err(corrupt(format!(
            "has {} holders for a limit of {}",
            record.holders.len(),
            record.limit
        )));
    }
    let mut below = 0;
    for held in &record.holders {
        if held.fence <= below || held.fence > fence {
            return Err(corrupt(format!(
                "has a holder with fence {}, out of order or above the last fence issued ({fence})",
                held.fence
            )));
        }
        below = held.fence;
    }
    let holders = match record.boot {
        Some(boot) if boot == now.boot().as_str() => record.holders,
        // Recorded in another boot of this host: their holders died with it.
        Some(_) => Vec::new(),
        None if record.holders.is_empty() => record.holders,
        None => {
            return Err(corrupt(
                "has holders but no boot id to judge their expiry by",
            ));
        }
    };
    Ok(Decoded {
        name: record.name,
        state: State {
            fence,
            limit: record.limit,
            holders,
        },
        version: FORMAT_VERSION,
    })
}

/// Reads a version 1 record: its holder's wall-clock expiry becomes the same time left on
/// this boot's clock.
fn from_v1(record: RecordV1, now: &Now) -> Result<Decoded<'static>, Unreadable> {
    let fence = checked_fence(record.fence)?;
    let holders = record
        .holder
        .map(|h| Held {
            token: h.token,
            label: h.label,
            pid: h.pid,
            host: h.host,
            fence,
            acquired_at_ms: h.acquired_at_ms,
            expires_boot_ms: now.boot_ms_of_wall_expiry(h.expires_at_ms),
            hold: None,
        })
        .into_iter()
        .collect();
    Ok(Decoded {
        name: Cow::Owned(record.name),
        state: State {
            fence,
            limit: 1,
            holders,
        },
        version: 1,
    })
}

/// The highest fence a damaged lease file still shows, if any: the digits after every
/// `"fence":` key (the counter and each holder's), ignoring values above the largest fence
/// (never issued).
pub(crate) fn recover_fence(bytes: &[u8]) -> Option<u64> {
    const KEY: &str = "\"fence\"";
    let text = String::from_utf8_lossy(bytes);
    let mut best = None;
    let mut rest = text.as_ref();
    while let Some(at) = rest.find(KEY) {
        rest = &rest[at + KEY.len()..];
        let Some(value) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let digits: String = value
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(fence) = digits.parse::<u64>()
            && fence <= MAX_FENCE
        {
            best = best.max(Some(fence));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> LockName {
        LockName::new("jobs/nightly").unwrap()
    }

    const SINCE_BOOT: Duration = Duration::from_secs(3600);

    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn now() -> Now {
        Now::at(boot(), SINCE_BOOT, wall())
    }

    fn boot() -> BootId {
        BootId::new("this-boot")
    }

    fn held(fence: u64, ttl: Duration) -> Held {
        let holder = Holder::current("label \"quoted\" ünï");
        let stamp = format!("{:032x}.hold:2049:{fence}:{:016x}", fence, fence + 1);
        Held::new(&holder, fence, &now(), ttl, Some(stamp))
    }

    fn held_state(fence: u64) -> State {
        State {
            fence,
            limit: 1,
            holders: vec![held(fence, Duration::from_secs(5))],
        }
    }

    fn decoded(bytes: &[u8]) -> Decoded<'static> {
        decode(bytes, &now()).unwrap().unwrap().into_owned()
    }

    fn refused(bytes: &[u8]) -> String {
        match decode(bytes, &now()) {
            Err(Unreadable::Corrupt(detail)) => detail,
            other => panic!("{:?} decoded as {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn round_trips_held_free_and_permits() {
        let permits = State {
            fence: 12,
            limit: 3,
            holders: vec![
                held(9, Duration::from_secs(5)),
                held(12, Duration::from_secs(7)),
            ],
        };
        let free = State {
            fence: 8,
            limit: 1,
            holders: Vec::new(),
        };
        for state in [held_state(7), free, permits] {
            let d = decoded(&encode(&name(), &state, &boot()));
            assert_eq!(d.name, name().as_str());
            assert_eq!(d.state, state);
            assert_eq!(d.version, FORMAT_VERSION);
        }
    }

    #[test]
    fn holders_without_a_hold_round_trip_and_older_records_without_it_read() {
        let mut state = held_state(31);
        state.holders[0].hold = None;
        let bytes = encode(&name(), &state, &boot());
        assert!(
            !String::from_utf8_lossy(&bytes).contains("\"hold\""),
            "no stamp, no field"
        );
        assert_eq!(decoded(&bytes).state, state);
        // With a stamp: written, and read back as it was.
        let stamped = held_state(32);
        let bytes = encode(&name(), &stamped, &boot());
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            value["holders"][0]["hold"].as_str(),
            stamped.holders[0].hold.as_deref()
        );
        assert_eq!(decoded(&bytes).state, stamped);
    }

    #[test]
    fn hand_written_json_reads_back_as_serde_reads_it() {
        let strings = [
            "plain",
            "",
            "quote \" backslash \\ slash /",
            "controls \u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}\n\r\t end",
            "del \u{7f} nbsp \u{a0} ünïcödé 日本語 emoji \u{1f512}",
            "line separators \u{2028}\u{2029}",
            "\\u0041 not an escape",
        ];
        for text in strings {
            let mut out = Vec::new();
            push_json_str(&mut out, text);
            let back: String = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&out)));
            assert_eq!(back, text);
        }
        for n in [0, 1, 9, 10, 1_234_567_890, MAX_FENCE, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let mut state = held_state(42);
        state.holders[0].label = strings.concat();
        state.holders[0].host = "host \"x\"\n".to_owned();
        state.holders[0].acquired_at_ms = -5;
        let name = LockName::new(strings.concat().replace('\0', "")).unwrap();
        let bytes = encode(&name, &state, &boot());
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["name"], name.as_str());
        assert_eq!(value["holders"][0]["acquired_at_ms"], -5);
        let d = decoded(&bytes);
        assert_eq!((d.name.as_ref(), d.state), (name.as_str(), state));
    }

    #[test]
    fn padded_records_decode_on_the_fast_path_and_the_diagnosing_one_alike() {
        let state = held_state(11);
        let mut padded = encode(&name(), &state, &boot());
        padded.resize(padded.len() + 40, b' ');
        let fast = decoded(&padded);
        assert_eq!(fast.state, state);
        // The diagnosing parse reads the same record the same way.
        let slow = diagnose(&padded, &now()).unwrap();
        assert_eq!((slow.name, slow.state), (fast.name, fast.state));
    }

    #[test]
    fn empty_is_fresh() {
        assert!(decode(b"", &now()).unwrap().is_none());
    }

    #[test]
    fn holders_of_another_boot_are_dropped_and_the_fence_kept() {
        let state = held_state(21);
        let d = decoded(&encode(&name(), &state, &BootId::new("an-earlier-boot")));
        assert_eq!(d.state.fence, 21);
        assert!(d.state.holders.is_empty(), "{:?}", d.state);
    }

    #[test]
    fn a_boot_id_that_needs_escapes_is_read_on_the_slower_path() {
        let odd = BootId::new("boot \"quoted\" \\ id");
        let state = held_state(5);
        let bytes = encode(&name(), &state, &odd);
        let now = Now::at(odd, SINCE_BOOT, wall());
        let d = decode(&bytes, &now).unwrap().unwrap();
        assert_eq!(d.state, state, "its holders are this boot's");
    }

    #[test]
    fn liveness_follows_the_boot_clock() {
        let h = held(3, Duration::from_millis(10));
        let at = |after: Duration, wall_step: Duration| {
            Now::at(boot(), SINCE_BOOT + after, wall() + wall_step)
        };
        assert!(h.is_live(&now()));
        assert!(h.is_live(&at(Duration::from_millis(9), Duration::ZERO)));
        assert!(
            !h.is_live(&at(Duration::from_millis(10), Duration::ZERO)),
            "expired after exactly the TTL"
        );
        assert!(
            h.is_live(&at(Duration::ZERO, Duration::from_secs(3600))),
            "a wall-clock step does not expire it"
        );
    }

    #[test]
    fn a_version_1_record_keeps_its_time_left_on_the_boot_clock() {
        let wall_ms = lock_core::backend_kit::time::to_unix_millis(wall());
        let token = OwnerToken::random();
        let v1 = serde_json::json!({
            "version": 1, "name": "jobs/nightly", "fence": 77,
            "holder": {"token": token.to_hex(), "label": "old", "pid": 7, "host": "h",
                       "acquired_at_ms": wall_ms - 1000, "expires_at_ms": wall_ms + 2500}
        })
        .to_string();
        let d = decoded(v1.as_bytes());
        assert_eq!(d.version, 1);
        assert_eq!((d.state.fence, d.state.limit), (77, 1));
        let h = &d.state.holders[0];
        assert_eq!((h.token, h.fence), (token, 77));
        assert_eq!(h.expires_boot_ms, now().boot_ms() + 2500);
        let expired = v1.replace(&format!("{}", wall_ms + 2500), &format!("{}", wall_ms - 1));
        let d = decoded(expired.as_bytes());
        assert!(!d.state.holders[0].is_live(&now()));
        let free = serde_json::json!({"version": 1, "name": "x", "fence": 5, "holder": null});
        let d = decoded(free.to_string().as_bytes());
        assert_eq!((d.state.fence, d.state.holders.len()), (5, 0));
    }

    #[test]
    fn a_newer_version_is_told_apart_from_damage() {
        let good = String::from_utf8(encode(&name(), &held_state(9), &boot())).unwrap();
        let newer = good.replace("\"version\":2", "\"version\":3");
        assert_eq!(
            decode(newer.as_bytes(), &now()).unwrap_err(),
            Unreadable::Newer(3)
        );
    }

    #[test]
    fn garbage_bad_versions_and_bad_fields_are_refused() {
        let good = String::from_utf8(encode(&name(), &held_state(9), &boot())).unwrap();
        let two = State {
            fence: 10,
            limit: 2,
            holders: vec![
                held(9, Duration::from_secs(5)),
                held(10, Duration::from_secs(5)),
            ],
        };
        let permits = String::from_utf8(encode(&name(), &two, &boot())).unwrap();
        let cases = [
            ("\u{0}\u{ff}garbage".to_owned(), "not a lease record"),
            (good[..good.len() / 2].to_owned(), "not a lease record"),
            (good.replace("\"version\":2", "\"version\":0"), "version 0"),
            (good.replace("\"version\":2,", ""), "no format version"),
            (
                good.replace("\"fence\":9,\"limit\"", "\"fence\":\"9\",\"limit\""),
                "valid version 2",
            ),
            (good.replace("\"fence\":9,", "\"fence\":0,"), "fence 0"),
            (
                good.replace(
                    "\"fence\":9,\"limit\"",
                    "\"fence\":9007199254740992,\"limit\"",
                ),
                "above the largest fence",
            ),
            (good.replace("\"limit\":1", "\"limit\":0"), "limit of 0"),
            (permits.replace("\"limit\":2", "\"limit\":1"), "2 holders"),
            (
                good.replace("\"fence\":9,\"acq", "\"fence\":8,\"acq")
                    .replace("\"fence\":9,", "\"fence\":7,"),
                "above the last fence",
            ),
            ("[1,2]".to_owned(), "not an object"),
            (
                r#"{"version":1,"name":"x","fence":"5","holder":null}"#.to_owned(),
                "valid version 1",
            ),
        ];
        for (text, why) in cases {
            let detail = refused(text.as_bytes());
            assert!(detail.contains(why), "{text:?}: {detail}");
        }
        let bad_token = good.replacen("\"token\":\"", "\"token\":\"zz", 1);
        assert!(refused(bad_token.as_bytes()).contains("token"));
        let swapped = permits.replacen("\"fence\":9,", "\"fence\":10,", 1);
        assert!(
            refused(swapped.as_bytes()).contains("out of order"),
            "{swapped}"
        );
    }

    #[test]
    fn fences_are_recovered_from_damaged_files() {
        let good = encode(&name(), &held_state(123_456), &boot());
        assert_eq!(recover_fence(&good), Some(123_456));
        assert_eq!(recover_fence(&good[..52]), Some(123_456), "truncated");
        assert_eq!(recover_fence(b"{\"fence\" :  42, \"x"), Some(42));
        assert_eq!(recover_fence(b"{\"fence\":7,\"h\":[{\"fence\":9}"), Some(9));
        assert_eq!(recover_fence(b"garbage"), None);
        assert_eq!(recover_fence(b"{\"fence\":\"12\"}"), None);
        assert_eq!(
            recover_fence(b"{\"fence\":9007199254740992}"),
            None,
            "above the largest fence: never issued"
        );
    }
}
