//! The `perdure-node` binary: `run` with a TOML file, `PERDURE_*` variables and flags;
//! configuration errors that name the field; graceful shutdown on SIGTERM and SIGINT.

use std::ffi::OsString;
use std::process::Command;

use perdure_tests::{NodeProcess, ensure_built};

fn node_bin() -> std::path::PathBuf {
    ensure_built().unwrap().join("perdure-node")
}

#[test]
fn run_merges_file_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("perdure.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nbackend = \"embedded\"\npath = {:?}\n[http]\nbind = \"127.0.0.1:1\"\n[node]\npartitions = 4\nactivity_lease = \"2m\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    // The flag's address beats the file's; the environment's partitions beat the file's.
    let args: Vec<OsString> = vec![
        "run".into(),
        "--config".into(),
        cfg.into(),
        "--http".into(),
        "127.0.0.1:0".into(),
    ];
    let node = NodeProcess::spawn(&args, &[("PERDURE_PARTITIONS", "6")], dir).unwrap();
    assert!(node.banner.contains("6 partitions"), "{}", node.banner);
    assert!(node.banner.contains("store: embedded"), "{}", node.banner);
    let body = http1::blocking_get(&format!("{}/readyz", node.origin));
    assert!(body.contains("ready"), "{body}");
    assert!(node.data_dir.path().join("data").exists());
    assert!(node.terminate().unwrap(), "clean exit on SIGTERM");
}

mod http1 {
    /// A tiny blocking GET over a raw TCP connection (no extra client runtime in this test).
    pub(crate) fn blocking_get(url: &str) -> String {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

#[test]
fn bad_configuration_names_the_field_and_exits_2() {
    let out = Command::new(node_bin())
        .args(["run", "--store", "postgres"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store.url"), "{err}");

    let out = Command::new(node_bin())
        .args(["run", "--store", "memory"])
        .env("PERDURE_PARTITIONS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node.partitions") && err.contains("PERDURE_PARTITIONS"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[node]\npartitons = 3\n").unwrap();
    let out = Command::new(node_bin())
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("partitons"), "{err}");

    let out = Command::new(node_bin())
        .args(["run", "--store", "memory", "--http", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.bind"));
}

#[test]
fn dev_keeps_instances_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let args = dev_args(data.path());
    let node = NodeProcess::spawn(&args, &[], tempfile::tempdir().unwrap()).unwrap();
    let r = post_json(
        &format!("{}/orchestrators/Approval/keep", node.base()),
        r#"{"timeoutSeconds": 3600}"#,
    );
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
    assert!(node.terminate().unwrap(), "clean exit on SIGTERM");

    let again = NodeProcess::spawn(&args, &[], tempfile::tempdir().unwrap()).unwrap();
    let r = http1::blocking_get(&format!("{}/instances/keep", again.base()));
    assert!(
        r.starts_with("HTTP/1.1 202") && r.contains("\"Running\""),
        "{r}"
    );
}

/// `dev` on a free port with the given data directory (kept across restarts).
fn dev_args(data: &std::path::Path) -> Vec<OsString> {
    vec![
        "dev".into(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.into(),
    ]
}

fn post_json(url: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// SIGINT shuts down as gracefully as SIGTERM: a long poll in flight is answered with the
/// current status (not a dropped connection), the process exits 0, and the data is there
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_answers_a_long_poll_in_flight_and_keeps_the_data() {
    let data = tempfile::tempdir().unwrap();
    let args = dev_args(data.path());
    let node = NodeProcess::spawn(&args, &[], tempfile::tempdir().unwrap()).unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/orchestrators/Approval/held", node.base()))
        .header("content-type", "application/json")
        .body(r#"{"timeoutSeconds": 3600}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);

    let poll = tokio::spawn(
        http.get(format!(
            "{}/instances/held?waitForCompletion=60s",
            node.base()
        ))
        .send(),
    );
    // The gauge counts the metrics request itself: 2 means the long poll is being answered.
    let metrics = format!("{}/metrics", node.origin);
    let mut waiting = false;
    for _ in 0..500 {
        let text = match http.get(&metrics).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("GET /metrics: {e}"),
        };
        if text
            .lines()
            .any(|l| l == "perdure_http_requests_in_flight 2")
        {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(waiting, "the long poll never reached the node");

    node.signal("INT").unwrap();
    let answer = poll
        .await
        .unwrap()
        .expect("an answer, not a dropped connection");
    assert_eq!(answer.status(), reqwest::StatusCode::ACCEPTED);
    let status: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(status["runtimeStatus"], "Running");
    let exited_cleanly = tokio::task::spawn_blocking(move || node.wait_exit().unwrap())
        .await
        .unwrap();
    assert!(exited_cleanly, "exit code 0 on SIGINT");

    let again = NodeProcess::spawn(&args, &[], tempfile::tempdir().unwrap()).unwrap();
    let r = http1::blocking_get(&format!("{}/instances/held", again.base()));
    assert!(
        r.starts_with("HTTP/1.1 202") && r.contains("\"Running\""),
        "{r}"
    );
    assert!(again.interrupt().unwrap(), "clean exit on SIGINT");
}

#[test]
fn a_misspelt_variable_is_named_in_a_warning() {
    let args: Vec<OsString> = vec![
        "run".into(),
        "--store".into(),
        "memory".into(),
        "--http".into(),
        "127.0.0.1:0".into(),
    ];
    let node = NodeProcess::spawn_logged(
        &args,
        &[
            ("PERDURE_PARTITONS", "6"),
            ("PERDURE_PARTITION_LEASE", "20s"),
            ("PERDURE_TEST_SOMETHING", "x"),
        ],
        tempfile::tempdir().unwrap(),
    )
    .unwrap();
    // The misspelt variable changed nothing: the default partition count.
    assert!(node.banner.contains("64 partitions"), "{}", node.banner);
    let (clean, stderr) = node.stop_and_collect_stderr().unwrap();
    assert!(clean);
    assert!(
        stderr.contains("warning: ignoring unknown environment variable PERDURE_PARTITONS")
            && stderr.contains("did you mean PERDURE_PARTITIONS?"),
        "{stderr}"
    );
    assert!(!stderr.contains("PERDURE_PARTITION_LEASE"), "{stderr}");
    assert!(!stderr.contains("PERDURE_TEST_SOMETHING"), "{stderr}");

    // A variable for a field that had none before names the field and itself when wrong.
    let out = Command::new(node_bin())
        .args(["run", "--store", "memory"])
        .env("PERDURE_PARTITION_LEASE", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node.partition_lease") && err.contains("PERDURE_PARTITION_LEASE"),
        "{err}"
    );
}
