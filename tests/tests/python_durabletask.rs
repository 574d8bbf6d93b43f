//! The Durable Task Python SDK (`durabletask` from PyPI, unmodified), as client and as worker,
//! against a spawned `perdure-node dev --grpc 127.0.0.1:PORT`: its client RPCs
//! (`tests/python/durabletask_client.py`) and its worker over `GetWorkItems`
//! (`tests/python/durabletask_worker.py`). Needs the virtual environment made by
//! `.ci/python-client.sh`; without it the test is skipped with a loud message (and fails
//! under CI, where the script always runs first).

use perdure_tests::{
    NodeProcess, free_loopback_addr, python_with, run_python_script, run_python_script_with,
};

/// Runs `script` against a dev node serving gRPC on a free port, if the SDK's `module` is
/// installed.
fn against_a_dev_node(module: &str, script: &str) {
    let Some(python) = python_with(module) else {
        return;
    };
    // A free port for the gRPC listener (asked for explicitly: it must bind or fail).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let grpc = format!("127.0.0.1:{port}");
    let node = NodeProcess::spawn_dev_with(&["--grpc", &grpc]).unwrap();
    run_python_script(&python, script, &grpc);
    drop(node);
}

#[test]
fn python_durabletask_client_drives_the_grpc_listener() {
    against_a_dev_node("durabletask.client", "durabletask_client.py");
}

/// The Python SDK's worker (`TaskHubGrpcWorker`) runs its own orchestrations, activities and
/// entities on the node over `GetWorkItems`.
#[test]
fn python_durabletask_worker_runs_its_orchestrations_on_the_node() {
    against_a_dev_node("durabletask.worker", "durabletask_worker.py");
}

/// A counter of `node`'s `/metrics`.
async fn metric(http: &reqwest::Client, node: &NodeProcess, name: &str) -> f64 {
    let text = http
        .get(format!("{}/metrics", node.origin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics of {}", node.origin))
}

/// Two cluster nodes on PostgreSQL, each serving gRPC: an SDK worker connected to one of
/// them runs the orchestrations, activities and entities of the partitions the other owns
/// (`tests/python/durabletask_cluster.py`), one way and then the other, and each node
/// counts the work items the other's workers completed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_workers_serve_a_cluster_through_either_node() {
    let Some(python) = python_with("durabletask.worker") else {
        return;
    };
    let url = match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            eprintln!("\n*** SKIPPED: PERDURE_TEST_POSTGRES_URL is not set ***\n");
            return;
        }
    };
    let table = format!("dt_cluster_{}", std::process::id());
    let (c1, c2, g1, g2) = (
        free_loopback_addr(),
        free_loopback_addr(),
        free_loopback_addr(),
        free_loopback_addr(),
    );
    let spawn = |name: &str, grpc: &str, listen: &str, seeds: &str| {
        let mut args = perdure_tests::postgres_run_args(&url, 8, name);
        args.extend(["--grpc".into(), grpc.into()]);
        let env = [
            ("PERDURE_STORE_TABLE", table.as_str()),
            ("PERDURE_CLUSTER_LEASE_TTL", "2s"),
            ("PERDURE_CLUSTER_LISTEN", listen),
            ("PERDURE_CLUSTER_SEEDS", seeds),
        ];
        NodeProcess::spawn(&args, &env, tempfile::tempdir().expect("tempdir")).expect("node")
    };
    let n1 = spawn("n1", &g1, &c1, "");
    let n2 = spawn("n2", &g2, &c2, &c1);
    let http = reqwest::Client::new();
    // Both nodes own their share (the partition table settles within a few heartbeats).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t: serde_json::Value = http
            .get(format!("{}/cluster/partitions", n1.origin))
            .send()
            .await
            .expect("partitions")
            .json()
            .await
            .expect("JSON");
        let ps = t["partitions"].as_array().cloned().unwrap_or_default();
        let settled = ps.iter().all(|p| p["owner"] == p["desired"])
            && ps.iter().any(|p| p["owner"] == "n1")
            && ps.iter().any(|p| p["owner"] == "n2");
        if settled && metric(&http, &n1, "perdure_cluster_linked_peers").await >= 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {t}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (a, b) = (g1.clone(), g2.clone());
    tokio::task::spawn_blocking(move || {
        run_python_script_with(&python, "durabletask_cluster.py", &[&a, &b]);
    })
    .await
    .expect("script");
    // Phase one: n1's worker served n2's partitions; phase two, the other way round.
    for (owner, server) in [(&n2, &n1), (&n1, &n2)] {
        let out = metric(&http, owner, "perdure_grpc_work_items_forwarded_total").await;
        let served = metric(&http, server, "perdure_grpc_work_items_for_peers_total").await;
        assert!(
            out >= 1.0 && served >= 1.0,
            "{} sent {out}, {} served {served}",
            owner.origin,
            server.origin
        );
    }
    drop((n1, n2));
}
