//! The Durable Task Python SDK (`durabletask` from PyPI, unmodified), as client and as worker,
//! against a spawned `perdure-node dev --grpc 127.0.0.1:PORT`: its client RPCs
//! (`tests/python/durabletask_client.py`) and its worker over `GetWorkItems`
//! (`tests/python/durabletask_worker.py`). Needs the virtual environment made by
//! `.ci/python-client.sh`; without it the test is skipped with a loud message (and fails
//! under CI, where the script always runs first).

use perdure_tests::{NodeProcess, python_with, run_python_script};

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
