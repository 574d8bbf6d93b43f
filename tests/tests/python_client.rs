//! The official Python Durable Functions client (`azure-functions-durable`) drives a spawned
//! `perdure-test-node` (the sample app plus `perdure_tests::app`) through all its methods
//! (`tests/python/drive_node.py`). Needs the virtual environment
//! made by `.ci/python-client.sh`; without it the test is skipped with a loud message (and
//! fails under CI, where the script always runs first).

use std::path::PathBuf;
use std::process::Command;

use perdure_tests::NodeProcess;

#[test]
fn python_durable_client_drives_a_node() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let venv = std::env::var("PERDURE_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/python-venv"));
    let python = venv.join("bin/python");
    if !python.exists() {
        let msg = format!(
            "SKIPPED: no Python venv at {} — run `bash .ci/python-client.sh` to install \
             azure-functions-durable and enable this test",
            venv.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
        return;
    }
    let node = NodeProcess::spawn_test_app().unwrap();
    let out = Command::new(&python)
        .arg(root.join("tests/python/drive_node.py"))
        .arg(&node.origin)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("passed, 0 failed"),
        "python client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("Traceback"),
        "python printed a traceback:\n{stderr}"
    );
}
