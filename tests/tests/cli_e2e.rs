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

/// Polls `perdure status ID` until it shows `want`.
fn wait_status(node: &NodeProcess, id: &str, want: &str) -> Value {
    let mut s = Value::Null;
    for _ in 0..300 {
        s = json(node, &["status", id]);
        if s["runtimeStatus"] == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(s["runtimeStatus"], want, "{s}");
    s
}

#[test]
fn rewind_entity_list_and_failover() {
    let node = NodeProcess::spawn_test_app().unwrap();
    // FailsOnce fails on its first activity call; a rewind runs that call again.
    let failed = json(&node, &["start", "FailsOnce", "--id", "f1", "--wait", "30"]);
    assert_eq!(failed["runtimeStatus"], "Failed", "{failed}");
    let out = ok(&node, &["rewind", "f1", "--reason", "fixed"]);
    assert!(out.contains("f1"), "{out}");
    let done = wait_status(&node, "f1", "Completed");
    assert_eq!(done["output"], "Hello before! cured", "{done}");
    let (success, _, err) = perdure_cli(&node.origin, &["rewind", "f1"]).unwrap();
    assert!(!success && err.contains("Completed"), "{err}");

    // `entity list NAME` lists only that entity's instances (names are case-insensitive).
    for (name, key, op) in [
        ("Counter", "c1", "add"),
        ("Counter", "c2", "add"),
        ("Account", "a1", "deposit"),
    ] {
        ok(&node, &["entity", "signal", name, key, op, "--input", "3"]);
    }
    let mut keys = Vec::new();
    for _ in 0..300 {
        let l = json(&node, &["entity", "list", "Counter", "--state"]);
        keys = l
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["entityId"]["name"], "counter", "{e}");
                assert_eq!(e["state"], 3, "{e}");
                e["entityId"]["key"].as_str().unwrap().to_string()
            })
            .collect();
        if keys.len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    keys.sort();
    assert_eq!(keys, ["c1", "c2"]);
    let out = ok(&node, &["entity", "list", "account"]);
    assert!(
        out.starts_with("NAME") && out.contains("a1") && !out.contains("c1"),
        "{out}"
    );

    // A comma-separated --url list: the first node is dead, the second answers.
    let urls = format!("http://127.0.0.1:9,{}", node.origin);
    let (success, out, err) = perdure_cli(&urls, &["--json", "status", "f1"]).unwrap();
    assert!(success, "{err}");
    let s: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(s["runtimeStatus"], "Completed");
    let (success, out, err) = perdure_cli(
        &urls,
        &["--json", "start", "HelloSequence", "--id", "via-failover"],
    )
    .unwrap();
    assert!(success && out.contains("via-failover"), "{out} / {err}");
    wait_status(&node, "via-failover", "Completed");
    let (success, out, err) = perdure_cli(&format!("{urls},"), &["functions"]).unwrap();
    assert!(success && out.contains("FailsOnce"), "{out} / {err}");
}

#[test]
fn bulk_purge_reports_each_batch() {
    // The node purges at most 100 instances per batch (`incremental=true`); 130 take two.
    const N: usize = 130;
    let node = NodeProcess::spawn_dev().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = perdure_client::DurableClient::http([node.origin.clone()]).unwrap();
        let mut ids = Vec::new();
        for i in 0..N {
            let opts = perdure_client::StartOptions::with_id(format!("bulk-{i:03}"));
            ids.push(
                client
                    .schedule_new_orchestration("HelloSequence", &(), opts)
                    .await
                    .unwrap(),
            );
        }
        for id in &ids {
            let done = client
                .wait_for_instance_completion(id, std::time::Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(
                done.runtime_status(),
                perdure_client::OrchestrationStatus::Completed
            );
        }
    });
    let (success, out, err) =
        perdure_cli(&node.origin, &["purge", "--status", "Completed"]).unwrap();
    assert!(success, "{err}");
    // Not a terminal: one progress line per batch, with the running total.
    let progress: Vec<&str> = err.lines().filter(|l| l.contains("so far")).collect();
    assert_eq!(
        progress,
        ["purged 100 instances so far", "purged 130 instances so far"],
        "{err}"
    );
    assert_eq!(out.trim(), format!("purged {N} instances"));
    let l = json(&node, &["list", "--top", "0"]);
    assert_eq!(l.as_array().unwrap().len(), 0, "{l}");
}
