//! HTTP API scenarios: `http-starts` (accepted starts per second through the HTTP API and
//! through `perdure-client`) and `http-status` (status reads per second). One node with the
//! embedded store serves the API on 127.0.0.1 in this process; `--callers` concurrent callers
//! (default 64) drive it over keep-alive connections. Progress goes to stderr; one JSON summary
//! line is printed last on stdout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use perdure_client::{DurableClient, StartOptions};
use perdure_node::http::{HttpOptions, router};
use perdure_node::node::{Node, NodeHandle};
use perdure_node::store::embedded::EmbeddedStore;
use serde_json::json;

use crate::measure::{Memory, arg, arg_str, percentile_ms};

struct Server {
    node: Option<NodeHandle>,
    origin: String,
    _dir: tempfile::TempDir,
}

async fn serve(noop: bool) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    if noop {
        let app = router(Arc::new(crate::http_noop::NoopApi), HttpOptions::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let origin = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        return Ok(Server {
            node: None,
            origin,
            _dir: dir,
        });
    }
    let store = Arc::new(EmbeddedStore::open(dir.path()).context("open embedded store")?);
    let node = Node::builder()
        .registry(Arc::new(perdure_node::sample::sample_registry()))
        .store(store)
        .start()
        .await?;
    let app = router(Arc::new(node.clone()), HttpOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Server {
        node: Some(node),
        origin,
        _dir: dir,
    })
}

impl Server {
    async fn shutdown(&self) {
        if let Some(n) = &self.node {
            n.shutdown().await;
        }
    }
}

/// What one phase of `total` operations measured.
struct Phase {
    /// Operations per second.
    rate: f64,
    /// Operations that failed.
    errors: u64,
    /// Per-operation latency, sorted.
    latencies: Vec<Duration>,
}

impl Phase {
    fn p50_ms(&self) -> f64 {
        percentile_ms(&self.latencies, 0.50)
    }

    fn p99_ms(&self) -> f64 {
        percentile_ms(&self.latencies, 0.99)
    }
}

/// Runs `total` operations over `callers` tasks, timing each.
async fn drive<F, Fut>(total: u64, callers: u64, op: F) -> Phase
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (next, errors, op) = (next.clone(), errors.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                if !op(i).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for t in tasks {
        if let Ok(l) = t.await {
            latencies.extend(l);
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    latencies.sort_unstable();
    Phase {
        rate: total as f64 / secs,
        errors: errors.load(Ordering::Relaxed),
        latencies,
    }
}

/// The stderr line of one phase.
fn report(label: &str, what: &str, phase: &Phase) {
    eprintln!(
        "  {label}: {:.0} {what}/s ({} errors)  p50={:.2} ms  p99={:.2} ms  {}",
        phase.rate,
        phase.errors,
        phase.p50_ms(),
        phase.p99_ms(),
        Memory::now().describe()
    );
}

/// `http-starts [--n 50000] [--callers 64] [--orchestration Approval] [--noop]`.
pub(crate) fn starts(rest: &[String]) -> anyhow::Result<()> {
    let n = arg(rest, "--n", 50_000);
    let callers = arg(rest, "--callers", 64);
    let name = arg_str(rest, "--orchestration", "Approval");
    let noop = rest.iter().any(|a| a == "--noop");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = serve(noop).await?;
        // Each phase gets a fresh node, so neither pays for the other's instances.
        // Approval waits for an event (an hour's timer), so the measure is the start path,
        // not the orchestration's work.
        let body: &'static str = if name == "Approval" {
            r#"{"timeoutSeconds": 3600}"#
        } else {
            ""
        };
        let http = reqwest::Client::new();
        let url = format!(
            "{}/runtime/webhooks/durabletask/orchestrators/{name}",
            server.origin
        );
        // Parsed once; each request's URL is a copy with its own last path segment (the load
        // generator then spends its time on HTTP, not on parsing the same origin again).
        let base = reqwest::Url::parse(&url)?;
        eprintln!("http-starts: {n} starts of {name} over raw HTTP, {callers} callers");
        let raw = {
            let http = http.clone();
            drive(n, callers, move |i| {
                let mut url = base.clone();
                url.set_path(&format!("{}/raw-{i}", base.path()));
                let req = http
                    .post(url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        reqwest::header::HeaderValue::from_static("application/json"),
                    )
                    .body(body);
                async move { matches!(req.send().await, Ok(r) if r.status().as_u16() == 202) }
            })
            .await
        };
        report("raw HTTP", "accepted starts", &raw);
        server.shutdown().await;
        drop(server);
        let server = serve(noop).await?;
        let client = DurableClient::http([server.origin.clone()])?;
        let input: serde_json::Value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(body)?
        };
        eprintln!("http-starts: {n} starts through perdure-client, {callers} callers");
        let client_phase = {
            let (client, name, input) = (client.clone(), name.clone(), input.clone());
            drive(n, callers, move |i| {
                let (client, name, input) = (client.clone(), name.clone(), input.clone());
                async move {
                    client
                        .schedule_new_orchestration(
                            &name,
                            &input,
                            StartOptions::with_id(format!("client-{i}")),
                        )
                        .await
                        .is_ok()
                }
            })
            .await
        };
        report("client  ", "accepted starts", &client_phase);
        server.shutdown().await;
        let memory = Memory::now();
        crate::measure::emit(json!({
            "scenario": "http-starts",
            "runtime": if noop { "noop (HTTP layer only)" } else { "node, embedded store" },
            "orchestration": name,
            "starts": n,
            "callers": callers,
            "http_starts_per_sec": raw.rate.round(),
            "http_errors": raw.errors,
            "http_ms_p50": raw.p50_ms(),
            "http_ms_p99": raw.p99_ms(),
            "client_starts_per_sec": client_phase.rate.round(),
            "client_errors": client_phase.errors,
            "client_ms_p50": client_phase.p50_ms(),
            "client_ms_p99": client_phase.p99_ms(),
            "rss_bytes": memory.rss,
            "peak_rss_bytes": memory.peak,
        }));
        anyhow::Ok(())
    })
}

/// `http-status [--instances 1000] [--n 100000] [--callers 64]`.
pub(crate) fn status(rest: &[String]) -> anyhow::Result<()> {
    let instances = arg(rest, "--instances", 1000).max(1);
    let n = arg(rest, "--n", 100_000);
    let callers = arg(rest, "--callers", 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = serve(false).await?;
        let client = DurableClient::http([server.origin.clone()])?;
        eprintln!("http-status: starting {instances} instances");
        for i in 0..instances {
            client
                .schedule_new_orchestration(
                    "HelloSequence",
                    &(),
                    StartOptions::with_id(format!("s-{i}")),
                )
                .await?;
        }
        let last = perdure_client::InstanceId::new(format!("s-{}", instances - 1))?;
        client
            .wait_for_instance_completion(&last, Duration::from_secs(120))
            .await?;
        let http = reqwest::Client::new();
        let base = format!("{}/runtime/webhooks/durabletask/instances", server.origin);
        eprintln!("http-status: {n} status reads over raw HTTP, {callers} callers");
        let raw = {
            let (http, base) = (http.clone(), base.clone());
            drive(n, callers, move |i| {
                let req = http.get(format!("{base}/s-{}", i % instances));
                async move {
                    match req.send().await {
                        Ok(r) if r.status().as_u16() == 200 => r.bytes().await.is_ok(),
                        _ => false,
                    }
                }
            })
            .await
        };
        report("raw HTTP", "status reads", &raw);
        eprintln!("http-status: {n} reads through perdure-client, {callers} callers");
        let client_phase = {
            let client = client.clone();
            drive(n, callers, move |i| {
                let client = client.clone();
                async move {
                    let Ok(id) = perdure_client::InstanceId::new(format!("s-{}", i % instances))
                    else {
                        return false;
                    };
                    matches!(client.get_instance(&id, true, false).await, Ok(Some(_)))
                }
            })
            .await
        };
        report("client  ", "status reads", &client_phase);
        server.shutdown().await;
        let memory = Memory::now();
        crate::measure::emit(json!({
            "scenario": "http-status",
            "instances": instances,
            "reads": n,
            "callers": callers,
            "http_reads_per_sec": raw.rate.round(),
            "http_errors": raw.errors,
            "http_ms_p50": raw.p50_ms(),
            "http_ms_p99": raw.p99_ms(),
            "client_reads_per_sec": client_phase.rate.round(),
            "client_errors": client_phase.errors,
            "client_ms_p50": client_phase.p50_ms(),
            "client_ms_p99": client_phase.p99_ms(),
            "rss_bytes": memory.rss,
            "peak_rss_bytes": memory.peak,
        }));
        anyhow::Ok(())
    })
}
