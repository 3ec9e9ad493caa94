//! Running cases chosen at run time, with panics turned into reports.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::Target;

/// One case of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name (its function name).
    pub name: &'static str,
    /// Runs the case against a target; panics on failure.
    pub run: fn(Target) -> Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

/// How one case went.
#[derive(Clone, Debug)]
pub struct CaseOutcome {
    /// The case's name.
    pub name: &'static str,
    /// `Err` with the failure message if it failed.
    pub result: Result<(), String>,
    /// How long it ran.
    pub elapsed: Duration,
    /// Why the case did not run, when it needs a test hook the target does not have (it
    /// then counts neither as passed nor as failed).
    pub not_applicable: Option<&'static str>,
}

/// The cases that need the target's [`WriteLoss`](crate::WriteLoss) hook.
pub const NEEDS_WRITE_LOSS: &[&str] = &["fences_rise_after_the_store_loses_writes"];

/// Runs `case` against `target` in its own task, so a failing assertion becomes an
/// `Err` with its message instead of unwinding through the caller.
pub async fn run_case(case: &Case, target: Target) -> CaseOutcome {
    let start = Instant::now();
    if target.write_loss().is_none() && NEEDS_WRITE_LOSS.contains(&case.name) {
        return CaseOutcome {
            name: case.name,
            result: Ok(()),
            elapsed: Duration::ZERO,
            not_applicable: Some(
                "needs a store that can be made to lose writes (a test hook); each backend's own tests run it",
            ),
        };
    }
    let result = match tokio::spawn((case.run)(target)).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            Err(payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the case panicked".to_owned()))
        }
        Err(e) => Err(format!("the case was cancelled: {e}")),
    };
    CaseOutcome {
        name: case.name,
        result,
        elapsed: start.elapsed(),
        not_applicable: None,
    }
}
