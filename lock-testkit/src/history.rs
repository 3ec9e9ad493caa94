//! A history of critical sections, written by many processes into one file, and a checker
//! that proves mutual exclusion and fencing from it.
//!
//! Each process appends records to a shared file opened with `O_APPEND`; every record is one
//! `write(2)` of one line, so records of different processes never interleave. Every line is
//! padded to [`RECORD_LEN`] bytes, so no record straddles a page boundary of the file: Linux
//! checks for a fatal signal between the pages of a write, and a writer killed with SIGKILL
//! would otherwise leave the first part of its line with the next writer's line glued on. A
//! killed writer loses at most its last record, whole. Times are
//! `CLOCK_MONOTONIC` nanoseconds, which on Linux are one clock for every process of the host.
//!
//! A holder records [`Event::Start`] right after it acquired a lease, [`Event::Work`] for each
//! step it does under the lease, and [`Event::End`] just before it releases it. The time of a
//! `Work` or `End` record must be taken *before* checking that the lease is still held
//! ([`Recorder::verified`] does it in that order): then every recorded time is earlier than
//! the lease's deadline, so a holder that was paused past its TTL cannot record work after
//! the next holder started. A holder that loses its lease simply records nothing more; its
//! section ends at its last record.
//!
//! The checker asserts that, per lock name, sections ordered by start never overlap and
//! their fences strictly increase, and names the offending pair when they do not.
//!
//! ```
//! use lock_testkit::history::{check, Event, Record};
//!
//! let records = vec![
//!     Record { name: "job".into(), holder: "a".into(), fence: 1, event: Event::Start, at: 10 },
//!     Record { name: "job".into(), holder: "a".into(), fence: 1, event: Event::End, at: 20 },
//!     Record { name: "job".into(), holder: "b".into(), fence: 2, event: Event::Start, at: 25 },
//!     Record { name: "job".into(), holder: "b".into(), fence: 2, event: Event::End, at: 30 },
//! ];
//! let summary = check(&records).unwrap();
//! assert_eq!(summary.sections, 2);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// What a record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The holder has just acquired the lease.
    Start,
    /// The holder did a step of work while its lease was verified held.
    Work,
    /// The holder is about to release the lease.
    End,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Work => "work",
            Self::End => "end",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "start" => Some(Self::Start),
            "work" => Some(Self::Work),
            "end" => Some(Self::End),
            _ => None,
        }
    }
}

/// One line of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The lock name (written hex-encoded, so any name fits on a line).
    pub name: String,
    /// Who recorded it (a process and task id of the test's choosing; no spaces).
    pub holder: String,
    /// The fence of the lease it held.
    pub fence: u64,
    /// What happened.
    pub event: Event,
    /// When: `CLOCK_MONOTONIC` nanoseconds.
    pub at: u64,
}

/// The length of every line of a history file: a divisor of the page size, so that records
/// appended one after another never cross a page boundary.
pub const RECORD_LEN: usize = 256;

impl Record {
    /// The record's line, padded with spaces to [`RECORD_LEN`] bytes; `None` when it does not
    /// fit (a name or holder id of more than about 80 bytes).
    fn to_line(&self) -> Option<String> {
        let name: String = self.name.bytes().map(|b| format!("{b:02x}")).collect();
        let words = format!(
            "{} {} {} {} {}",
            self.at,
            self.event.as_str(),
            self.fence,
            self.holder,
            name
        );
        (words.len() < RECORD_LEN).then(|| format!("{words:<width$}\n", width = RECORD_LEN - 1))
    }

    fn parse(line: &str) -> Option<Self> {
        let mut words = line.trim_end_matches(' ').split(' ');
        let at = words.next()?.parse().ok()?;
        let event = Event::parse(words.next()?)?;
        let fence = words.next()?.parse().ok()?;
        let holder = words.next()?.to_owned();
        let hex = words.next()?;
        if words.next().is_some() || hex.len() % 2 != 0 {
            return None;
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some(Self {
            name: String::from_utf8(bytes).ok()?,
            holder,
            fence,
            event,
            at,
        })
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: comparable between processes of one host.
pub fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    assert_eq!(rc, 0, "CLOCK_MONOTONIC is always available on Linux");
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// Appends records to a shared history file.
#[derive(Debug)]
pub struct Recorder {
    file: File,
    holder: String,
}

impl Recorder {
    /// Opens (creating) `path` for appending, recording as `holder` (one word: not empty,
    /// no whitespace).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] when `holder` is not one word (it would make the
    /// history unreadable), or the error opening the file.
    pub fn open(path: &Path, holder: impl Into<String>) -> io::Result<Self> {
        let holder = holder.into();
        if holder.is_empty() || holder.contains(char::is_whitespace) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a history holder id is one word without whitespace, not {holder:?}"),
            ));
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file, holder })
    }

    /// Records `event` now.
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub fn record(&mut self, name: &str, fence: u64, event: Event) -> io::Result<()> {
        self.record_at(name, fence, event, monotonic_nanos())
    }

    /// Records `event` at `at`.
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub fn record_at(&mut self, name: &str, fence: u64, event: Event, at: u64) -> io::Result<()> {
        let line = Record {
            name: name.to_owned(),
            holder: self.holder.clone(),
            fence,
            event,
            at,
        }
        .to_line()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a history record of {name:?} by {:?} does not fit in {RECORD_LEN} bytes: \
                     use a shorter lock name or holder id",
                    self.holder
                ),
            )
        })?;
        // One write of the whole line: O_APPEND makes it atomic with respect to other writers,
        // and its fixed length keeps it inside one page (see the module's docs).
        let written = self.file.write(line.as_bytes())?;
        if written != line.len() {
            return Err(io::Error::other("short write to the history file"));
        }
        Ok(())
    }

    /// Takes the time, then asks `still_held`; records `event` at that time only if the lease
    /// was still held. Returns whether it was.
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub fn verified(
        &mut self,
        name: &str,
        fence: u64,
        event: Event,
        still_held: impl FnOnce() -> bool,
    ) -> io::Result<bool> {
        let at = monotonic_nanos();
        if !still_held() {
            return Ok(false);
        }
        self.record_at(name, fence, event, at)?;
        Ok(true)
    }
}

/// Reads every record of a history file.
///
/// # Errors
///
/// When the file cannot be read or a line is malformed (named in the error).
pub fn read(path: &Path) -> io::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            Record::parse(line).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "line {} of {} is malformed: {line:?}",
                        i + 1,
                        path.display()
                    ),
                )
            })
        })
        .collect()
}

/// One holder's time under one lease, as the history shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The lock name.
    pub name: String,
    /// Who held it.
    pub holder: String,
    /// The lease's fence.
    pub fence: u64,
    /// When it was acquired.
    pub start: u64,
    /// Its last record: the release, or the last verified work of a holder that lost it.
    pub end: u64,
    /// Whether the holder recorded releasing it.
    pub released: bool,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "holder {} fence {} on {:?} from {} to {} ns ({})",
            self.holder,
            self.fence,
            self.name,
            self.start,
            self.end,
            if self.released { "released" } else { "lost" }
        )
    }
}

/// What a clean history contained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Sections checked.
    pub sections: usize,
    /// Of those, how many ended without a release record (lost leases).
    pub lost: usize,
    /// Distinct holders.
    pub holders: usize,
    /// Lock names.
    pub names: usize,
}

/// One line for logs and CI output, as `key=value` words:
/// `sections=12 lost=1 holders=3 names=1`.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sections={} lost={} holders={} names={}",
            self.sections, self.lost, self.holders, self.names
        )
    }
}

/// Why a history is not a correct one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A record without an open section to belong to: no `Start` of the same holder and
    /// fence before it, a second `Start` of one, or a record after the section's `End`.
    Orphan(Record),
    /// Two sections of one name overlap in time.
    Overlap(Section, Section),
    /// Two sections of one name share a fence (the first is the earlier one): the store
    /// handed the same fence out twice.
    FenceReused(Section, Section),
    /// A later section of one name has a lower fence than the one before it.
    FenceNotIncreasing(Section, Section),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Orphan(r) => write!(
                f,
                "record outside an open section (no start before it, a second start, or after \
                 the end): {r:?}"
            ),
            Self::Overlap(a, b) => write!(f, "overlap:\n  {a}\n  {b}"),
            Self::FenceReused(a, b) => write!(f, "fence reused:\n  {a}\n  {b}"),
            Self::FenceNotIncreasing(a, b) => {
                write!(
                    f,
                    "fence did not increase in acquisition order:\n  {a}\n  {b}"
                )
            }
        }
    }
}

/// Builds sections from records and checks them; see the [module docs](self).
///
/// Per name, in order of start, each section is checked for an overlap with the one before
/// it, then for a fence an earlier section already had (reuse, reported as such even when
/// sections with other fences came in between), then for a fence lower than the one before.
///
/// # Errors
///
/// The first violation found.
pub fn check(records: &[Record]) -> Result<Summary, Box<Violation>> {
    let sections = sections(records)?;
    check_order(&sections).map_err(Box::new)?;
    let mut holders: Vec<&str> = sections.iter().map(|s| s.holder.as_str()).collect();
    holders.sort_unstable();
    holders.dedup();
    let mut names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
    names.dedup();
    Ok(Summary {
        sections: sections.len(),
        lost: sections.iter().filter(|s| !s.released).count(),
        holders: holders.len(),
        names: names.len(),
    })
}

/// The sections the records make up, by name and then start, for a test that looks at
/// them further (after [`check`] or [`assert_history`]).
///
/// # Errors
///
/// [`Violation::Orphan`] for a record that belongs to no section.
pub fn sections(records: &[Record]) -> Result<Vec<Section>, Box<Violation>> {
    let mut sections: BTreeMap<(String, String, u64), Section> = BTreeMap::new();
    let mut ordered = records.to_vec();
    ordered.sort_by_key(|r| (r.at, r.event != Event::Start));
    for record in ordered {
        let key = (record.name.clone(), record.holder.clone(), record.fence);
        match (record.event, sections.get_mut(&key)) {
            (Event::Start, None) => {
                sections.insert(
                    key,
                    Section {
                        name: record.name,
                        holder: record.holder,
                        fence: record.fence,
                        start: record.at,
                        end: record.at,
                        released: false,
                    },
                );
            }
            (Event::Work | Event::End, Some(section)) if !section.released => {
                section.end = section.end.max(record.at);
                section.released |= record.event == Event::End;
            }
            _ => return Err(Box::new(Violation::Orphan(record))),
        }
    }
    let mut sections: Vec<Section> = sections.into_values().collect();
    sections.sort_by(|a, b| (&a.name, a.start).cmp(&(&b.name, b.start)));
    Ok(sections)
}

/// Checks sections sorted by name and start; see [`check`].
// A violation ends the check, so its size costs nothing; the public fns box it.
#[allow(clippy::result_large_err)]
fn check_order(sections: &[Section]) -> Result<(), Violation> {
    let mut fences: BTreeMap<(&str, u64), &Section> = BTreeMap::new();
    let mut previous: Option<&Section> = None;
    for b in sections {
        let before = previous.filter(|a| a.name == b.name);
        if let Some(a) = before
            && b.start < a.end
        {
            return Err(Violation::Overlap(a.clone(), b.clone()));
        }
        if let Some(first) = fences.insert((&b.name, b.fence), b) {
            return Err(Violation::FenceReused(first.clone(), b.clone()));
        }
        if let Some(a) = before
            && b.fence < a.fence
        {
            return Err(Violation::FenceNotIncreasing(a.clone(), b.clone()));
        }
        previous = Some(b);
    }
    Ok(())
}

/// Reads and checks a history file, panicking with the violation (the offending pair)
/// when it is not correct.
///
/// # Panics
///
/// When the file cannot be read or the history has a violation.
pub fn assert_history(path: &Path) -> Summary {
    let records = read(path).unwrap_or_else(|e| panic!("cannot read history: {e}"));
    check(&records).unwrap_or_else(|violation| {
        panic!(
            "history {} ({} records) is wrong: {violation}",
            path.display(),
            records.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, fence: u64, event: Event, at: u64) -> Record {
        Record {
            name: "job/é".into(),
            holder: holder.into(),
            fence,
            event,
            at,
        }
    }

    fn violation(records: &[Record]) -> Violation {
        *check(records).expect_err("a violation")
    }

    #[test]
    fn a_clean_history_passes_and_is_summarized() {
        let records = [
            rec("a", 1, Event::Start, 10),
            rec("a", 1, Event::Work, 15),
            rec("a", 1, Event::End, 20),
            rec("b", 2, Event::Start, 20),
            rec("b", 2, Event::Work, 29),
            // b lost its lease: no end.
            rec("a", 5, Event::Start, 40),
            rec("a", 5, Event::End, 41),
        ];
        let summary = check(&records).unwrap();
        assert_eq!(
            summary,
            Summary {
                sections: 3,
                lost: 1,
                holders: 2,
                names: 1
            }
        );
    }

    #[test]
    fn an_overlap_names_both_sections() {
        let records = [
            rec("a", 1, Event::Start, 10),
            rec("b", 2, Event::Start, 12),
            rec("a", 1, Event::End, 20),
            rec("b", 2, Event::End, 30),
        ];
        let Violation::Overlap(a, b) = violation(&records) else {
            panic!("overlap not found")
        };
        assert_eq!((a.holder.as_str(), b.holder.as_str()), ("a", "b"));
        let text = Violation::Overlap(a, b).to_string();
        assert!(
            text.contains("fence 1") && text.contains("fence 2"),
            "{text}"
        );
    }

    #[test]
    fn work_of_a_stale_holder_after_the_next_start_is_an_overlap() {
        let records = [
            rec("a", 1, Event::Start, 10),
            rec("b", 2, Event::Start, 20),
            rec("a", 1, Event::Work, 21),
        ];
        assert!(matches!(violation(&records), Violation::Overlap(..)));
    }

    #[test]
    fn a_fence_that_does_not_increase_is_caught() {
        let records = [
            rec("a", 3, Event::Start, 10),
            rec("a", 3, Event::End, 11),
            rec("b", 2, Event::Start, 12),
            rec("b", 2, Event::End, 13),
        ];
        assert!(matches!(
            violation(&records),
            Violation::FenceNotIncreasing(..)
        ));
    }

    #[test]
    fn a_fence_handed_out_twice_is_reported_as_reused_naming_both() {
        // Straight after each other.
        let records = [
            rec("a", 4, Event::Start, 10),
            rec("a", 4, Event::End, 11),
            rec("b", 4, Event::Start, 12),
            rec("b", 4, Event::End, 13),
        ];
        let Violation::FenceReused(first, again) = violation(&records) else {
            panic!("reuse not found")
        };
        assert_eq!((first.holder.as_str(), again.holder.as_str()), ("a", "b"));
        // With a higher fence in between: still reuse, naming the two that share it.
        let records = [
            rec("a", 4, Event::Start, 10),
            rec("a", 4, Event::End, 11),
            rec("b", 6, Event::Start, 12),
            rec("b", 6, Event::End, 13),
            rec("c", 4, Event::Start, 14),
            rec("c", 4, Event::End, 15),
        ];
        let violation = violation(&records);
        let Violation::FenceReused(first, again) = &violation else {
            panic!("reuse not found: {violation}")
        };
        assert_eq!((first.holder.as_str(), again.holder.as_str()), ("a", "c"));
        let text = violation.to_string();
        assert!(text.starts_with("fence reused"), "{text}");
        assert!(
            text.contains("holder a fence 4") && text.contains("holder c fence 4"),
            "{text}"
        );
    }

    #[test]
    fn the_same_fence_on_different_names_is_not_reuse() {
        let mut other = rec("b", 1, Event::Start, 30);
        other.name = "other".into();
        let records = [
            rec("a", 1, Event::Start, 10),
            rec("a", 1, Event::End, 20),
            other,
        ];
        assert_eq!(check(&records).unwrap().names, 2);
    }

    #[test]
    fn sections_are_listed_by_name_and_start() {
        let mut late_other = rec("c", 9, Event::Start, 5);
        late_other.name = "a-first".into();
        let records = [
            rec("b", 2, Event::Start, 30),
            rec("a", 1, Event::Start, 10),
            rec("a", 1, Event::End, 20),
            late_other,
        ];
        let listed: Vec<(String, u64, bool)> = sections(&records)
            .unwrap()
            .into_iter()
            .map(|s| (s.holder, s.start, s.released))
            .collect();
        assert_eq!(
            listed,
            [
                ("c".to_owned(), 5, false),
                ("a".to_owned(), 10, true),
                ("b".to_owned(), 30, false)
            ]
        );
    }

    #[test]
    fn records_without_a_start_or_after_the_end_are_orphans() {
        assert!(matches!(
            violation(&[rec("a", 1, Event::Work, 5)]),
            Violation::Orphan(_)
        ));
        let records = [
            rec("a", 1, Event::Start, 1),
            rec("a", 1, Event::End, 2),
            rec("a", 1, Event::Work, 3),
        ];
        assert!(matches!(violation(&records), Violation::Orphan(_)));
    }

    #[test]
    fn different_names_may_overlap() {
        let mut other = rec("b", 1, Event::Start, 12);
        other.name = "other".into();
        let records = [
            rec("a", 1, Event::Start, 10),
            other,
            rec("a", 1, Event::End, 20),
        ];
        assert_eq!(check(&records).unwrap().names, 2);
    }

    /// A directory under `TMPDIR`, removed when dropped, also when the test fails.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "history-test-{tag}-{}-{}",
                std::process::id(),
                monotonic_nanos()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_summary_prints_as_key_value_words() {
        let summary = Summary {
            sections: 12,
            lost: 1,
            holders: 3,
            names: 2,
        };
        assert_eq!(summary.to_string(), "sections=12 lost=1 holders=3 names=2");
    }

    #[test]
    fn a_holder_id_that_is_not_one_word_is_an_error_not_a_panic() {
        let dir = TempDir::new("holder");
        let path = dir.0.join("history");
        for bad in ["", "a b", "a\nb", "a\tb"] {
            let error = Recorder::open(&path, bad).expect_err(bad);
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        assert!(Recorder::open(&path, "a-b_c.1").is_ok());
    }

    #[test]
    fn assert_history_panics_naming_the_offending_pair() {
        let dir = TempDir::new("assert");
        let path = dir.0.join("history");
        let mut a = Recorder::open(&path, "early").unwrap();
        let mut b = Recorder::open(&path, "intruder").unwrap();
        a.record_at("job", 7, Event::Start, 100).unwrap();
        b.record_at("job", 8, Event::Start, 150).unwrap();
        a.record_at("job", 7, Event::Work, 160).unwrap();
        b.record_at("job", 8, Event::End, 170).unwrap();
        let panic = std::panic::catch_unwind(|| assert_history(&path)).expect_err("a violation");
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("overlap"), "{message}");
        assert!(
            message.contains("holder early fence 7") && message.contains("from 100 to 160"),
            "{message}"
        );
        assert!(
            message.contains("holder intruder fence 8") && message.contains("from 150 to 170"),
            "{message}"
        );
        assert!(message.contains("4 records"), "{message}");
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        let dir = TempDir::new("malformed");
        let path = dir.0.join("history");
        std::fs::write(&path, "10 start 1 a 6a6f62\n11 sideways 1 a 6a6f62\n").unwrap();
        let error = read(&path).expect_err("malformed");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("line 2"), "{error}");
        std::fs::write(&path, "10 start 1 a 6a6\n").unwrap();
        assert!(read(&path).is_err(), "odd hex");
        std::fs::write(&path, "10 start 1 a ff\n").unwrap();
        assert!(read(&path).is_err(), "not UTF-8");
    }

    #[test]
    fn a_second_start_of_one_section_is_an_orphan() {
        let records = [rec("a", 1, Event::Start, 1), rec("a", 1, Event::Start, 2)];
        assert!(matches!(violation(&records), Violation::Orphan(_)));
    }

    #[test]
    fn records_round_trip_through_a_shared_file() {
        let dir = TempDir::new("round-trip");
        let path = dir.0.join("history");
        let mut a = Recorder::open(&path, "a").unwrap();
        let mut b = Recorder::open(&path, "b").unwrap();
        a.record("x y\n", 1, Event::Start).unwrap();
        assert!(a.verified("x y\n", 1, Event::Work, || true).unwrap());
        assert!(!a.verified("x y\n", 1, Event::Work, || false).unwrap());
        a.record("x y\n", 1, Event::End).unwrap();
        b.record("x y\n", 2, Event::Start).unwrap();
        b.record("x y\n", 2, Event::End).unwrap();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 5);
        assert_eq!(records[0].name, "x y\n");
        assert_eq!(check(&records).unwrap().sections, 2);
    }

    #[test]
    fn every_line_is_one_record_length_so_none_crosses_a_page() {
        assert_eq!(4096 % RECORD_LEN, 0, "a divisor of the page size");
        let dir = TempDir::new("fixed-length");
        let path = dir.0.join("history");
        let mut recorder = Recorder::open(&path, "a-holder").unwrap();
        for fence in 1..=40 {
            recorder.record("job", fence, Event::Start).unwrap();
            recorder.record("job", fence, Event::End).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 80 * RECORD_LEN);
        for line in bytes.chunks(RECORD_LEN) {
            assert_eq!(line.last(), Some(&b'\n'));
        }
        assert_eq!(check(&read(&path).unwrap()).unwrap().sections, 40);
    }

    #[test]
    fn a_record_too_long_for_its_line_is_an_error_and_writes_nothing() {
        let dir = TempDir::new("too-long");
        let path = dir.0.join("history");
        let mut recorder = Recorder::open(&path, "a").unwrap();
        let error = recorder
            .record(&"n".repeat(RECORD_LEN), 1, Event::Start)
            .expect_err("too long");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains("shorter lock name"), "{error}");
        assert!(read(&path).unwrap().is_empty());
    }
}
