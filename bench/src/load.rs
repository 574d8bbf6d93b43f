//! `load`: a load generator that talks to running nodes over the HTTP API only, as a user's
//! client would. It never starts a node: give it the URL(s) of nodes started elsewhere.
//!
//! - Closed loop (default): `--callers C` callers, spread round-robin over the URLs; each
//!   starts an orchestration (`POST …/orchestrators/NAME/ID`), waits for it with the long
//!   poll (`GET …/instances/ID?waitForCompletion=…`), then starts the next.
//! - Open loop (`--rate R`): R starts per second at fixed intended send times, each waited
//!   for by its own task; latency is measured from the *intended* send time, so a node that
//!   falls behind is charged for the queueing it causes (no coordinated omission).
//!
//! Orchestrations started during the warm-up (`--warmup`, default 3 s) are waited for but
//! not measured; those started in the next `--duration` seconds (default 10) are measured;
//! then no more are started and the in-flight ones are waited for. Every orchestration must
//! reach `Completed`: a failed start, a failed or missing instance (the long poll ran out)
//! makes the exit status non-zero. The node's CPU seconds and RSS come from each URL's
//! `/metrics` (`process_cpu_seconds_total`, `process_resident_memory_bytes`), read at the
//! start and the end of the measured window.
//!
//! - Routing (`--route`): `round-robin` (default) sends each caller's requests to one URL,
//!   callers spread over the URLs, so with N nodes (N-1)/N of the requests are forwarded to
//!   the instance's owner; `owner` reads the partition table of the cluster
//!   (`GET /cluster/partitions` on every URL) and sends each instance's requests to the node
//!   that owns its partition, as a client that knows the placement would (none forwarded
//!   while the placement holds). Comparing the two measures what forwarding costs.
//!
//! ```text
//! perdure-bench load --url http://127.0.0.1:8080[,http://…] [--callers 64] [--rate 0]
//!     [--duration 10] [--warmup 3] [--orchestration HelloSequence] [--input JSON]
//!     [--wait-secs 60] [--route round-robin|owner]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::sync::Mutex;

use crate::measure::{arg, arg_str, percentile_ms};

const BASE: &str = "/runtime/webhooks/durabletask";

/// What the command line asked for.
struct Plan {
    urls: Vec<String>,
    callers: u64,
    rate: u64,
    warmup: Duration,
    duration: Duration,
    name: String,
    input: Option<String>,
    wait_secs: u64,
    route_owner: bool,
}

/// Which node's URL owns each partition (`--route owner`).
struct OwnerTable {
    /// Indexed by partition.
    urls: Vec<String>,
}

impl OwnerTable {
    /// Reads every URL's `/cluster/partitions`: the node's own name, and the owners.
    async fn read(http: &reqwest::Client, urls: &[String]) -> anyhow::Result<Self> {
        let mut by_name = std::collections::BTreeMap::new();
        let mut owners: Vec<Option<String>> = Vec::new();
        for url in urls {
            let v: serde_json::Value = http
                .get(format!("{url}/cluster/partitions"))
                .send()
                .await
                .with_context(|| format!("{url}/cluster/partitions"))?
                .error_for_status()
                .with_context(|| format!("{url}/cluster/partitions (is it a cluster node?)"))?
                .json()
                .await?;
            let node = v
                .get("node")
                .and_then(|n| n.as_str())
                .context("/cluster/partitions without \"node\"")?;
            by_name.insert(node.to_string(), url.clone());
            if owners.is_empty() {
                let rows = v
                    .get("partitions")
                    .and_then(|p| p.as_array())
                    .context("/cluster/partitions without \"partitions\"")?;
                owners = rows
                    .iter()
                    .map(|r| r.get("owner").and_then(|o| o.as_str()).map(str::to_string))
                    .collect();
            }
        }
        anyhow::ensure!(!owners.is_empty(), "the partition table is empty");
        let urls = owners
            .iter()
            .enumerate()
            .map(|(p, o)| {
                let o = o
                    .as_ref()
                    .with_context(|| format!("partition {p} has no owner"))?;
                by_name.get(o).cloned().with_context(|| {
                    format!("partition {p} is owned by {o}, whose URL was not given")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self { urls })
    }

    fn url_for(&self, id: &str) -> Option<&str> {
        let n = u32::try_from(self.urls.len()).ok()?;
        let p = perdure_node::state::partition_of(id, n);
        self.urls.get(usize::try_from(p).ok()?).map(String::as_str)
    }
}

/// Shared by every caller.
struct Shared {
    http: reqwest::Client,
    plan: Plan,
    /// Unique to this run, so instance ids never collide with an earlier run's.
    run_id: String,
    /// The start of the run; the measured window is `[warmup, warmup + duration)` after it.
    t0: Instant,
    next_id: AtomicU64,
    failures: AtomicU64,
    /// The first few failures, to print.
    failure_samples: Mutex<Vec<String>>,
    /// Latencies of the orchestrations started in the measured window.
    latencies: Mutex<Vec<Duration>>,
    /// Orchestrations finished (all phases).
    finished: AtomicU64,
    /// With `--route owner`.
    owners: Option<OwnerTable>,
}

impl Shared {
    fn in_window(&self, at: Instant) -> bool {
        let since = at.saturating_duration_since(self.t0);
        since >= self.plan.warmup && since < self.plan.warmup + self.plan.duration
    }

    async fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut s = self.failure_samples.lock().await;
        if s.len() < 10 {
            s.push(what);
        }
    }

    /// Starts one orchestration on `url` and waits for it; `Err` says why it failed.
    async fn one(&self, url: &str) -> Result<(), String> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("load-{}-{n}", self.run_id);
        let url = self
            .owners
            .as_ref()
            .and_then(|o| o.url_for(&id))
            .unwrap_or(url);
        let name = &self.plan.name;
        let mut req = self
            .http
            .post(format!("{url}{BASE}/orchestrators/{name}/{id}"));
        if let Some(input) = &self.plan.input {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(input.clone());
        }
        let resp = req.send().await.map_err(|e| format!("start {id}: {e}"))?;
        if resp.status().as_u16() != 202 {
            return Err(format!("start {id}: HTTP {}", resp.status()));
        }
        drop(resp.bytes().await);
        let wait = format!(
            "{url}{BASE}/instances/{id}?waitForCompletion={}s&showInput=false",
            self.plan.wait_secs
        );
        let resp = self
            .http
            .get(wait)
            .send()
            .await
            .map_err(|e| format!("wait {id}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| format!("wait {id}: {e}"))?;
        if status != 200 {
            return Err(format!(
                "{id}: not finished after {} s (HTTP {status})",
                self.plan.wait_secs
            ));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{id}: bad status body: {e}"))?;
        match v.get("runtimeStatus").and_then(|s| s.as_str()) {
            Some("Completed") => {
                self.finished.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            other => Err(format!("{id}: runtimeStatus {other:?}")),
        }
    }

    /// Runs one orchestration meant to be sent at `intended`, recording its latency if it
    /// was meant for the measured window.
    async fn timed(&self, url: &str, intended: Instant) {
        let result = self.one(url).await;
        let latency = intended.elapsed();
        match result {
            Ok(()) => {
                if self.in_window(intended) {
                    self.latencies.lock().await.push(latency);
                }
            }
            Err(e) => self.fail(e).await,
        }
    }
}

/// The node's process CPU seconds and RSS bytes, from `/metrics`.
async fn node_usage(http: &reqwest::Client, url: &str) -> Option<(f64, f64)> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((
        value("process_cpu_seconds_total")?,
        value("process_resident_memory_bytes")?,
    ))
}

fn parse_plan(rest: &[String]) -> anyhow::Result<Plan> {
    let urls: Vec<String> = arg_str(rest, "--url", "http://127.0.0.1:8080")
        .split(',')
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    anyhow::ensure!(!urls.is_empty(), "--url needs at least one node URL");
    let input = rest
        .windows(2)
        .find(|w| w.first().is_some_and(|a| a == "--input"))
        .and_then(|w| w.get(1).cloned());
    if let Some(i) = &input {
        serde_json::from_str::<serde_json::Value>(i).context("--input must be JSON")?;
    }
    Ok(Plan {
        urls,
        callers: arg(rest, "--callers", 64).max(1),
        rate: arg(rest, "--rate", 0),
        warmup: Duration::from_secs(arg(rest, "--warmup", 3)),
        duration: Duration::from_secs(arg(rest, "--duration", 10).max(1)),
        name: arg_str(rest, "--orchestration", "HelloSequence"),
        input,
        wait_secs: arg(rest, "--wait-secs", 60).max(1),
        route_owner: match arg_str(rest, "--route", "round-robin").as_str() {
            "round-robin" => false,
            "owner" => true,
            other => anyhow::bail!("--route must be round-robin or owner, not {other:?}"),
        },
    })
}

/// `load`: see the module documentation.
pub(crate) fn run(rest: &[String]) -> anyhow::Result<()> {
    let plan = parse_plan(rest)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(drive(plan))
}

async fn drive(plan: Plan) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(plan.wait_secs + 30))
        .build()?;
    for url in &plan.urls {
        let r = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .with_context(|| format!("node at {url} does not answer"))?;
        anyhow::ensure!(
            r.status().is_success(),
            "{url}/metrics: HTTP {}",
            r.status()
        );
    }
    let run_id = format!(
        "{:x}{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
        std::process::id()
    );
    let mode = if plan.rate > 0 {
        format!("open loop, {} starts/s", plan.rate)
    } else {
        format!("closed loop, {} callers", plan.callers)
    };
    eprintln!(
        "load: {} on {} ({mode}), warm-up {} s, measured {} s",
        plan.name,
        plan.urls.join(","),
        plan.warmup.as_secs(),
        plan.duration.as_secs()
    );
    let owners = if plan.route_owner {
        Some(OwnerTable::read(&http, &plan.urls).await?)
    } else {
        None
    };
    let shared = Arc::new(Shared {
        owners,
        http,
        plan,
        run_id,
        t0: Instant::now(),
        next_id: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        failure_samples: Mutex::new(Vec::new()),
        latencies: Mutex::new(Vec::new()),
        finished: AtomicU64::new(0),
    });
    let window_start = shared.t0 + shared.plan.warmup;
    let window_end = window_start + shared.plan.duration;

    // Usage at the window's start and end, read by a task of its own.
    let usage = {
        let s = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start.into()).await;
            let mut before = Vec::new();
            for u in &s.plan.urls {
                before.push(node_usage(&s.http, u).await);
            }
            tokio::time::sleep_until(window_end.into()).await;
            let mut after = Vec::new();
            for u in &s.plan.urls {
                after.push(node_usage(&s.http, u).await);
            }
            (before, after)
        })
    };

    let mut tasks = tokio::task::JoinSet::new();
    if shared.plan.rate == 0 {
        for c in 0..shared.plan.callers {
            let s = shared.clone();
            tasks.spawn(async move {
                let n = usize::try_from(c).unwrap_or(0) % s.plan.urls.len();
                let url = s.plan.urls.get(n).cloned().unwrap_or_default();
                loop {
                    let at = Instant::now();
                    if at >= window_end {
                        break;
                    }
                    s.timed(&url, at).await;
                }
            });
        }
    } else {
        let interval = Duration::from_secs_f64(1.0 / shared.plan.rate as f64);
        let mut i: u64 = 0;
        loop {
            let intended = shared.t0 + interval.mul_f64(i as f64);
            if intended >= window_end {
                break;
            }
            tokio::time::sleep_until(intended.into()).await;
            let s = shared.clone();
            let n = usize::try_from(i).unwrap_or(0) % s.plan.urls.len();
            let url = s.plan.urls.get(n).cloned().unwrap_or_default();
            tasks.spawn(async move { s.timed(&url, intended).await });
            i += 1;
            // Reap finished tasks so the set does not grow without bound.
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
    let (before, after) = usage.await.unwrap_or_default();

    let mut latencies = std::mem::take(&mut *shared.latencies.lock().await);
    latencies.sort_unstable();
    let secs = shared.plan.duration.as_secs_f64();
    let rate = latencies.len() as f64 / secs;
    let (p50, p99, p999) = (
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        percentile_ms(&latencies, 0.999),
    );
    let mut cpu = 0.0;
    let mut rss = 0.0;
    let mut usage_known = !shared.plan.urls.is_empty();
    for (b, a) in before.iter().zip(after.iter()) {
        match (b, a) {
            (Some((c0, _)), Some((c1, r1))) => {
                cpu += c1 - c0;
                rss += r1;
            }
            _ => usage_known = false,
        }
    }
    let cpu_us_per = if latencies.is_empty() {
        0.0
    } else {
        cpu * 1e6 / latencies.len() as f64
    };
    let failures = shared.failures.load(Ordering::Relaxed);
    eprintln!(
        "  {rate:.0} orchestrations/s  p50={p50:.2} ms  p99={p99:.2} ms  p999={p999:.2} ms  \
         ({} measured, {} finished in all, {failures} failed)",
        latencies.len(),
        shared.finished.load(Ordering::Relaxed)
    );
    if usage_known {
        eprintln!(
            "  node(s): {cpu:.2} CPU s in the window ({:.2} cores, {cpu_us_per:.0} µs per orchestration), RSS {:.0} MiB",
            cpu / secs,
            rss / 1048576.0
        );
    } else {
        eprintln!(
            "  node(s): no process_cpu_seconds_total / process_resident_memory_bytes in /metrics"
        );
    }
    for f in shared.failure_samples.lock().await.iter() {
        eprintln!("  failure: {f}");
    }
    crate::measure::emit(json!({
        "scenario": "load",
        "orchestration": shared.plan.name,
        "urls": shared.plan.urls,
        "mode": if shared.plan.rate > 0 { "open" } else { "closed" },
        "route": if shared.plan.route_owner { "owner" } else { "round-robin" },
        "callers": shared.plan.callers,
        "rate_target": shared.plan.rate,
        "duration_s": secs,
        "measured": latencies.len(),
        "orchestrations_per_s": rate,
        "p50_ms": p50,
        "p99_ms": p99,
        "p999_ms": p999,
        "node_cpu_s": if usage_known { Some(cpu) } else { None },
        "node_cpu_us_per_orchestration": if usage_known { Some(cpu_us_per) } else { None },
        "node_rss_bytes": if usage_known { Some(rss) } else { None },
        "failed": failures,
    }));
    anyhow::ensure!(
        failures == 0,
        "{failures} orchestration(s) failed or did not finish"
    );
    anyhow::ensure!(
        !latencies.is_empty(),
        "no orchestration finished in the measured window"
    );
    Ok(())
}
