//! The crash test: a child process runs 1,000 orchestrations mixing activities, timers,
//! events and entity signals on the embedded store; it is killed with SIGKILL at random points
//! at least 10 times and restarted. In the end every orchestration completed exactly once
//! (one ExecutionCompleted each, each activity result recorded once) and every entity count
//! equals the signals sent to it.
//!
//! The child is this test binary itself, re-run with `PERDURE_CRASH_CHILD=<dir>` (or
//! `postgres:<table>`) on the test `crash_child`. `PERDURE_CRASH_CYCLES` raises the number of
//! kills (default 10). `crash_test` runs on the embedded store, `crash_test_postgres` on
//! PostgreSQL (a table of its own; skipped loudly without `PERDURE_TEST_POSTGRES_URL`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use perdure_core::management::{IdReusePolicy, ManagementApi, ManagementError, StartRequest};
use perdure_core::orchestration::OrchestrationContext;
use perdure_core::{EntityId, EventKind, FailureDetails, InstanceId, OrchestrationStatus, Payload};
use perdure_node::store::Store;
use perdure_node::store::embedded::EmbeddedStore;
use perdure_node::store::postgres::PostgresStore;

const INSTANCES: u64 = 1000;
const COUNTERS: u64 = 10;

fn registry() -> perdure_core::registry::Registry {
    let mut r = perdure_node::sample::sample_registry();
    r.add_orchestration("Mixed", |ctx: OrchestrationContext, i: u64| async move {
        let hello: String = ctx.call_activity("SayHello", format!("{i}")).await?;
        ctx.create_timer_after(Duration::from_millis(10 * (i % 5)))
            .await;
        let counter = EntityId::new("Counter", format!("crash-{}", i % COUNTERS))
            .map_err(|e| FailureDetails::new("Id", e.to_string()))?;
        ctx.signal_entity(&counter, "add", 1)?;
        let me = ctx.instance_id().clone();
        ctx.send_event(&me, "ping", i)?;
        let echoed: u64 = ctx.wait_for_external_event("ping").await?;
        let sq: u64 = ctx.call_activity("Square", echoed).await?;
        Ok::<_, FailureDetails>(format!("{hello} {sq}"))
    });
    r
}

fn id(i: u64) -> InstanceId {
    InstanceId::new(format!("mixed-{i:04}")).unwrap()
}

/// The child: starts (or resumes) the workload and prints DONE when everything completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(spec) = std::env::var("PERDURE_CRASH_CHILD") else {
        return; // Only runs as the child of `crash_test`.
    };
    let store = open(&spec).await;
    let node = common::start_with_options(store, registry(), common::restart_options()).await;
    println!("STARTED");
    for i in 0..INSTANCES {
        let mut req = StartRequest::new("Mixed");
        req.instance_id = Some(id(i));
        req.input = Some(Payload::json(&i).unwrap());
        req.reuse_policy = IdReusePolicy::RejectExisting;
        loop {
            match node.start(req.clone()).await {
                Ok(_) | Err(ManagementError::AlreadyExists { .. }) => break,
                Err(e) if e.is_retryable() => tokio::task::yield_now().await,
                Err(e) => panic!("start failed: {e}"),
            }
        }
    }
    for i in 0..INSTANCES {
        node.wait_for_completion(id(i), Duration::from_secs(3600))
            .await
            .unwrap();
    }
    println!("DONE");
    node.shutdown().await;
}

/// The store a spec names: `postgres:<table>` (at `PERDURE_TEST_POSTGRES_URL`) or a directory
/// for the embedded store.
async fn open(spec: &str) -> Arc<dyn Store> {
    match spec.strip_prefix("postgres:") {
        Some(table) => {
            let url = std::env::var("PERDURE_TEST_POSTGRES_URL").expect("PostgreSQL URL");
            Arc::new(
                PostgresStore::connect_with_table(&url, 16, table)
                    .await
                    .expect("connect to PostgreSQL"),
            )
        }
        None => Arc::new(EmbeddedStore::open(spec).expect("store opens")),
    }
}

fn spawn_child(dir: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("PERDURE_CRASH_CHILD", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child starts")
}

/// A small deterministic pseudo-random sequence for kill points (no clock, no OS entropy).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn crash_test() {
    if std::env::var("PERDURE_CRASH_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run(dir.path().to_str().expect("a UTF-8 temp dir"));
}

#[test]
fn crash_test_postgres() {
    if std::env::var("PERDURE_CRASH_CHILD").is_ok() {
        return;
    }
    let Some(url) = common::stores::postgres_url("crash_test_postgres") else {
        return;
    };
    let table = format!("crash_test_{}", std::process::id());
    run(&format!("postgres:{table}"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = PostgresStore::connect(&url, 1).await.expect("connect");
        admin.drop_table(&table).await.expect("drop test table");
    });
}

/// Kills and restarts the child on the store `spec` names, then verifies.
fn run(spec: &str) {
    let cycles: u32 = std::env::var("PERDURE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut kills = 0;
    let mut finished = false;
    while kills < cycles || !finished {
        let mut child = spawn_child(spec);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait for the node to be up, then kill it at a random point of its work (or
        // let the last run finish).
        let started = rx.iter().any(|l| l.ends_with("STARTED"));
        assert!(started, "child did not start");
        if kills < cycles {
            // Kill points fall within the first 20 + 2000/cycles ms of a run's work, so that
            // at least `cycles` kills hit the workload (it takes a few seconds here).
            let window = (2000 / u64::from(cycles.max(1))).max(10);
            let wait = Duration::from_millis(20 + next(&mut seed) % window);
            let done = matches!(rx.recv_timeout(wait), Ok(l) if l.ends_with("DONE"));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            finished = done;
            if done {
                // The workload finished before the kill: this kill does not count.
                assert!(
                    kills >= cycles,
                    "the workload finished after only {kills} kills (wanted {cycles})"
                );
                eprintln!("workload finished after {kills} kills");
                break;
            }
            kills += 1;
            eprintln!("kill {kills} during the workload");
        } else {
            let done = rx.iter().any(|l| l.ends_with("DONE"));
            let status = child.wait().unwrap();
            assert!(done && status.success(), "final run failed: {status:?}");
            finished = true;
        }
    }
    verify(spec);
}

fn verify(spec: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open(spec).await;
        let node = common::start_with_options(store, registry(), common::restart_options()).await;
        for i in 0..INSTANCES {
            let st = node.get_instance(id(i), true).await.unwrap().unwrap();
            assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
            let out: String = st.output.unwrap().decode().unwrap();
            assert_eq!(out, format!("Hello {i}! {}", i * i));
            let hist = node.get_history(id(i)).await.unwrap().unwrap();
            let ends = hist
                .iter()
                .filter(|e| matches!(e.kind, EventKind::ExecutionCompleted { .. }))
                .count();
            assert_eq!(ends, 1, "instance {i} completed {ends} times");
            let mut results: BTreeMap<i64, u32> = BTreeMap::new();
            for e in &hist {
                if let EventKind::TaskCompleted {
                    task_scheduled_id, ..
                } = e.kind
                {
                    *results.entry(task_scheduled_id).or_default() += 1;
                }
            }
            assert_eq!(results.len(), 2, "instance {i}: {results:?}");
            assert!(
                results.values().all(|n| *n == 1),
                "instance {i}: {results:?}"
            );
            let pings = hist
                .iter()
                .filter(
                    |e| matches!(&e.kind, EventKind::EventRaised { name, .. } if name == "ping"),
                )
                .count();
            assert_eq!(pings, 1, "instance {i}");
        }
        let mut total = 0;
        for k in 0..COUNTERS {
            let e = node
                .get_entity(EntityId::new("Counter", format!("crash-{k}")).unwrap())
                .await
                .unwrap()
                .unwrap();
            let n: i64 = e.state.unwrap().decode().unwrap();
            assert_eq!(n as u64, INSTANCES / COUNTERS, "counter crash-{k}");
            total += n;
        }
        assert_eq!(total as u64, INSTANCES);
        node.shutdown().await;
    });
}
