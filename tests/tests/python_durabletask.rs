//! The Durable Task Python SDK's client (`durabletask` from PyPI, unmodified) drives a spawned
//! `perdure-node dev --grpc 127.0.0.1:PORT` through its gRPC client RPCs
//! (`tests/python/durabletask_client.py`). Needs the virtual environment made by
//! `.ci/python-client.sh`; without it the test is skipped with a loud message (and fails
//! under CI, where the script always runs first).

use std::path::PathBuf;
use std::process::Command;

use perdure_tests::NodeProcess;

#[test]
fn python_durabletask_client_drives_the_grpc_listener() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let venv = std::env::var("PERDURE_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/python-venv"));
    let python = venv.join("bin/python");
    let has_sdk = python.exists()
        && Command::new(&python)
            .args(["-c", "import durabletask.client"])
            .status()
            .is_ok_and(|s| s.success());
    if !has_sdk {
        let msg = format!(
            "SKIPPED: no Python venv with durabletask at {} — run `bash .ci/python-client.sh` \
             to install it and enable this test",
            venv.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
        return;
    }
    // A free port for the gRPC listener (asked for explicitly: it must bind or fail).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let grpc = format!("127.0.0.1:{port}");
    let node = NodeProcess::spawn_dev_with(&["--grpc", &grpc]).unwrap();
    let out = Command::new(&python)
        .arg(root.join("tests/python/durabletask_client.py"))
        .arg(&grpc)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("passed, 0 failed"),
        "durabletask client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("Traceback"),
        "python printed a traceback:\n{stderr}"
    );
    drop(node);
}
