//! The Durable Task Python SDK's client (`durabletask` from PyPI, unmodified) drives a spawned
//! `perdure-node dev --grpc 127.0.0.1:PORT` through its gRPC client RPCs
//! (`tests/python/durabletask_client.py`). Needs the virtual environment made by
//! `.ci/python-client.sh`; without it the test is skipped with a loud message (and fails
//! under CI, where the script always runs first).

use perdure_tests::{NodeProcess, python_with, run_python_script};

#[test]
fn python_durabletask_client_drives_the_grpc_listener() {
    let Some(python) = python_with("durabletask.client") else {
        return;
    };
    // A free port for the gRPC listener (asked for explicitly: it must bind or fail).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let grpc = format!("127.0.0.1:{port}");
    let node = NodeProcess::spawn_dev_with(&["--grpc", &grpc]).unwrap();
    run_python_script(&python, "durabletask_client.py", &grpc);
    drop(node);
}
