//! Golden histories of the six Durable Functions application patterns.
//!
//! Each pattern runs in the tester; its history must equal `tests/golden/<pattern>.json`
//! and must replay against the current code. Regenerate after an intended change with
//! `PERDURE_REGENERATE_GOLDEN=1 cargo test -p perdure-core --test replay_golden`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use perdure_core::testing::{OrchestrationTester, TestRun, replay_history};
use perdure_core::{HistoryEvent, InstanceId, Registry};
use serde::Serialize;

fn golden(name: &str, run: &TestRun, registry: Arc<Registry>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let json = serde_json::to_string_pretty(&run.history).unwrap() + "\n";
    if std::env::var_os("PERDURE_REGENERATE_GOLDEN").is_some() {
        std::fs::write(&path, &json).unwrap();
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with PERDURE_REGENERATE_GOLDEN=1)",
            path.display()
        )
    });
    let stored: Vec<HistoryEvent> = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        stored,
        run.history,
        "history of {name} differs from {}",
        path.display()
    );
    replay_history(registry, InstanceId::new("test").unwrap(), &stored)
        .expect("golden history replays");
}

fn run<T: Serialize>(
    name: &str,
    input: &T,
    setup: impl FnOnce(&mut OrchestrationTester),
) -> (TestRun, Arc<Registry>) {
    let registry = Arc::new(common::patterns());
    let mut t = OrchestrationTester::new(registry.clone());
    setup(&mut t);
    (t.run(name, input), registry)
}

#[test]
fn chaining() {
    let (r, reg) = run("Chaining", &(), |_| {});
    assert_eq!(
        r.output::<Vec<String>>().unwrap(),
        ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]
    );
    golden("chaining", &r, reg);
}

#[test]
fn fan_out_fan_in() {
    let (r, reg) = run("FanOutFanIn", &5, |_| {});
    assert_eq!(r.output::<u64>().unwrap(), 150);
    golden("fan_out_fan_in", &r, reg);
}

#[test]
fn async_http_api() {
    let (r, reg) = run("AsyncHttpApi", &"job1", |_| {});
    assert_eq!(r.output::<String>().unwrap(), "result of ticket-job1");
    assert_eq!(r.custom_status::<String>().as_deref(), Some("done"));
    golden("async_http_api", &r, reg);
}

#[test]
fn monitor() {
    let (r, reg) = run("Monitor", &"job1", |_| {});
    assert_eq!(r.output::<u32>().unwrap(), 3);
    golden("monitor", &r, reg);
}

#[test]
fn human_interaction_approved_and_timed_out() {
    let (r, reg) = run("HumanInteraction", &"po-1", |t| {
        t.raise_event_after(Duration::from_secs(3600), "ApprovalEvent", &true);
    });
    assert_eq!(r.output::<String>().unwrap(), "approved");
    golden("human_interaction", &r, reg);
    let (r, reg) = run("HumanInteraction", &"po-2", |_| {});
    assert_eq!(r.output::<String>().unwrap(), "escalated");
    golden("human_interaction_timeout", &r, reg);
}

#[test]
fn aggregator() {
    let (r, reg) = run("Aggregator", &vec![1, 2, 3, 4], |_| {});
    assert_eq!(r.output::<i64>().unwrap(), 10);
    golden("aggregator", &r, reg);
}
