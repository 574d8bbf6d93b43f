//! Cluster chaos (issue 10): `perdure-test-node run` processes on PostgreSQL, linked by the
//! cluster transport on loopback, under a mixed workload while nodes are killed, frozen,
//! restarted, added and stopped, and while the store itself goes away.
//!
//! Every test ends with the same audit: every orchestration completed exactly once with the
//! right output (its history has one ExecutionStarted and one ExecutionCompleted, and no event
//! twice by kind and sequence number), every counter entity holds the exact sum of what was
//! added to it, and the money moved by `Transfer` is conserved.
//!
//! The first two tests need `PERDURE_TEST_POSTGRES_URL` (skipped loudly without it, a failure
//! in CI); the third starts a private PostgreSQL server from `/usr/lib/postgresql/15/bin`.
//! Cluster state has no notification across processes: the tests read `/cluster/partitions`
//! and `/readyz` until bounded deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use perdure_tests::NodeProcess;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const PARTITIONS: u32 = 16;
const ACCOUNTS: usize = 6;
const OPENING_BALANCE: i64 = 1_000;
const COUNTERS: usize = 4;

fn pg_url(test: &str) -> Option<String> {
    match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: PERDURE_TEST_POSTGRES_URL is not set in CI"
            );
            eprintln!("\n*** SKIPPED {test}: PERDURE_TEST_POSTGRES_URL is not set ***\n");
            None
        }
    }
}

/// A tiny deterministic generator (xorshift64*): the workload is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn free_addr() -> String {
    format!(
        "127.0.0.1:{}",
        perdure_tests::cluster_peer::free_port().expect("free port")
    )
}

/// One node of a test cluster.
struct Node {
    name: String,
    proc: NodeProcess,
}

fn spawn_node(url: &str, table: &str, name: &str, listen: &str, seeds: &str) -> Node {
    let args = perdure_tests::postgres_run_args(url, PARTITIONS, name);
    let env = [
        ("PERDURE_STORE_TABLE", table),
        ("PERDURE_CLUSTER_LEASE_TTL", "2s"),
        ("PERDURE_CLUSTER_LISTEN", listen),
        ("PERDURE_CLUSTER_SEEDS", seeds),
    ];
    let proc = NodeProcess::spawn_app(&args, &env, tempfile::tempdir().expect("tempdir"))
        .unwrap_or_else(|e| panic!("{name} starts: {e:#}"));
    Node {
        name: name.to_string(),
        proc,
    }
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .expect("client")
}

async fn get_json(http: &Client, url: &str) -> Option<Value> {
    let r = http.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The partition owners as `node` sees them (`None`: no owner).
async fn owners(http: &Client, node: &Node) -> Option<Vec<Option<String>>> {
    let t = get_json(http, &format!("{}/cluster/partitions", node.proc.origin)).await?;
    Some(
        t["partitions"]
            .as_array()?
            .iter()
            .map(|p| p["owner"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Waits (at most `secs`) until `node` sees every partition owned by its desired owner, the
/// owners being exactly `names`.
async fn until_settled(http: &Client, node: &Node, names: &[&str], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let want: BTreeSet<&str> = names.iter().copied().collect();
    let mut last = Value::Null;
    loop {
        if let Some(t) = get_json(http, &format!("{}/cluster/partitions", node.proc.origin)).await {
            let ps = t["partitions"].as_array().cloned().unwrap_or_default();
            let got: BTreeSet<&str> = ps.iter().filter_map(|p| p["owner"].as_str()).collect();
            if ps.len() == PARTITIONS as usize
                && ps
                    .iter()
                    .all(|p| p["owner"] == p["desired"] && p["owner"].is_string())
                && got == want
            {
                return;
            }
            last = t;
        }
        assert!(
            Instant::now() < deadline,
            "{}: partitions did not settle on {names:?} within {secs} s: {last}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn until_ready(http: &Client, node: &Node, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = http
            .get(format!("{}/readyz", node.proc.origin))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let last = match r {
            Ok(r) if r.status() == StatusCode::OK => return,
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{} not ready within {secs} s: {last}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one orchestration must return, and what it adds to the shared totals.
#[derive(Clone, Debug)]
struct Job {
    id: String,
    name: &'static str,
    input: Value,
    /// An `Approval` event to raise after the start.
    approve: bool,
    /// The expected output (`None`: a `Transfer`, whose output depends on the order of runs).
    output: Option<Value>,
    /// How many sub-orchestrations it runs (each audited as well).
    subs: usize,
}

fn sum_squares(n: u64) -> u64 {
    (1..=n).map(|i| i * i).sum()
}

/// The workload and the totals it must produce.
#[derive(Default)]
struct Ledger {
    jobs: Vec<Job>,
    /// What was added to each counter (`c0`..).
    counters: BTreeMap<String, i64>,
    /// Signals still to send: (entity name, key, operation, amount).
    signals: Vec<(&'static str, String, &'static str, i64)>,
}

impl Ledger {
    /// Adds `n` jobs (and some client signals) drawn from `rng`, ids prefixed by `tag`.
    fn draw(&mut self, rng: &mut Rng, tag: &str, n: usize) {
        for i in 0..n {
            let id = format!("{tag}-{i}");
            let job = match rng.below(6) {
                0 => Job {
                    id,
                    name: "HelloSequence",
                    input: Value::Null,
                    approve: false,
                    output: Some(json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])),
                    subs: 0,
                },
                1 => {
                    let k = 1 + rng.below(6);
                    Job {
                        id,
                        name: "FanOutFanIn",
                        input: json!(k),
                        approve: false,
                        output: Some(json!(sum_squares(k))),
                        subs: 0,
                    }
                }
                2 => Job {
                    id,
                    name: "Approval",
                    input: json!({"timeoutSeconds": 600}),
                    approve: true,
                    output: Some(json!("approved")),
                    subs: 0,
                },
                3 => Job {
                    id,
                    name: "Approval",
                    input: json!({"timeoutSeconds": 1}),
                    approve: false,
                    output: Some(json!("timed out")),
                    subs: 0,
                },
                4 => {
                    let k = 1 + rng.below(4);
                    let key = format!("c{}", rng.below(COUNTERS as u64));
                    *self.counters.entry(key.clone()).or_default() +=
                        i64::try_from(k + 1).unwrap_or(0);
                    Job {
                        subs: 1,
                        id,
                        name: "ChaosMix",
                        input: json!({"counter": key, "n": k}),
                        approve: false,
                        output: Some(json!(sum_squares(k))),
                    }
                }
                _ if !transfers() => Job {
                    id,
                    name: "HelloSequence",
                    input: Value::Null,
                    approve: false,
                    output: Some(json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])),
                    subs: 0,
                },
                _ => {
                    let from = rng.below(ACCOUNTS as u64);
                    let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1)) % ACCOUNTS as u64;
                    Job {
                        id,
                        name: "Transfer",
                        input: json!({"from": format!("a{from}"), "to": format!("a{to}"), "amount": 1 + rng.below(300)}),
                        approve: false,
                        output: None,
                        subs: 0,
                    }
                }
            };
            self.jobs.push(job);
            if rng.below(3) == 0 {
                let key = format!("c{}", rng.below(COUNTERS as u64));
                let k = 1 + i64::try_from(rng.below(9)).unwrap_or(0);
                *self.counters.entry(key.clone()).or_default() += k;
                self.signals.push(("Counter", key, "add", k));
            }
        }
    }
}

/// Whether the workload runs `Transfer`s (on unless `PERDURE_CHAOS_TRANSFERS=0`). They found
/// a partition whose inbox was never read again after its actor stopped with a re-read
/// queued (a `Transfer` then stayed `Running` for ever holding both locks); fixed in
/// `Shared::set_route`.
fn transfers() -> bool {
    std::env::var("PERDURE_CHAOS_TRANSFERS").map_or(true, |v| v != "0")
}

/// Sends one request until it gets an answer other than 503 (the cluster is moving a
/// partition, nothing was done), or any 5xx or a transport error when `any_5xx`, for at most
/// 60 s; before each retry `retry_ok` says whether to send again (false: the earlier attempt
/// took effect, answered as 202). Returns the status.
async fn send_retrying(
    what: &str,
    any_5xx: bool,
    mk: impl Fn() -> reqwest::RequestBuilder,
    mut retry_ok: impl AsyncFnMut() -> bool,
) -> StatusCode {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match mk().send().await {
            Ok(r)
                if r.status() != StatusCode::SERVICE_UNAVAILABLE
                    && !(any_5xx && r.status().is_server_error()) =>
            {
                return r.status();
            }
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) if any_5xx || e.is_connect() => e.to_string(),
            Err(e) => panic!("{what}: the request may have taken effect: {e}"),
        };
        assert!(
            Instant::now() < deadline,
            "{what}: no answer within 60 s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        if !retry_ok().await {
            return StatusCode::ACCEPTED;
        }
    }
}

/// Starts every job of `jobs` (and sends the signals) through `nodes` chosen by `rng`, 16
/// requests at a time. A start or a signal that got no answer is sent again only when it
/// cannot have taken effect: a start only when the instance does not exist, a signal only
/// after a 503 (which took no effect).
async fn drive(
    http: &Client,
    nodes: &[&str],
    rng: &mut Rng,
    jobs: &[Job],
    signals: &[(&'static str, String, &'static str, i64)],
) {
    let picks: Vec<String> = (0..jobs.len() + signals.len())
        .map(|_| nodes[rng.below(nodes.len() as u64) as usize].to_string())
        .collect();
    let starts = jobs.iter().zip(&picks).map(|(job, origin)| async move {
        let base = format!("{origin}{}", perdure_tests::BASE);
        let url = format!("{base}/orchestrators/{}/{}", job.name, job.id);
        let status_url = format!("{base}/instances/{}", job.id);
        let st = send_retrying(
            &format!("start {}", job.id),
            true,
            || {
                http.post(&url)
                    .header("content-type", "application/json")
                    .body(job.input.to_string())
            },
            async || {
                // Retry only when the instance is not there.
                !matches!(
                    http.get(&status_url).send().await.map(|r| r.status()),
                    Ok(StatusCode::OK | StatusCode::ACCEPTED)
                )
            },
        )
        .await;
        // 409: an earlier attempt whose answer was lost took effect (the instance runs).
        assert!(
            st == StatusCode::ACCEPTED || st == StatusCode::CONFLICT,
            "start {}: {st}",
            job.id
        );
        if job.approve {
            let url = format!("{base}/instances/{}/raiseEvent/Approval", job.id);
            let st = send_retrying(
                &format!("raise {}", job.id),
                false,
                || {
                    http.post(&url)
                        .header("content-type", "application/json")
                        .body("true")
                },
                async || true,
            )
            .await;
            assert_eq!(st, StatusCode::ACCEPTED, "raise Approval on {}", job.id);
        }
    });
    let sends =
        signals
            .iter()
            .zip(&picks[jobs.len()..])
            .map(|((name, key, op, k), origin)| async move {
                let url = format!(
                    "{origin}{}/entities/{name}/{key}?op={op}",
                    perdure_tests::BASE
                );
                let st = send_retrying(
                    &format!("signal {name}@{key}"),
                    false,
                    || {
                        http.post(&url)
                            .header("content-type", "application/json")
                            .body(k.to_string())
                    },
                    async || true,
                )
                .await;
                assert_eq!(st, StatusCode::ACCEPTED, "signal {name}@{key} {op} {k}");
            });
    let mut all: Vec<futures::future::LocalBoxFuture<'_, ()>> = Vec::new();
    all.extend(starts.map(|f| Box::pin(f) as futures::future::LocalBoxFuture<'_, ()>));
    all.extend(sends.map(|f| Box::pin(f) as futures::future::LocalBoxFuture<'_, ()>));
    futures::stream::iter(all)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Opens the accounts: `OPENING_BALANCE` deposited into each, through `origin`.
async fn open_accounts(http: &Client, origin: &str) {
    for a in 0..ACCOUNTS {
        let r = http
            .post(format!(
                "{origin}{}/entities/Account/a{a}?op=deposit",
                perdure_tests::BASE
            ))
            .header("content-type", "application/json")
            .body(OPENING_BALANCE.to_string())
            .send()
            .await
            .expect("deposit");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "deposit a{a}");
    }
}

/// Checks a history: one ExecutionStarted, one ExecutionCompleted, no event twice (by kind,
/// sequence number and the sequence number it answers).
fn check_history(id: &str, hist: &Value) {
    let events = hist.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut started = 0;
    let mut completed = 0;
    for e in events {
        let (kind, body) = match &e["kind"] {
            Value::String(s) => (s.clone(), Value::Null),
            Value::Object(m) => match m.iter().next() {
                Some((k, v)) => (k.clone(), v.clone()),
                None => (String::new(), Value::Null),
            },
            _ => (String::new(), Value::Null),
        };
        match kind.as_str() {
            "OrchestratorStarted" | "OrchestratorCompleted" => continue,
            "ExecutionStarted" => started += 1,
            "ExecutionCompleted" => completed += 1,
            _ => {}
        }
        let key = format!(
            "{kind}/{}/{}/{}/{}/{}/{}",
            e["event_id"],
            body["task_scheduled_id"],
            body["timer_id"],
            body["critical_section_id"],
            body["entity"],
            if kind == "EventRaised" {
                body["name"].clone()
            } else {
                Value::Null
            }
        );
        assert!(seen.insert(key), "{id}: event recorded twice: {e}\n{hist}");
    }
    assert_eq!(
        (started, completed),
        (1, 1),
        "{id}: ExecutionStarted and ExecutionCompleted once each: {hist}"
    );
}

/// Waits for every job to complete (through `origin`) and audits it; returns the Transfer
/// outputs' count of moves done.
async fn audit(http: &Client, origin: &str, ledger: &Ledger) {
    let base = format!("{origin}{}", perdure_tests::BASE);
    let base = &base;
    let checks = ledger.jobs.iter().map(|job| async move {
        let deadline = Instant::now() + Duration::from_secs(90);
        let st = loop {
            let r = http
                .get(format!("{base}/instances/{}?waitForCompletion=10s", job.id))
                .send()
                .await;
            let last = match r {
                Ok(r) if r.status() == StatusCode::OK => {
                    break r.json::<Value>().await.expect("JSON");
                }
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                let mut accounts = Vec::new();
                for a in 0..ACCOUNTS {
                    let url = format!("{base}/entities/Account/a{a}?metadata=true");
                    accounts.push(get_json(http, &url).await.unwrap_or_default());
                }
                let hist = get_json(http, &format!("{base}/instances/{}/history", job.id)).await;
                panic!(
                    "{} ({}) did not finish: {last}\nhistory: {}\naccounts: {}",
                    job.id,
                    job.name,
                    hist.unwrap_or_default(),
                    Value::from(accounts)
                );
            }
        };
        assert_eq!(st["runtimeStatus"], "Completed", "{}: {st}", job.id);
        match &job.output {
            Some(want) => assert_eq!(&st["output"], want, "{}: {st}", job.id),
            None => assert!(st["output"].is_boolean(), "{}: {st}", job.id),
        }
        let hist = get_json(http, &format!("{base}/instances/{}/history", job.id))
            .await
            .unwrap_or_else(|| panic!("{}: no history", job.id));
        check_history(&job.id, &hist);
        let children: Vec<String> = hist
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["kind"]["SubOrchestrationInstanceCreated"]["instance_id"].as_str())
            .map(str::to_string)
            .collect();
        assert_eq!(children.len(), job.subs, "{}: {hist}", job.id);
        for child in children {
            let hist = get_json(http, &format!("{base}/instances/{child}/history"))
                .await
                .unwrap_or_else(|| panic!("{child} (child of {}): no history", job.id));
            check_history(&child, &hist);
        }
    });
    futures::stream::iter(checks)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    // The entities: every counter holds exactly what was added, the money is all there.
    let entity = |name: &str, key: &str| format!("{base}/entities/{name}/{key}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got = BTreeMap::new();
        for key in ledger.counters.keys() {
            let v = get_json(http, &entity("Counter", key)).await;
            got.insert(key.clone(), v.and_then(|v| v.as_i64()).unwrap_or(0));
        }
        let mut balances = Vec::new();
        for a in 0..ACCOUNTS {
            let v = get_json(http, &entity("Account", &format!("a{a}"))).await;
            balances.push(v.and_then(|v| v.as_i64()).unwrap_or(0));
        }
        let total: i64 = balances.iter().sum();
        let want_total = OPENING_BALANCE * ACCOUNTS as i64;
        if got == ledger.counters && total == want_total {
            assert!(balances.iter().all(|b| *b >= 0), "{balances:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "entities: counters {got:?}, want {:?}; balances {balances:?} sum {total}, want {want_total}",
            ledger.counters
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn drop_table(url: &str, table: &str) {
    if let Ok(s) =
        perdure_node::store::postgres::PostgresStore::connect_with_table(url, 1, table).await
    {
        let _ = s.drop_table(table).await;
    }
}

fn origins(nodes: &[&Node]) -> Vec<String> {
    nodes.iter().map(|n| n.proc.origin.clone()).collect()
}

/// The number of orchestrations of the first test (the issue asks for 3,000; see below).
fn orchestrations() -> usize {
    std::env::var("PERDURE_CHAOS_ORCHESTRATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_survive_kill_join_and_stop() {
    let Some(url) = pg_url("three_nodes_survive_kill_join_and_stop") else {
        return;
    };
    let began = Instant::now();
    let table = format!("cluster_chaos_kill_{}", std::process::id());
    let http = http();
    let mut rng = Rng(0x5eed_0001);
    let (a1, a2, a3, a4) = (free_addr(), free_addr(), free_addr(), free_addr());
    let n1 = spawn_node(&url, &table, "n1", &a1, "");
    let n2 = spawn_node(&url, &table, "n2", &a2, &a1);
    let n3 = spawn_node(&url, &table, "n3", &a3, &a1);
    until_settled(&http, &n1, &["n1", "n2", "n3"], 30).await;
    eprintln!("phase 1: {:.1} s", began.elapsed().as_secs_f64());
    open_accounts(&http, &n1.proc.origin).await;

    // The 3,000 orchestrations by default (PERDURE_CHAOS_ORCHESTRATIONS sets
    // another count). Before the PostgreSQL store's cache and index scans, 3,000 took 94 s in
    // a debug build on a 2-core machine shared with other work.
    let total = orchestrations();
    let wave = total / 4;
    let mut ledger = Ledger::default();
    ledger.draw(&mut rng, "w1", wave);
    ledger.draw(&mut rng, "w2", wave);
    ledger.draw(&mut rng, "w3", wave);
    ledger.draw(&mut rng, "w4", total - 3 * wave);
    let (jobs, signals) = (ledger.jobs.clone(), ledger.signals.clone());
    let slice = |w: usize| {
        let tag = format!("w{}-", w + 1);
        let js: Vec<Job> = jobs
            .iter()
            .filter(|j| j.id.starts_with(&tag))
            .cloned()
            .collect();
        js
    };
    let sig_chunk = signals.len().div_ceil(4);
    let sigs = |w: usize| {
        signals
            .iter()
            .skip(w * sig_chunk)
            .take(sig_chunk)
            .cloned()
            .collect::<Vec<_>>()
    };

    // Wave 1 through all three, then SIGKILL n2 while that work runs.
    let live = origins(&[&n1, &n2, &n3]);
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    drive(&http, &live, &mut rng, &slice(0), &sigs(0)).await;
    eprintln!("phase 2: {:.1} s", began.elapsed().as_secs_f64());
    let before = owners(&http, &n1).await.expect("partition table");
    let orphan = (0..PARTITIONS)
        .find(|p| before[*p as usize].as_deref() == Some("n2"))
        .expect("n2 owns a partition");
    let killed_at = Instant::now();
    drop(n2.proc); // SIGKILL
    until_settled(&http, &n1, &["n1", "n3"], 30).await;
    eprintln!("phase 3: {:.1} s", began.elapsed().as_secs_f64());
    let probe = (0..)
        .map(|i| format!("probe-{i}"))
        .find(|id| perdure_node::state::partition_of(id, PARTITIONS) == orphan)
        .expect("an id on the orphaned partition");
    let probe_job = Job {
        id: probe.clone(),
        name: "HelloSequence",
        input: Value::Null,
        approve: false,
        output: Some(json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])),
        subs: 0,
    };
    let survivors = origins(&[&n1, &n3]);
    let survivors: Vec<&str> = survivors.iter().map(String::as_str).collect();
    drive(
        &http,
        &survivors,
        &mut rng,
        std::slice::from_ref(&probe_job),
        &[],
    )
    .await;
    eprintln!("phase 4: {:.1} s", began.elapsed().as_secs_f64());
    let r = http
        .get(format!(
            "{}/instances/{probe}?waitForCompletion=30s",
            n3.proc.base()
        ))
        .send()
        .await
        .expect("probe status");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the probe on partition {orphan} completes"
    );
    let recovery = killed_at.elapsed();
    eprintln!("recovery_time_ms={}", recovery.as_millis());
    ledger.jobs.push(probe_job);

    // Wave 2 through the survivors; n2 comes back under its name.
    drive(&http, &survivors, &mut rng, &slice(1), &sigs(1)).await;
    eprintln!("phase 5: {:.1} s", began.elapsed().as_secs_f64());
    let n2 = spawn_node(&url, &table, "n2", &a2, &a1);
    until_settled(&http, &n1, &["n1", "n2", "n3"], 30).await;
    eprintln!("phase 6: {:.1} s", began.elapsed().as_secs_f64());
    until_ready(&http, &n2, 10).await;

    // Wave 3; n4 joins.
    let live = origins(&[&n1, &n2, &n3]);
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    drive(&http, &live, &mut rng, &slice(2), &sigs(2)).await;
    eprintln!("phase 7: {:.1} s", began.elapsed().as_secs_f64());
    let n4 = spawn_node(&url, &table, "n4", &a4, &a1);
    until_settled(&http, &n1, &["n1", "n2", "n3", "n4"], 30).await;
    eprintln!("phase 8: {:.1} s", began.elapsed().as_secs_f64());

    // Wave 4; n3 stops gracefully and hands off.
    let live = origins(&[&n1, &n2, &n3, &n4]);
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    drive(&http, &live, &mut rng, &slice(3), &sigs(3)).await;
    eprintln!("phase 9: {:.1} s", began.elapsed().as_secs_f64());
    assert!(n3.proc.terminate().expect("SIGTERM"), "n3 exits cleanly");
    until_settled(&http, &n1, &["n1", "n2", "n4"], 30).await;
    eprintln!("phase 10: {:.1} s", began.elapsed().as_secs_f64());

    audit(&http, &n4.proc.origin, &ledger).await;
    eprintln!("phase 11: {:.1} s", began.elapsed().as_secs_f64());
    eprintln!(
        "three_nodes_survive_kill_join_and_stop: {} orchestrations, {} client signals, {:.1} s",
        ledger.jobs.len(),
        ledger.signals.len(),
        began.elapsed().as_secs_f64()
    );
    drop((n1, n2, n4));
    drop_table(&url, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_node_commits_nothing_after_its_lease() {
    let Some(url) = pg_url("a_frozen_node_commits_nothing_after_its_lease") else {
        return;
    };
    let began = Instant::now();
    let table = format!("cluster_chaos_freeze_{}", std::process::id());
    let http = http();
    let mut rng = Rng(0x5eed_0002);
    let (a1, a2, a3) = (free_addr(), free_addr(), free_addr());
    let n1 = spawn_node(&url, &table, "n1", &a1, "");
    let n2 = spawn_node(&url, &table, "n2", &a2, &a1);
    let n3 = spawn_node(&url, &table, "n3", &a3, &a1);
    until_settled(&http, &n1, &["n1", "n2", "n3"], 30).await;
    open_accounts(&http, &n1.proc.origin).await;
    let mut ledger = Ledger::default();
    ledger.draw(&mut rng, "f", 240);
    // Everything through n2, so that n2 has work in flight when it freezes.
    let (jobs, signals) = (ledger.jobs.clone(), ledger.signals.clone());
    drive(&http, &[n2.proc.origin.as_str()], &mut rng, &jobs, &signals).await;
    n2.proc.signal("STOP").expect("SIGSTOP");
    let frozen_at = Instant::now();
    until_settled(&http, &n1, &["n1", "n3"], 30).await;
    let took_over = frozen_at.elapsed();
    // Frozen a while longer than its lease, while the others run its work.
    tokio::time::sleep(Duration::from_secs(1)).await;
    n2.proc.signal("CONT").expect("SIGCONT");
    // It rejoins: owns partitions again and is ready.
    until_settled(&http, &n1, &["n1", "n2", "n3"], 30).await;
    until_ready(&http, &n2, 30).await;
    audit(&http, &n2.proc.origin, &ledger).await;
    eprintln!(
        "a_frozen_node_commits_nothing_after_its_lease: {} orchestrations, taken over {} ms after SIGSTOP, {:.1} s",
        ledger.jobs.len(),
        took_over.as_millis(),
        began.elapsed().as_secs_f64()
    );
    drop((n1, n2, n3));
    drop_table(&url, &table).await;
}

/// A private PostgreSQL server (a temporary cluster on a free port), stopped on drop.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let path = Path::new(PG_BIN).join(program);
    if root {
        // initdb and postgres refuse to run as root.
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run_ok(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePostgres {
    fn start() -> Option<Self> {
        if !Path::new(PG_BIN).join("initdb").exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{PG_BIN}/initdb is missing in CI"
            );
            eprintln!("\n*** SKIPPED a_store_outage_under_load_loses_nothing: no {PG_BIN} ***\n");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // The server runs as `postgres` when the test runs as root: it must reach the dir.
        let _ = Command::new("chmod").arg("0777").arg(dir.path()).status();
        let port = perdure_tests::cluster_peer::free_port().expect("free port");
        let pg = Self { dir, port };
        let mut c = as_postgres("initdb");
        c.arg("-D").arg(pg.data()).args([
            "-U",
            "perdure",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run_ok(c, "initdb");
        pg.start_server();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://perdure@127.0.0.1:{}/postgres", self.port)
    }

    fn start_server(&self) {
        let mut c = as_postgres("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                self.port,
                self.dir.path().display()
            ))
            .args(["-w", "-t", "60", "start"]);
        run_ok(c, "pg_ctl start");
    }

    fn stop_server(&self) {
        let mut c = as_postgres("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run_ok(c, "pg_ctl stop");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut c = as_postgres("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"]);
        let _ = c.output();
    }
}

// It found an orchestration's `call_entity` after the outage never answered: partition
// actors fenced and restarted with a re-read still queued left the partition's inbox unread
// on that node (fixed in `Shared::set_route`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_under_load_loses_nothing() {
    if pg_url("a_store_outage_under_load_loses_nothing").is_none() {
        return;
    }
    let Some(pg) = PrivatePostgres::start() else {
        return;
    };
    let began = Instant::now();
    let url = pg.url();
    let table = "cluster_chaos_outage";
    let http = http();
    let mut rng = Rng(0x5eed_0003);
    let (a1, a2) = (free_addr(), free_addr());
    let n1 = spawn_node(&url, table, "n1", &a1, "");
    let n2 = spawn_node(&url, table, "n2", &a2, &a1);
    until_settled(&http, &n1, &["n1", "n2"], 30).await;
    open_accounts(&http, &n1.proc.origin).await;
    let mut ledger = Ledger::default();
    ledger.draw(&mut rng, "before", 200);
    ledger.draw(&mut rng, "during", 100);
    let (jobs, signals) = (ledger.jobs.clone(), ledger.signals.clone());
    let (before, during) = jobs.split_at(200);
    let live = origins(&[&n1, &n2]);
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    drive(&http, &live, &mut rng, before, &signals).await;

    // The store goes away for 20 s while that work runs; starts keep coming (they fail with
    // 5xx or hang until the store is back, and are retried with the same instance id).
    pg.stop_server();
    let stopped_at = Instant::now();
    let restart = async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        pg.start_server();
        (pg, Instant::now())
    };
    let ((pg, back_at), ()) = tokio::join!(restart, drive(&http, &live, &mut rng, during, &[]));
    eprintln!(
        "store back after {} ms; the last start was accepted {} ms after it came back",
        back_at.duration_since(stopped_at).as_millis(),
        Instant::now()
            .saturating_duration_since(back_at)
            .as_millis()
    );
    for n in [&n1, &n2] {
        until_ready(&http, n, 45).await;
    }
    let ready_after = back_at.elapsed();
    audit(&http, &n1.proc.origin, &ledger).await;
    eprintln!(
        "a_store_outage_under_load_loses_nothing: {} orchestrations, every node ready {} ms after the store came back, {:.1} s",
        ledger.jobs.len(),
        ready_after.as_millis(),
        began.elapsed().as_secs_f64()
    );
    drop((n1, n2));
    drop(pg);
}
