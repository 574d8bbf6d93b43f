//! Perdure in containers, started with `testcontainers` from images built here from local
//! artifacts: the store (`perdure-postgres`) and node containers on a private network.
//!
//! Needs a Docker engine: in CI its absence fails the test; elsewhere the test says on stderr
//! that it was skipped.

use std::time::Duration;

use perdure_tests::BASE;
use perdure_tests::containers::{Images, Network, docker_available, start_node, start_store};
use serde_json::Value;

fn skip_or_fail(test: &str) -> bool {
    if docker_available() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: no Docker engine answers `docker info`, and CI needs this test"
    );
    eprintln!("\n*** SKIPPED {test}: no Docker engine ***\n");
    true
}

async fn start(http: &reqwest::Client, origin: &str, name: &str, body: &Value) -> String {
    let r = http
        .post(format!("{origin}{BASE}/orchestrators/{name}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "start {name}");
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// Waits (long poll, bounded) until the instance reaches a terminal status; returns its state.
async fn wait_done(http: &reqwest::Client, origin: &str, id: &str) -> Value {
    for _ in 0..30 {
        let r = http
            .get(format!(
                "{origin}{BASE}/instances/{id}?waitForCompletionTimeout=5s"
            ))
            .send()
            .await;
        if let Ok(r) = r
            && let Ok(v) = r.json::<Value>().await
        {
            let s = v["runtimeStatus"].as_str().unwrap_or("");
            if matches!(s, "Completed" | "Failed" | "Terminated") {
                return v;
            }
        }
    }
    panic!("instance {id} did not finish");
}

async fn wait_ready(http: &reqwest::Client, origin: &str) {
    for _ in 0..120 {
        if let Ok(r) = http.get(format!("{origin}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{origin}/readyz never answered 200");
}

/// One node on the PostgreSQL container: the README walk-through (function chaining, human
/// interaction, an entity), then the node container is killed (SIGKILL) and started again:
/// the finished instance and the entity are still there, and the waiting instance completes
/// after its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_container_on_the_store_container_survives_sigkill() {
    if skip_or_fail("a_node_container_on_the_store_container_survives_sigkill") {
        return;
    }
    let images = Images::build().unwrap();
    let net = Network::create().unwrap();
    let (_store, url) = start_store(&images, &net).await.unwrap();
    let node = start_node(&images, &net, &url, 1, &[]).await.unwrap();
    let http = reqwest::Client::new();
    let o = node.origin.clone();
    wait_ready(&http, &o).await;

    let hello = start(&http, &o, "HelloSequence", &Value::Null).await;
    let done = wait_done(&http, &o, &hello).await;
    assert_eq!(done["runtimeStatus"], "Completed", "{done}");
    assert_eq!(
        done["output"],
        serde_json::json!(["Hello Tokyo!", "Hello Seattle!", "Hello London!"])
    );
    let approval = start(
        &http,
        &o,
        "Approval",
        &serde_json::json!({"timeoutSeconds": 600}),
    )
    .await;
    let r = http
        .post(format!("{o}{BASE}/entities/Counter/tc?op=add"))
        .json(&5)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    // SIGKILL, then start the same container again.
    perdure_tests::containers::docker(&["kill", node.container.id()]).unwrap();
    node.container.start().await.unwrap();
    let port = node.container.get_host_port_ipv4(8080).await.unwrap();
    let o = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &o).await;

    let again: Value = http
        .get(format!("{o}{BASE}/instances/{hello}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["runtimeStatus"], "Completed", "{again}");
    assert_eq!(again["output"], done["output"]);
    let r = http
        .post(format!(
            "{o}{BASE}/instances/{approval}/raiseEvent/Approval"
        ))
        .json(&true)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let approved = wait_done(&http, &o, &approval).await;
    assert_eq!(approved["output"], "approved", "{approved}");
    // The signal sent before the kill was durable (202 = in the store); it runs after it.
    let mut count = Value::Null;
    for _ in 0..40 {
        count = http
            .get(format!("{o}{BASE}/entities/Counter/tc"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        if count == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(count, 5);
    drop(node);
    images.remove();
}
