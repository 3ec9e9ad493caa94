//! Cross-process reliability tests for every lock backend.
//!
//! The `lock-worker` binary is a lock client the tests run as real OS processes: it holds a
//! lock through `Locker::with_lock_fn` (heartbeated, its work cancelled on loss) until told
//! to release it, SIGKILLed or SIGSTOPped, or it runs acquire/heartbeat/release cycles
//! (optionally stalling past its TTL while it holds the lock, to force expiry and takeover),
//! recording every critical section in a shared [`history`](lock_testkit::history) file
//! that the tests check for overlaps and fence order. Run `cargo test -p lock-tests`; the
//! 32-process SQLite contention test is `cargo test -p lock-tests --test sqlite_contention`.
//!
//! Every test also prints one summary line (to stderr, and appended to the file named by
//! `LOCK_TEST_SUMMARY` when that is set, since cargo captures test output):
//!
//! ```text
//! reliability test=sigkill backend=redis processes=2 faults=1 fault=sigkill sections=2 lost=1 holders=2 names=1 overlaps=0
//! ```
//!
//! The worker prints one line per event on stdout, such as:
//!
//! ```text
//! acquired <fence>
//! cancelled <work steps begun> <monotonic ns when the last one began>
//! error Config <message>
//! ```
