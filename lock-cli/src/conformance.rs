//! `lockctl conformance`: the shared suite against a live store.

use std::io::Write;
use std::time::{Duration, Instant};

use lock_conformance::{CASES, CaseOutcome, Target, run_case};
use tokio::task::JoinSet;

use crate::cli::ConformanceArgs;
use crate::error::CliError;
use crate::exit;
use lock_core::backend_kit::redact_url;

/// Runs the suite; returns the exit code.
pub(crate) async fn conformance(args: ConformanceArgs) -> Result<u8, CliError> {
    let cases: Vec<_> = CASES
        .iter()
        .filter(|c| args.filter.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();
    if let (true, Some(filter)) = (cases.is_empty(), &args.filter) {
        return Err(CliError::Usage(format!(
            "--filter {filter:?} matches no conformance case name; run without --filter to see every case"
        )));
    }
    // Two independent clients, as two processes would have.
    let first = leaselock::connect(&args.url).await?;
    let second = leaselock::connect(&args.url).await?;
    let prefix = format!("lockctl-conformance-{:08x}/", rand::random::<u32>());
    // The URL as shown: never with its password.
    let shown = redact_url(&args.url);
    let target = Target::new(shown.as_ref(), first)
        .with_second_client(second)
        .with_prefix(&prefix);
    outln!(
        "running {} conformance cases against {} under the name prefix {prefix}",
        cases.len(),
        shown
    );

    // Failures are reported below; keep the default panic printout from cluttering them.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    let outcomes = run_all(&cases, &target, args.jobs.max(1)).await;
    std::panic::set_hook(default_hook);

    let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let not_applicable: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.not_applicable.map(|why| (o.name, why)))
        .collect();
    outln!();
    for outcome in &failed {
        if let Err(message) = &outcome.result {
            outln!(
                "FAILED {}:\n    {}\n",
                outcome.name,
                message.replace('\n', "\n    ")
            );
        }
    }
    for (name, why) in &not_applicable {
        outln!("not applicable here: {name}: {why}");
    }
    outln!(
        "{} passed, {} failed, {} not applicable, in {:.1}s",
        outcomes.len() - failed.len() - not_applicable.len(),
        failed.len(),
        not_applicable.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(if failed.is_empty() {
        0
    } else {
        exit::SUITE_FAILED
    })
}

/// Runs `cases`, `jobs` at a time, printing a line as each finishes.
async fn run_all(
    cases: &[&'static lock_conformance::Case],
    target: &Target,
    jobs: usize,
) -> Vec<CaseOutcome> {
    let total = cases.len();
    let mut pending = cases.iter().copied();
    let mut running = JoinSet::new();
    let mut outcomes = Vec::with_capacity(total);
    loop {
        while running.len() < jobs {
            let Some(case) = pending.next() else { break };
            let target = target.clone();
            running.spawn(async move { run_case(case, target).await });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let outcome = joined.unwrap_or_else(|e| CaseOutcome {
            name: "?",
            result: Err(format!("runner task failed: {e}")),
            elapsed: Duration::ZERO,
            not_applicable: None,
        });
        outcomes.push(outcome);
        let last = outcomes.last().expect("just pushed");
        let verdict = match (&last.result, last.not_applicable) {
            (Err(_), _) => "FAILED",
            (Ok(()), Some(_)) => "n/a",
            (Ok(()), None) => "ok",
        };
        outln!(
            "[{:>2}/{total}] {verdict:<6} {:<55} {:>6.2}s",
            outcomes.len(),
            last.name,
            last.elapsed.as_secs_f64()
        );
        let _ = std::io::stdout().flush();
    }
    outcomes
}
