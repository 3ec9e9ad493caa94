//! Negative control for the cross-process tests: when two processes really do hold one lock
//! name at once, the whole path (workers recording into the shared history file, then
//! the checker) reports the overlap and names both holders. Here the lock cannot exclude:
//! the two workers use different SQLite files, under the same name and one history file.

mod support;

use std::time::Duration;

use lock_testkit::Backend;
use lock_testkit::history::{self, Violation};
use support::{Report, Store, Worker, worker_program};

const TTL: Duration = Duration::from_secs(10);
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_holding_one_name_at_once_are_reported_as_an_overlap() {
    let store = Store::new(Backend::Sqlite);
    let name = store.name("unguarded");
    let elsewhere = format!("sqlite://{}", store.path("elsewhere.db").display());
    let mut first = store.worker("hold", &name, TTL, "first", &[]);
    first.acquired(PATIENCE).await;
    let mut second = Worker::start(&mut store.command(
        worker_program(),
        &elsewhere,
        "hold",
        &name,
        TTL,
        "second",
    ));
    second.acquired(PATIENCE).await;
    // Both hold "their" lock and record work steps every few ms.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for worker in [&mut first, &mut second] {
        worker.tell("release").await;
        worker.expect("released", PATIENCE).await;
        assert_eq!(worker.exit_code(PATIENCE).await, Some(0));
    }

    let records = history::read(&store.history()).unwrap();
    let violation = *history::check(&records).expect_err("the overlap is caught");
    let text = violation.to_string();
    let Violation::Overlap(a, b) = violation else {
        panic!("not reported as an overlap: {text}")
    };
    assert_eq!(
        (a.holder.as_str(), b.holder.as_str()),
        ("first", "second"),
        "{text}"
    );
    assert!(a.released && b.released, "{text}");
    assert!(b.start < a.end, "{text}");
    assert!(
        text.contains("holder first") && text.contains("holder second"),
        "{text}"
    );
    Report::new("negative_control", Backend::Sqlite)
        .field("processes", 2)
        .field("faults", 1)
        .field("fault", "two-stores")
        .field("overlaps_caught", 1)
        .emit();
}
