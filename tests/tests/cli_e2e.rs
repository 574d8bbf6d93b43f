//! The `perdure` CLI against a spawned node: tables by default, `--json` for scripts, clear
//! errors.

use perdure_tests::{NodeProcess, perdure_cli};
use serde_json::Value;

fn ok(node: &NodeProcess, args: &[&str]) -> String {
    let (success, out, err) = perdure_cli(&node.origin, args).unwrap();
    assert!(success, "perdure {args:?} failed: {err}");
    out
}

fn json(node: &NodeProcess, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(node, &all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn every_command() {
    let node = NodeProcess::spawn_dev().unwrap();
    let out = ok(
        &node,
        &["start", "HelloSequence", "--id", "h1", "--wait", "30"],
    );
    assert!(
        out.contains("Completed") && out.contains("Hello Tokyo!"),
        "{out}"
    );
    let s = json(&node, &["status", "h1"]);
    assert_eq!(s["runtimeStatus"], "Completed");
    let out = ok(&node, &["history", "h1"]);
    assert!(
        out.contains("TaskScheduled") && out.contains("SayHello"),
        "{out}"
    );
    let h = json(&node, &["history", "h1"]);
    assert!(h.as_array().unwrap().len() >= 5);

    let started = json(
        &node,
        &[
            "start",
            "Approval",
            "--id",
            "a1",
            "--input",
            r#"{"timeoutSeconds": 300}"#,
        ],
    );
    assert_eq!(started["id"], "a1");
    let out = ok(&node, &["list"]);
    assert!(
        out.starts_with("INSTANCE") && out.contains("a1") && out.contains("h1"),
        "{out}"
    );
    let l = json(&node, &["list", "--status", "Running"]);
    assert_eq!(l.as_array().unwrap().len(), 1);
    ok(&node, &["suspend", "a1", "--reason", "hold"]);
    // Suspension is applied by the instance after the 202; wait until it shows.
    for _ in 0..300 {
        if json(&node, &["status", "a1"])["runtimeStatus"] == "Suspended" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(json(&node, &["status", "a1"])["runtimeStatus"], "Suspended");
    ok(&node, &["resume", "a1"]);
    ok(&node, &["raise", "a1", "Approval", "--data", "true"]);
    let done = json(
        &node,
        &[
            "start",
            "Approval",
            "--id",
            "a2",
            "--input",
            r#"{"timeoutSeconds": 300}"#,
        ],
    );
    assert_eq!(done["id"], "a2");
    ok(&node, &["terminate", "a2", "--reason", "stop"]);
    let r = json(&node, &["restart", "h1"]);
    assert_ne!(r["id"], "h1");
    let counts = json(&node, &["list", "--counts"]);
    assert!(counts.is_object());
    let (success, _, err) = perdure_cli(&node.origin, &["rewind", "a2"]).unwrap();
    assert!(!success && err.contains("Terminated"), "{err}");

    ok(
        &node,
        &["entity", "signal", "Counter", "k", "add", "--input", "2"],
    );
    let mut state = Value::Null;
    for _ in 0..100 {
        let (success, out, _) =
            perdure_cli(&node.origin, &["--json", "entity", "get", "Counter", "k"]).unwrap();
        if success {
            state = serde_json::from_str::<Value>(out.trim()).unwrap()["state"].clone();
            if state == 2 {
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(state, 2);
    let out = ok(&node, &["entity", "list", "--state"]);
    assert!(out.contains("counter") && out.contains('k'), "{out}");
    let out = ok(&node, &["functions"]);
    assert!(out.contains("HelloSequence"), "{out}");

    let p = json(&node, &["purge", "h1"]);
    assert_eq!(p["instancesDeleted"], 1);
    let (success, out, err) =
        perdure_cli(&node.origin, &["purge", "--status", "Completed,Terminated"]).unwrap();
    assert!(success, "{err}");
    assert!(
        out.contains("purged") && err.contains("purged"),
        "{out} / {err}"
    );

    // Clear errors, non-zero exit.
    let (success, _, err) = perdure_cli(&node.origin, &["status", "nope"]).unwrap();
    assert!(
        !success && err.contains("no instance with id nope"),
        "{err}"
    );
    let (success, _, err) = perdure_cli(&node.origin, &["start", "Nope"]).unwrap();
    assert!(!success && err.contains("HelloSequence"), "{err}");
    let (success, _, err) = perdure_cli(
        &node.origin,
        &["start", "HelloSequence", "--input", "Tokyo"],
    )
    .unwrap();
    assert!(!success && err.contains("must be JSON"), "{err}");
    let (success, _, err) = perdure_cli(&node.origin, &["purge"]).unwrap();
    assert!(!success && err.contains("--all"), "{err}");
    let (success, _, err) = perdure_cli("http://127.0.0.1:9", &["list"]).unwrap();
    assert!(!success && err.contains("no node answered"), "{err}");
}
