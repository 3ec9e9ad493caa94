//! Where a hand-off's time goes (`lockctl bench --handoff-steps`): each worker records when
//! its store calls began and ended (through the [`Counting`](super::heartbeat::Counting)
//! wrapper, so the library and the backend are measured unchanged), and each hand-off is cut
//! into the steps between those times:
//!
//! | step | from | to |
//! |---|---|---|
//! | `before_release_us` | the releaser's "r" (just before `release()`) | its `release` store call begins |
//! | `release_call_us` | that call begins | it returns |
//! | `wake_us` | it returns | the waiter's `wait_for_change` returns (0 if the waiter ran first) |
//! | `before_attempt_us` | the wait returns | the waiter's last `try_acquire` begins |
//! | `attempt_us` | that attempt begins | it returns, with the lease |
//! | `after_attempt_us` | it returns | the waiter's `lock()` returns ("a") |
//!
//! Recording costs two clock reads and two stores to memory per store call, so the hand-off
//! figures of a run with steps are a little higher than without; the default run records
//! nothing.

use std::sync::{Mutex, PoisonError};

use serde_json::json;

use super::stats::Samples;
use super::worker::{Events, Handoff};

/// A store call's kind, as its event line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A `release` call (`L <begin> <end>`).
    Release,
    /// A `try_acquire` or `try_acquire_permit` call (`T <begin> <end>`).
    Attempt,
    /// The return of a `wait_for_change` call (`W <at> <at>`).
    Woke,
}

impl Call {
    fn letter(self) -> char {
        match self {
            Self::Release => 'L',
            Self::Attempt => 'T',
            Self::Woke => 'W',
        }
    }

    pub(crate) fn from_letter(letter: &str) -> Option<Self> {
        match letter {
            "L" => Some(Self::Release),
            "T" => Some(Self::Attempt),
            "W" => Some(Self::Woke),
            _ => None,
        }
    }
}

/// One worker's store calls as they happen, kept in memory and printed at the end.
#[derive(Debug, Default)]
pub(crate) struct StepLog {
    calls: Mutex<Vec<(Call, u64, u64)>>,
}

impl StepLog {
    /// Room for `calls` calls up front, so that recording one does not allocate.
    pub(crate) fn with_room(calls: usize) -> Self {
        Self {
            calls: Mutex::new(Vec::with_capacity(calls)),
        }
    }

    /// Records a call of `kind` from `begin` to `end` (`CLOCK_MONOTONIC` nanoseconds).
    pub(crate) fn record(&self, kind: Call, begin: u64, end: u64) {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((kind, begin, end));
    }

    /// The event lines: `<letter> <begin> <end>`, one a call.
    pub(crate) fn lines(&self) -> String {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(calls.len() * 40);
        for (kind, begin, end) in calls.iter() {
            out.push_str(&format!("{} {begin} {end}\n", kind.letter()));
        }
        out
    }
}

/// The steps of one hand-off, in nanoseconds (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Steps {
    before_release: u64,
    release_call: u64,
    wake: u64,
    before_attempt: u64,
    attempt: u64,
    after_attempt: u64,
}

/// The steps of `handoff`, or `None` when the workers' calls do not show them all: the
/// releaser's `release` call beginning at or after its "r", and the waiter woken after that
/// call began, then making its last attempt before its "a".
pub(crate) fn of_handoff(workers: &[Events], handoff: &Handoff) -> Option<Steps> {
    let releaser = &workers[handoff.releaser].calls;
    let waiter = &workers[handoff.waiter].calls;
    let &(_, release_begin, release_end) = releaser
        .iter()
        .find(|&&(kind, begin, _)| kind == Call::Release && begin >= handoff.released)?;
    let last_before_acquired = |wanted: Call| {
        waiter
            .iter()
            .rev()
            .find(|&&(kind, _, end)| kind == wanted && end <= handoff.acquired)
            .copied()
    };
    let (_, woke, _) = last_before_acquired(Call::Woke)?;
    let (_, attempt_begin, attempt_end) = last_before_acquired(Call::Attempt)?;
    if woke < release_begin || attempt_begin < woke || release_begin > handoff.acquired {
        return None;
    }
    Some(Steps {
        before_release: release_begin - handoff.released,
        release_call: release_end.saturating_sub(release_begin),
        wake: woke.saturating_sub(release_end),
        before_attempt: attempt_begin - woke,
        attempt: attempt_end - attempt_begin,
        after_attempt: handoff.acquired - attempt_end,
    })
}

/// The p50 of each step over `handoffs`, and how many hand-offs showed their steps.
pub(crate) fn summary(workers: &[Events], handoffs: &[Handoff]) -> serde_json::Value {
    let steps: Vec<Steps> = handoffs
        .iter()
        .filter_map(|handoff| of_handoff(workers, handoff))
        .collect();
    let p50 = |step: fn(&Steps) -> u64| {
        let mut samples = Samples::default();
        for s in &steps {
            samples.push_nanos(step(s));
        }
        samples.quantile_us(0.5)
    };
    json!({
        "count": steps.len(),
        "before_release_us": p50(|s| s.before_release),
        "release_call_us": p50(|s| s.release_call),
        "wake_us": p50(|s| s.wake),
        "before_attempt_us": p50(|s| s.before_attempt),
        "attempt_us": p50(|s| s.attempt),
        "after_attempt_us": p50(|s| s.after_attempt),
    })
}

/// One line for the progress output: each step's p50.
pub(crate) fn describe(summary: &serde_json::Value) -> String {
    let us = |key: &str| summary[key].as_f64().unwrap_or(f64::NAN);
    format!(
        "steps (p50 of {} hand-offs): release() to its store call {:.1} us, release call \
         {:.1} us, wake {:.1} us, to the attempt {:.1} us, attempt {:.1} us, to lock()'s \
         return {:.1} us",
        summary["count"],
        us("before_release_us"),
        us("release_call_us"),
        us("wake_us"),
        us("before_attempt_us"),
        us("attempt_us"),
        us("after_attempt_us"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handoff(releaser: usize, released: u64, waiter: usize, acquired: u64) -> Handoff {
        Handoff {
            releaser,
            released,
            waiter,
            acquired,
        }
    }

    #[test]
    fn a_handoff_is_cut_at_its_store_calls() {
        // Worker 0 holds, releases at 100 (its release call runs 103-150); worker 1, which
        // waited from 5 and attempted once at 10-12, wakes at 170, attempts 172-200 and
        // has the lock at 204.
        let releaser = Events::parse("w 0\na 1\nr 100\nL 103 150\n").unwrap();
        let waiter = Events::parse("w 5\nT 10 12\nW 170 170\nT 172 200\na 204\n").unwrap();
        let workers = [releaser, waiter];
        let steps = of_handoff(&workers, &handoff(0, 100, 1, 204)).unwrap();
        assert_eq!(
            steps,
            Steps {
                before_release: 3,
                release_call: 47,
                wake: 20,
                before_attempt: 2,
                attempt: 28,
                after_attempt: 4,
            }
        );
        let summary = summary(&workers, &[handoff(0, 100, 1, 204)]);
        assert_eq!(summary["count"], 1);
        assert_eq!(summary["attempt_us"], 0.028);
        assert!(describe(&summary).contains("attempt 0.0 us"));
    }

    #[test]
    fn a_waiter_woken_before_the_release_began_is_not_cut() {
        // The waiter's last wake-up (at 90) came before the release call (103): what woke
        // it was not this release, so the hand-off has no wake step to show.
        let releaser = Events::parse("r 100\nL 103 150\n").unwrap();
        let waiter = Events::parse("W 90 90\nT 172 200\na 204\n").unwrap();
        assert_eq!(
            of_handoff(&[releaser, waiter], &handoff(0, 100, 1, 204)),
            None
        );
        // Nor one whose calls were not recorded (a run without steps).
        let releaser = Events::parse("r 100\n").unwrap();
        let waiter = Events::parse("a 204\n").unwrap();
        assert_eq!(
            of_handoff(&[releaser, waiter], &handoff(0, 100, 1, 204)),
            None
        );
    }

    #[test]
    fn a_log_prints_the_lines_events_parse() {
        let log = StepLog::with_room(4);
        log.record(Call::Release, 1, 2);
        log.record(Call::Woke, 3, 3);
        log.record(Call::Attempt, 4, 5);
        let events = Events::parse(&log.lines()).unwrap();
        assert_eq!(
            events.calls,
            vec![
                (Call::Release, 1, 2),
                (Call::Woke, 3, 3),
                (Call::Attempt, 4, 5)
            ]
        );
    }
}
