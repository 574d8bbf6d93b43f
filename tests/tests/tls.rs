//! TLS on the HTTP and gRPC listeners (`--tls-cert`, `--tls-key`) of a spawned
//! `perdure-node dev` with API keys: plaintext gets no answer, `perdure-client` and the
//! `perdure` CLI trust a private CA, management URLs are `https://`, and the official Python
//! clients (Durable Functions over HTTPS, Durable Task over gRPC with TLS) work with a key
//! (`tests/python/secure_clients.py`).

use std::process::Command;

use perdure_client::{DurableClient, HttpClientOptions, StartOptions};
use perdure_tests::cluster_peer::write_test_certs;
use perdure_tests::{
    NodeProcess, ensure_built, keyed_dev_node, python_with, run_python_script_with,
};

use perdure_tests::keys::{OPERATOR, READER};

struct TlsNode {
    node: NodeProcess,
    grpc: String,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn tls_node() -> TlsNode {
    let dir = tempfile::tempdir().unwrap();
    write_test_certs(dir.path()).unwrap();
    let cert = dir.path().join("node.pem");
    let key = dir.path().join("node.key");
    let (node, grpc) = keyed_dev_node(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .unwrap();
    TlsNode {
        node,
        grpc,
        ca: dir.path().join("ca.pem"),
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_clients_reach_a_tls_node_through_its_ca() {
    let t = tls_node();
    let origin = t.node.origin.clone();
    assert!(origin.starts_with("https://127.0.0.1:"), "{origin}");
    assert!(t.node.banner.contains("https://"), "{}", t.node.banner);
    let ca_pem = std::fs::read(&t.ca).unwrap();

    // Plaintext HTTP to the TLS port gets no HTTP answer.
    let plain = origin.replacen("https://", "http://", 1);
    let raw = reqwest::Client::new();
    assert!(raw.get(format!("{plain}/healthz")).send().await.is_err());
    // Without the CA, the certificate is not trusted.
    assert!(raw.get(format!("{origin}/healthz")).send().await.is_err());
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .build()
        .unwrap();
    let health = trusting
        .get(format!("{origin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A start with `?code=`: the management URLs are https and carry the key.
    let resp = trusting
        .post(format!(
            "{origin}/runtime/webhooks/durabletask/orchestrators/HelloSequence/raw-tls?code={OPERATOR}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!(
            "{origin}/runtime/webhooks/durabletask/instances/raw-tls"
        )) && location.contains(&format!("code={OPERATOR}")),
        "{location}"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["statusQueryGetUri"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{body}"
    );

    // perdure-client: refused without the CA, served with it.
    let opts = || HttpClientOptions::new([origin.as_str()]).with_api_key(OPERATOR);
    let untrusting = DurableClient::http_with(opts()).unwrap();
    let raw_id = perdure_client::InstanceId::new("raw-tls").unwrap();
    assert!(
        untrusting
            .get_instance(&raw_id, false, false)
            .await
            .is_err()
    );
    let client = DurableClient::http_with(opts().with_ca_certificate(ca_pem.clone())).unwrap();
    let id = client
        .schedule_new_orchestration(
            "HelloSequence",
            &(),
            StartOptions {
                instance_id: Some("client-tls".into()),
                ..StartOptions::default()
            },
        )
        .await
        .unwrap();
    let done = client
        .wait_for_instance_completion(&id, std::time::Duration::from_secs(20))
        .await
        .unwrap();
    assert!(done.is_finished(), "{done:?}");
    assert!(
        DurableClient::http_with(opts().with_ca_certificate(b"not a pem".to_vec())).is_err(),
        "a CA file without a certificate is refused"
    );

    // The CLI: --ca-cert (or PERDURE_CA_CERT).
    let cli = ensure_built().unwrap().join("perdure");
    let run = |with_ca: bool| {
        let mut cmd = Command::new(&cli);
        cmd.args(["--url", &origin, "--json", "status", "client-tls"])
            .env("PERDURE_API_KEY", READER)
            .env_remove("PERDURE_CA_CERT");
        if with_ca {
            cmd.env("PERDURE_CA_CERT", &t.ca);
        }
        cmd.output().unwrap()
    };
    let out = run(false);
    assert!(!out.status.success(), "trusted a certificate it should not");
    let out = run(true);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Completed"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&cli)
        .args(["--url", &origin, "--ca-cert"])
        .arg(&t.ca)
        .args(["cluster"])
        .env("PERDURE_API_KEY", READER)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The official Python clients, unmodified, over TLS and with keys.
#[test]
fn python_clients_work_over_tls_with_keys() {
    let Some(python) = python_with("durabletask.worker") else {
        return;
    };
    let t = tls_node();
    run_python_script_with(
        &python,
        "secure_clients.py",
        &[
            &t.node.origin,
            &t.grpc,
            t.ca.to_str().unwrap(),
            READER,
            OPERATOR,
        ],
    );
}

/// A certificate that cannot be read stops the node at start, naming the file.
#[test]
fn a_bad_certificate_stops_the_node_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let bin = ensure_built().unwrap().join("perdure-node");
    let out = Command::new(&bin)
        .args(["dev", "--memory", "--http", "127.0.0.1:0", "--grpc", "off"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cert.pem"), "{err}");
    // One of the two files alone is a configuration error.
    let out = Command::new(&bin)
        .args(["dev", "--memory", "--http", "127.0.0.1:0", "--grpc", "off"])
        .arg("--tls-cert")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.tls_key"), "{err}");
}

/// Idle sockets that never handshake do not keep other clients out: accepting never waits
/// for handshakes, and one address cannot take the whole budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_do_not_keep_clients_out() {
    let t = tls_node();
    let addr: std::net::SocketAddr = t
        .node
        .origin
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    // 300 sockets from another loopback address, connected and silent.
    let mut idle = Vec::new();
    for _ in 0..300 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(c) = s.connect(addr).await {
            idle.push(c);
        }
    }
    assert!(idle.len() >= 32, "{} idle sockets", idle.len());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&t.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(std::time::Duration::from_secs(3))
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/healthz", t.node.origin))
        .send()
        .await
        .expect("served beside 300 idle sockets");
    assert_eq!(r.status(), 200);
    drop(idle);
}

/// A stop ends even while clients hold requests open (half-sent HTTP headers, a gRPC
/// connection that never speaks): they are dropped `http.max_wait` + 5 s after the signal.
#[test]
fn a_stop_ends_while_clients_hold_requests_open() {
    use std::io::Write as _;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let grpc = format!("127.0.0.1:{port}");
    let node =
        NodeProcess::spawn_dev_env(&["--grpc", &grpc], &[("PERDURE_MAX_WAIT", "1s")]).unwrap();
    let http_addr = node.origin.trim_start_matches("http://").to_string();
    let mut half = std::net::TcpStream::connect(&http_addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let _silent = std::net::TcpStream::connect(&grpc).unwrap();
    // The request is being read when the stop comes.
    std::thread::sleep(std::time::Duration::from_millis(200));
    node.signal("TERM").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(node.wait_exit());
    });
    let exited = rx
        .recv_timeout(std::time::Duration::from_secs(40))
        .expect("the node stops although clients hold requests open");
    assert!(exited.unwrap(), "clean exit");
    drop(half);
}
