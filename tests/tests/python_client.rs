//! The official Python Durable Functions client (`azure-functions-durable`) drives a spawned
//! `perdure-test-node` (the sample app plus `perdure_tests::app`) through all its methods
//! (`tests/python/drive_node.py`). Needs the virtual environment
//! made by `.ci/python-client.sh`; without it the test is skipped with a loud message (and
//! fails under CI, where the script always runs first).

use perdure_tests::{NodeProcess, python_with, run_python_script};

#[test]
fn python_durable_client_drives_a_node() {
    let Some(python) = python_with("azure.durable_functions") else {
        return;
    };
    let node = NodeProcess::spawn_test_app().unwrap();
    run_python_script(&python, "drive_node.py", &node.origin);
}
