//! Access control (API keys with roles) on a spawned `perdure-node dev` that has keys: raw
//! HTTP with each of the three ways to present a key, the `perdure` CLI, `perdure-client`,
//! and the Durable Task Python SDK over gRPC (`tests/python/durabletask_access.py`); and
//! `run` on a public address refusing to start without keys.

use std::process::Command;

use perdure_client::{ClientError, DurableClient, HttpClientOptions, StartOptions};
use perdure_tests::{
    NodeProcess, ensure_built, python_with, run_python_script, run_python_script_with,
};
use reqwest::StatusCode;
use serde_json::Value;

use perdure_tests::keys::{self, ADMIN, OPERATOR, READER};

fn keys_env() -> String {
    keys::env()
}

/// A dev node with the three keys, serving gRPC on a free port; (node, gRPC address).
fn keyed_node() -> (NodeProcess, String) {
    perdure_tests::keyed_dev_node(&[]).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    // JSON, except the metrics' text.
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_need_a_key_of_their_role() {
    let (node, _grpc) = keyed_node();
    assert!(node.banner.contains("listening"), "{}", node.banner);
    let base = node.base();
    let http = reqwest::Client::new();

    // Probes stay open.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let a = send(http.get(format!("{}{probe}", node.origin))).await;
        assert_eq!(a.status, StatusCode::OK, "{probe}");
        assert!(
            !a.body.is_string() || probe == "/metrics",
            "{probe}: {}",
            a.body
        );
    }

    // No key: 401 with a JSON body and the Bearer challenge; a wrong key: 401 too.
    let a = send(http.get(format!("{base}/instances"))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.is_object(), "{}", a.body);
    assert!(
        a.body["Message"].as_str().unwrap().contains("API key"),
        "{}",
        a.body
    );
    assert!(
        a.headers
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
    );
    let a = send(
        http.get(format!("{base}/instances"))
            .bearer_auth("pd_not_a_key_0123456789"),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(http.post(format!("{base}/orchestrators/HelloSequence"))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    // A reader reads but cannot start: 403, and nothing was started.
    let a = send(
        http.post(format!("{base}/orchestrators/HelloSequence"))
            .bearer_auth(READER),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.body["Message"].as_str().unwrap().contains("operator"),
        "{}",
        a.body
    );
    let a = send(http.get(format!("{base}/instances")).bearer_auth(READER)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, Value::Array(vec![]), "the refused start ran");

    // An operator starts, with the key in `x-functions-key`.
    let a = send(
        http.post(format!("{base}/orchestrators/HelloSequence/by-header"))
            .header("x-functions-key", OPERATOR),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    assert!(
        !a.body["statusQueryGetUri"]
            .as_str()
            .unwrap()
            .contains("code="),
        "a key sent in a header must not appear in URLs"
    );

    // With `code`, every management URL carries it, and following them just works.
    let a = send(http.post(format!(
        "{base}/orchestrators/HelloSequence/by-code?code={OPERATOR}"
    )))
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    for field in [
        "statusQueryGetUri",
        "sendEventPostUri",
        "terminatePostUri",
        "rewindPostUri",
        "purgeHistoryDeleteUri",
        "restartPostUri",
        "suspendPostUri",
        "resumePostUri",
    ] {
        let uri = a.body[field].as_str().unwrap();
        assert!(uri.contains(&format!("code={OPERATOR}")), "{field}: {uri}");
    }
    let status_uri = a.body["statusQueryGetUri"].as_str().unwrap().to_string();
    let done = send(http.get(format!("{status_uri}&waitForCompletion=20s"))).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["runtimeStatus"], "Completed");

    // Purging is the admin's: an operator gets 403 and the instance stays.
    let purge = a.body["purgeHistoryDeleteUri"]
        .as_str()
        .unwrap()
        .to_string();
    let denied = send(http.delete(&purge)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let still = send(
        http.get(format!("{base}/instances/by-code"))
            .bearer_auth(READER),
    )
    .await;
    assert_eq!(still.status, StatusCode::OK);
    let purged = send(
        http.delete(format!("{base}/instances/by-code"))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    assert_eq!(purged.body["instancesDeleted"], 1);

    // Replacing an instance drops its history, like a purge: the admin's. An operator's
    // start over the finished `by-header`, or restart of it under the same id, is refused
    // and leaves it as it was; a restart under a new id is fine.
    let by_header = format!("{base}/instances/by-header");
    let done = send(
        http.get(format!("{by_header}?waitForCompletion=20s"))
            .bearer_auth(READER),
    )
    .await;
    assert_eq!(done.body["runtimeStatus"], "Completed", "{}", done.body);
    let a = send(
        http.post(format!("{base}/orchestrators/Approval/by-header"))
            .bearer_auth(OPERATOR)
            .json(&serde_json::json!({"timeoutSeconds": 60})),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert!(
        a.body["Message"].as_str().unwrap().contains("admin"),
        "{}",
        a.body
    );
    let a = send(
        http.post(format!(
            "{by_header}/restart?restartWithNewInstanceId=false"
        ))
        .bearer_auth(OPERATOR),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let still = send(http.get(&by_header).bearer_auth(READER)).await;
    assert_eq!(still.body["name"], "HelloSequence", "{}", still.body);
    assert_eq!(still.body["runtimeStatus"], "Completed");
    let a = send(
        http.post(format!("{by_header}/restart?restartWithNewInstanceId=true"))
            .bearer_auth(OPERATOR),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    assert_ne!(a.body["id"], "by-header");
    let a = send(
        http.post(format!(
            "{by_header}/restart?restartWithNewInstanceId=false"
        ))
        .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);

    // Cleaning entity storage is an operator's; the Functions host's base path is checked the
    // same way; a `Basic` Authorization (from a proxy) does not hide `x-functions-key`.
    let clean = format!("{base}/maintenance/cleanEntityStorage");
    let a = send(http.post(&clean).bearer_auth(READER)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(http.post(&clean).bearer_auth(OPERATOR)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let rpc = format!("{}/durabletask/instances", node.origin);
    let a = send(http.get(&rpc)).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(
        http.delete(format!("{rpc}/by-header"))
            .bearer_auth(OPERATOR),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send(
        http.get(&rpc)
            .header("authorization", "Basic dXNlcjpwYXNz")
            .header("x-functions-key", READER),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // The cluster view is a read.
    let a = send(http.get(format!("{}/cluster/partitions", node.origin))).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(
        http.get(format!("{}/cluster/partitions", node.origin))
            .bearer_auth(READER),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_crate_and_the_cli_send_their_key() {
    let (node, _grpc) = keyed_node();

    let anonymous = DurableClient::http([node.origin.as_str()]).unwrap();
    let start = |c: &DurableClient, id: Option<&str>| {
        let opts = StartOptions {
            instance_id: id.map(str::to_string),
            ..StartOptions::default()
        };
        let c = c.clone();
        async move {
            c.schedule_new_orchestration("HelloSequence", &(), opts)
                .await
        }
    };
    match start(&anonymous, None).await {
        Err(ClientError::Denied { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    let reader = DurableClient::http_with(
        HttpClientOptions::new([node.origin.as_str()]).with_api_key(READER),
    )
    .unwrap();
    match start(&reader, None).await {
        Err(ClientError::Denied { status: 403, .. }) => {}
        other => panic!("expected 403, got {other:?}"),
    }
    let operator = DurableClient::http_with(
        HttpClientOptions::new([node.origin.as_str()]).with_api_key(OPERATOR),
    )
    .unwrap();
    let id = start(&operator, Some("from-client")).await.unwrap();
    let done = operator
        .wait_for_instance_completion(&id, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert!(done.is_finished(), "{done:?}");

    // The CLI: refused without a key, served with PERDURE_API_KEY.
    let cli = ensure_built().unwrap().join("perdure");
    let out = Command::new(&cli)
        .args(["--url", &node.origin, "status", "from-client"])
        .env_remove("PERDURE_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access denied") && err.contains("401"),
        "{err}"
    );
    let out = Command::new(&cli)
        .args(["--url", &node.origin, "--json", "status", "from-client"])
        .env("PERDURE_API_KEY", READER)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Completed"), "{text}");
    let out = Command::new(&cli)
        .args(["--url", &node.origin, "--api-key", READER, "cluster"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The dashboard (`/dashboard`) in a real headless Chromium (Debian's `chromium-driver`,
/// driven by Selenium): every view and action, with the three roles
/// (`tests/python/dashboard.py`). A screenshot goes to `target/dashboard.png`.
#[test]
fn the_dashboard_works_in_a_headless_browser() {
    let Some(python) = python_with("selenium") else {
        return;
    };
    let driver = std::path::Path::new("/usr/bin/chromedriver");
    if !driver.exists() {
        let msg = "SKIPPED: no /usr/bin/chromedriver (apt-get install chromium chromium-driver)";
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{msg}");
        eprintln!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
        return;
    }
    let node = NodeProcess::spawn_dev_env(&["--grpc", "off"], &[("PERDURE_API_KEYS", &keys_env())])
        .unwrap();
    let shot = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard.png");
    let arg = format!("{},{READER},{OPERATOR},{ADMIN}", node.origin);
    run_python_script_with(
        &python,
        "dashboard.py",
        &[&arg, &shot.display().to_string()],
    );
    drop(node);
}

/// The Durable Task Python SDK, unmodified, passing the key as `authorization` metadata.
#[test]
fn the_python_durabletask_sdk_passes_its_key_as_metadata() {
    let Some(python) = python_with("durabletask.worker") else {
        return;
    };
    let (node, grpc) = keyed_node();
    // The script takes the address and the three keys as one argument.
    let arg = format!("{grpc},{READER},{OPERATOR},{ADMIN}");
    run_python_script(&python, "durabletask_access.py", &arg);
    drop(node);
}

#[test]
fn run_on_a_public_address_without_keys_refuses_to_start() {
    let bin = ensure_built().unwrap().join("perdure-node");
    let data = tempfile::tempdir().unwrap();
    // Bounded: a node that started anyway would serve forever.
    let mut child = Command::new(&bin)
        .args(["run", "--store", "memory", "--http", "0.0.0.0:0"])
        .current_dir(data.path())
        .env_remove("PERDURE_API_KEYS")
        .env_remove("PERDURE_INSECURE_NO_AUTH")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("perdure-node run on 0.0.0.0 without keys did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.keys") && err.contains("--insecure-no-auth"),
        "{err}"
    );

    // Told explicitly, it starts (and says it is open).
    let args: Vec<std::ffi::OsString> = [
        "run",
        "--store",
        "memory",
        "--http",
        "0.0.0.0:0",
        "--insecure-no-auth",
    ]
    .iter()
    .map(Into::into)
    .collect();
    let node = NodeProcess::spawn(&args, &[], tempfile::tempdir().unwrap()).unwrap();
    assert!(node.banner.contains("listening"), "{}", node.banner);
    assert!(node.terminate().unwrap());

    // `perdure-node key` makes a key whose digest line a node accepts.
    let out = Command::new(&bin)
        .args(["key", "--role", "admin"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text
        .split_whitespace()
        .find(|w| w.starts_with("pd_"))
        .expect("a key")
        .to_string();
    let env_line = text
        .lines()
        .find_map(|l| l.split("PERDURE_API_KEYS=").nth(1))
        .expect("an environment line")
        .to_string();
    assert!(
        !env_line.contains(&key),
        "the digest line must not hold the key"
    );
    let args: Vec<std::ffi::OsString> = ["run", "--store", "memory", "--http", "0.0.0.0:0"]
        .iter()
        .map(Into::into)
        .collect();
    let node = NodeProcess::spawn(
        &args,
        &[("PERDURE_API_KEYS", env_line.as_str())],
        tempfile::tempdir().unwrap(),
    )
    .unwrap();
    let port = node.origin.rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}/runtime/webhooks/durabletask/instances");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (anon, keyed) = rt.block_on(async {
        let http = reqwest::Client::new();
        let anon = http.get(&url).send().await.unwrap().status();
        let keyed = http
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status();
        (anon, keyed)
    });
    assert_eq!(anon, StatusCode::UNAUTHORIZED);
    assert_eq!(keyed, StatusCode::OK);
}
