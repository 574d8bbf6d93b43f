//! Two `perdure-node` processes on one PostgreSQL store (needs `PERDURE_TEST_POSTGRES_URL`):
//! they split the partitions, orchestrations started through either node complete exactly
//! once, and a node stopped with SIGTERM hands everything to the other.
//!
//! Without the cluster transport a message for a partition the other node runs is picked up
//! by its owner at its next heartbeat (`docs/cluster.md`); the test uses a short lease (2 s,
//! heartbeats every 400 ms), and runs once without and once with the transport. Cluster state has no notification across processes,
//! so the test reads `/cluster/partitions` until a bounded deadline.

use std::time::{Duration, Instant};

use perdure_tests::NodeProcess;
use reqwest::{Client, StatusCode};
use serde_json::Value;

fn pg_url() -> Option<String> {
    match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("\n*** SKIPPED cluster_e2e: PERDURE_TEST_POSTGRES_URL is not set ***\n");
            None
        }
    }
}

/// The cluster transport of a node: `(listen, seeds)`.
type Link<'a> = Option<(&'a str, &'a str)>;

fn spawn(url: &str, table: &str, name: &str, link: Link<'_>) -> NodeProcess {
    let args = perdure_tests::postgres_run_args(url, 8, name);
    let mut env = vec![
        ("PERDURE_STORE_TABLE", table),
        ("PERDURE_CLUSTER_LEASE_TTL", "2s"),
    ];
    if let Some((listen, seeds)) = link {
        env.push(("PERDURE_CLUSTER_LISTEN", listen));
        env.push(("PERDURE_CLUSTER_SEEDS", seeds));
    }
    NodeProcess::spawn(&args, &env, tempfile::tempdir().expect("tempdir")).expect("node starts")
}

async fn get(http: &Client, url: &str) -> Value {
    let r = http.get(url).send().await.expect("GET");
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.expect("JSON")
}

/// Reads `node`'s partition table until `pred` holds (at most 30 s).
async fn until_table(http: &Client, node: &NodeProcess, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = get(http, &format!("{}/cluster/partitions", node.origin)).await;
        if pred(&t) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn owners(t: &Value) -> Vec<String> {
    t["partitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| p["owner"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn start(http: &Client, node: &NodeProcess, id: &str) {
    let r = http
        .post(format!("{}/orchestrators/HelloSequence/{id}", node.base()))
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .expect("start");
    assert_eq!(r.status(), StatusCode::ACCEPTED, "start {id}");
}

/// Waits through `node` (which may not run the instance) and checks the history.
async fn completes_once(http: &Client, node: &NodeProcess, id: &str) {
    let mut st = Value::Null;
    for _ in 0..10 {
        let r = http
            .get(format!(
                "{}/instances/{id}?waitForCompletion=5s",
                node.base()
            ))
            .send()
            .await
            .expect("status");
        if r.status() == StatusCode::OK {
            st = r.json().await.expect("JSON");
            break;
        }
    }
    assert_eq!(st["runtimeStatus"], "Completed", "{id}: {st}");
    let hist = get(http, &format!("{}/instances/{id}/history", node.base())).await;
    let count = |kind: &str| {
        hist.as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|e| e["kind"].as_str() == Some(kind) || e["kind"].get(kind).is_some())
            .count()
    };
    assert_eq!(count("ExecutionCompleted"), 1, "{id}: {hist}");
    assert_eq!(count("TaskCompleted"), 3, "{id}: {hist}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_partitions_and_hand_off_on_sigterm() {
    scenario(false).await;
}

/// The same with the cluster transport: requests are forwarded to the owner, nudges cross
/// the link, and each node's membership record carries its cluster address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_linked_by_the_transport() {
    scenario(true).await;
}

/// A node's `/metrics` text.
async fn metrics(http: &Client, node: &NodeProcess) -> String {
    http.get(format!("{}/metrics", node.origin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of the unlabelled counter `name` in a `/metrics` text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// The forwarding attempts of both nodes so far.
async fn forwarded(http: &Client, nodes: [&NodeProcess; 2]) -> u64 {
    let mut total = 0;
    for n in nodes {
        total += counter(&metrics(http, n).await, "perdure_cluster_forwarded_total");
    }
    total
}

/// `perdure-client` with both nodes' URLs sends each instance's start and wait to its owner
/// (nothing forwarded); with routing off, everything goes to the first node, which forwards
/// what the second owns.
async fn clients_route_to_owners(http: &Client, n1: &NodeProcess, n2: &NodeProcess) {
    use perdure_client::{DurableClient, HttpClientOptions, InstanceId, StartOptions};
    let urls = [n1.origin.clone(), n2.origin.clone()];
    for (route, prefix) in [(true, "routed"), (false, "unrouted")] {
        let client = DurableClient::http_with(
            HttpClientOptions::new(urls.clone()).with_route_to_owner(route),
        )
        .expect("client");
        let before = forwarded(http, [n1, n2]).await;
        for i in 0..8 {
            let id = format!("{prefix}-{i}");
            client
                .schedule_new_orchestration(
                    "HelloSequence",
                    &(),
                    StartOptions::with_id(id.as_str()),
                )
                .await
                .expect("start");
            let done = client
                .wait_for_instance_completion(
                    &InstanceId::new(id.as_str()).expect("id"),
                    Duration::from_secs(30),
                )
                .await
                .expect("completes");
            assert_eq!(done.runtime_status().as_str(), "Completed", "{id}");
        }
        let delta = forwarded(http, [n1, n2]).await - before;
        if route {
            assert_eq!(delta, 0, "a routed client's requests were forwarded");
        } else {
            assert!(
                delta >= 2,
                "an unrouted client's requests were not forwarded: {delta}"
            );
        }
    }
}

async fn scenario(linked: bool) {
    let Some(url) = pg_url() else { return };
    let table = format!(
        "cluster_e2e_{}_{}",
        std::process::id(),
        if linked { "t" } else { "s" }
    );
    let http = Client::new();
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.to_string())
            .expect("free port")
    };
    let (a1, a2) = (port(1), port(2));
    let n1 = spawn(&url, &table, "n1", linked.then_some((a1.as_str(), "")));
    let n2 = spawn(
        &url,
        &table,
        "n2",
        linked.then_some((a2.as_str(), a1.as_str())),
    );
    until_table(&http, &n1, "both nodes own partitions", |t| {
        let o = owners(t);
        o.iter().any(|x| x == "n1")
            && o.iter().any(|x| x == "n2")
            && t["partitions"]
                .as_array()
                .is_some_and(|ps| ps.iter().all(|p| p["owner"] == p["desired"]))
    })
    .await;
    let nodes = get(&http, &format!("{}/cluster/nodes", n2.origin)).await;
    let live = nodes["nodes"]
        .as_array()
        .map(|ns| ns.iter().filter(|n| n["live"] == true).count());
    assert_eq!(live, Some(2), "{nodes}");
    if linked {
        let mut addrs: Vec<String> = nodes["nodes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|n| n["clusterAddress"].as_str().unwrap_or("").to_string())
            .collect();
        addrs.sort();
        let mut want = vec![a1.clone(), a2.clone()];
        want.sort();
        assert_eq!(addrs, want, "{nodes}");
    }
    let n2_row = nodes["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == "n2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(n2_row["httpAddress"], n2.origin.as_str(), "{nodes}");

    let ids: Vec<String> = (0..16).map(|i| format!("e2e-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        start(&http, if i % 2 == 0 { &n1 } else { &n2 }, id).await;
    }
    for (i, id) in ids.iter().enumerate() {
        completes_once(&http, if i % 2 == 0 { &n2 } else { &n1 }, id).await;
    }
    if linked {
        // Half of the requests hit a node that does not own the instance: forwarded.
        let mut served = 0u64;
        for n in [&n1, &n2] {
            let m = metrics(&http, n).await;
            assert!(m.contains("perdure_cluster_linked_peers 1"), "{m}");
            served += counter(&m, "perdure_cluster_peer_requests_total");
        }
        assert!(served >= 16, "forwarded requests served: {served}");
        clients_route_to_owners(&http, &n1, &n2).await;
    }

    assert!(n1.terminate().expect("SIGTERM"), "n1 exits cleanly");
    until_table(&http, &n2, "n2 owns everything", |t| {
        owners(t).iter().all(|o| o == "n2")
    })
    .await;
    for i in 0..4 {
        let id = format!("e2e-after-{i}");
        start(&http, &n2, &id).await;
        completes_once(&http, &n2, &id).await;
    }
    let metrics = http
        .get(format!("{}/metrics", n2.origin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("perdure_partitions_owned 8"), "{metrics}");
    assert!(metrics.contains("perdure_cluster_nodes 1"), "{metrics}");
    // The CLI shows the same table.
    let (ok, out, err) =
        perdure_tests::perdure_cli(&n2.origin, &["cluster"]).expect("perdure cluster runs");
    assert!(ok, "{err}");
    assert!(out.contains("seen by n2"), "{out}");
    assert!(
        out.contains("PARTITION") && out.contains("DESIRED"),
        "{out}"
    );
    let rows = out
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("n2"))
        .collect::<Vec<_>>();
    assert_eq!(rows.len(), 8, "{out}");
    assert!(
        rows.iter().all(|r| !r.contains(" - ")),
        "every row has a since: {out}"
    );
    drop(n2);
    if let Ok(s) =
        perdure_node::store::postgres::PostgresStore::connect_with_table(&url, 1, &table).await
    {
        let _ = s.drop_table(&table).await;
    }
}
