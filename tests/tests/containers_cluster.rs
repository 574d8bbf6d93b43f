//! Perdure in containers, started with `testcontainers` from images built here from local
//! artifacts: the store (`perdure-postgres`) and node containers on a private network.
//!
//! Needs a Docker engine: in CI its absence fails the test; elsewhere the test says on stderr
//! that it was skipped.

use std::future::Future;
use std::time::{Duration, Instant};

use perdure_tests::BASE;
use perdure_tests::containers::{Images, Network, docker_available, start_node, start_store};
use serde_json::Value;

/// A client that never waits on a dead connection: every request is bounded and no idle
/// connection is reused (a killed container's host port may come back on a new container).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Runs one phase of a container test under a deadline, saying on stderr when it starts and
/// how long it took; past the deadline it prints the containers' logs and fails (a hang in
/// CI must say where it was).
async fn phase<T>(
    name: &str,
    limit: Duration,
    containers: &[String],
    fut: impl Future<Output = T>,
) -> T {
    eprintln!("[containers] {name} ...");
    let t = Instant::now();
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => {
            eprintln!(
                "[containers] {name}: done in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            v
        }
        Err(_) => {
            for c in containers {
                let out = std::process::Command::new("docker")
                    .args(["logs", "--tail", "200", c])
                    .output();
                if let Ok(out) = out {
                    eprintln!(
                        "--- docker logs {c} ---\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            panic!("{name}: not done within {limit:?}");
        }
    }
}

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
    let images = phase("build the images", Duration::from_secs(300), &[], async {
        tokio::task::spawn_blocking(Images::build)
            .await
            .unwrap()
            .unwrap()
    })
    .await;
    let net = Network::create().unwrap();
    let logs = vec![
        format!("{}-store", net.name),
        format!("{}-node-1", net.name),
    ];
    let (_store, url) = phase(
        "start the store container",
        Duration::from_secs(150),
        &logs,
        start_store(&images, &net),
    )
    .await
    .unwrap();
    let node = phase(
        "start the node container",
        Duration::from_secs(150),
        &logs,
        start_node(&images, &net, &url, 1, &[]),
    )
    .await
    .unwrap();
    let http = client();
    let o = node.origin.clone();
    phase(
        "first /readyz",
        Duration::from_secs(70),
        &logs,
        wait_ready(&http, &o),
    )
    .await;

    let (hello, done, approval) = phase(
        "walk-through before the kill",
        Duration::from_secs(120),
        &logs,
        async {
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
            (hello, done, approval)
        },
    )
    .await;

    // SIGKILL, then start the same container again.
    let o = phase(
        "kill and restart the node container",
        Duration::from_secs(60),
        &logs,
        async {
            perdure_tests::containers::docker(&["kill", node.container.id()]).unwrap();
            node.container.start().await.unwrap();
            let port = node.container.get_host_port_ipv4(8080).await.unwrap();
            format!("http://127.0.0.1:{port}")
        },
    )
    .await;
    phase(
        "/readyz after the restart",
        Duration::from_secs(70),
        &logs,
        wait_ready(&http, &o),
    )
    .await;

    phase(
        "state after the restart",
        Duration::from_secs(150),
        &logs,
        async {
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
                count = match http
                    .get(format!("{o}{BASE}/entities/Counter/tc"))
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                if count == 5 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            assert_eq!(count, 5);
        },
    )
    .await;
    drop(node);
    images.remove();
}
