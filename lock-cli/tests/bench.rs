//! `lockctl bench --quick --json` measures every section against each kind of store, with
//! sane numbers.

mod support;

use lock_testkit::Backend;
use support::{Sandbox, assert_code};

#[test]
fn a_quick_bench_reports_every_section_for_every_store() {
    let sandbox = Sandbox::new();
    let urls = [
        sandbox.url(Backend::Sqlite),
        sandbox.url(Backend::File),
        sandbox.url(Backend::Redis),
        sandbox.url(Backend::Postgres),
    ];
    std::fs::create_dir_all(sandbox.path().join("locks")).unwrap();
    let mut args = vec![
        "bench",
        "--quick",
        "--json",
        "--duration",
        "1s",
        "--leases",
        "50",
        "--handoff-steps",
    ];
    for url in &urls {
        args.extend(["--url", url.as_str()]);
    }
    let output = sandbox.run(&args);
    assert_code(&output, 0);
    let results: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", support::stdout(&output)));
    assert_eq!(results.len(), urls.len());
    for (result, url) in results.iter().zip(&urls) {
        assert_eq!(result["url"], url.as_str());
        let num = |path: &[&str]| -> f64 {
            let mut v = result;
            for key in path {
                v = &v[*key];
            }
            v.as_f64()
                .unwrap_or_else(|| panic!("{url}: {path:?} missing in {result}"))
        };
        for side in ["library", "raw"] {
            assert!(num(&["pair", side, "count"]) >= 200.0, "{url} {side}");
            assert!(num(&["pair", side, "p50_us"]) > 0.0);
            assert!(num(&["pair", side, "p50_us"]) <= num(&["pair", side, "p99_us"]));
            assert!(num(&["pair", side, "per_sec"]) > 0.0);
        }
        let ratio = num(&["pair", "ratio_p50"]);
        assert!(ratio.is_finite() && ratio > 0.0, "{url}: ratio {ratio}");
        let mut cut = 0.0;
        for waiters in ["processes_2", "processes_8", "processes_32"] {
            assert!(
                num(&["handoff", waiters, "count"]) > 0.0,
                "{url}: {waiters}"
            );
            // --handoff-steps: the hand-offs whose store calls show every step.
            let steps = num(&["handoff", waiters, "steps", "count"]);
            assert!(steps <= num(&["handoff", waiters, "count"]), "{url}");
            cut += steps;
            if steps > 0.0 {
                for step in ["release_call_us", "attempt_us"] {
                    assert!(
                        num(&["handoff", waiters, "steps", step]) > 0.0,
                        "{url} {step}"
                    );
                }
                for step in [
                    "before_release_us",
                    "wake_us",
                    "before_attempt_us",
                    "after_attempt_us",
                ] {
                    assert!(
                        num(&["handoff", waiters, "steps", step]) >= 0.0,
                        "{url} {step}"
                    );
                }
            }
            assert!(num(&["handoff", waiters, "p50_us"]) <= num(&["handoff", waiters, "p99_us"]));
            // Every acquisition took at least the attempt that succeeded.
            assert!(
                num(&["handoff", waiters, "attempts"])
                    >= num(&["handoff", waiters, "acquisitions"]),
                "{url}: {waiters}"
            );
            assert!(num(&["handoff", waiters, "attempts_per_acquisition"]) >= 1.0);
            // Single-host stores are compared with workers taking turns on a bare `flock`,
            // and on a bare `flock` with each turn's lease written to the store the raw way.
            let single_host = url.starts_with("sqlite") || url.starts_with("file");
            for (floor, ratio) in [("raw_flock", "ratio_p50"), ("raw_store", "ratio_store_p50")] {
                if !single_host {
                    assert!(
                        result["handoff"][waiters][floor].is_null(),
                        "{url}: no {floor} hand-off baseline for a network store"
                    );
                    continue;
                }
                assert!(num(&["handoff", waiters, floor, "count"]) > 0.0, "{url}");
                assert!(
                    num(&["handoff", waiters, floor, "p50_us"])
                        <= num(&["handoff", waiters, floor, "p99_us"])
                );
                let ratio = num(&["handoff", waiters, ratio]);
                assert!(ratio.is_finite() && ratio > 0.0, "{url} {floor}: {ratio}");
            }
        }
        assert!(cut > 0.0, "{url}: no hand-off was cut into its steps");
        assert!(
            num(&["throughput", "names_1", "served_least"])
                <= num(&["throughput", "names_1", "served_most"]),
            "{url}"
        );
        for names in ["names_1", "names_8"] {
            // Each of the 8 processes loops for --quick's 100 ms, after one cycle at least.
            assert!(num(&["throughput", names, "acquisitions"]) >= 8.0, "{url}");
            assert!(num(&["throughput", names, "per_sec"]) > 0.0);
        }
        assert_eq!(num(&["heartbeat", "leases"]), 50.0);
        assert_eq!(num(&["heartbeat", "ttl_ms"]), 3000.0, "--quick's TTL");
        assert_eq!(
            num(&["heartbeat", "lost"]),
            0.0,
            "{url}: leases lost while held"
        );
        assert!(
            num(&["heartbeat", "leases_renewed_per_sec"]) > 0.0,
            "{url}: heartbeats happen"
        );
        assert!(num(&["heartbeat", "cpu_percent_of_one_core"]) >= 0.0);
    }
    let left = flock_files(sandbox.path());
    assert!(left.is_empty(), "the raw hand-off baselines left {left:?}");
}

/// The raw baselines' files below `dir` (`flock` files, raw lease files).
fn flock_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(flock_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "flock")
            || entry
                .file_name()
                .to_string_lossy()
                .starts_with("bench-raw-")
        {
            found.push(path);
        }
    }
    found
}
