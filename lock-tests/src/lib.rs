//! Cross-process reliability tests for every lock backend.
//!
//! The `lock-worker` binary is a lock client the tests run as real OS processes: it holds a
//! lock until told to release it, holds one without ever heartbeating (to be SIGKILLed), or
//! runs acquire/heartbeat/release cycles, recording every critical section in a shared
//! [`history`](lock_conformance::history) file that the tests check for overlaps and fence
//! order. Run `cargo test -p lock-tests`; the 32-process SQLite contention test is
//! `cargo test -p lock-tests --test sqlite_contention`.
//!
//! ```no_run
//! // The worker prints one line per event on stdout, such as:
//! // acquired <fence> <monotonic ns when the request was sent>
//! ```
