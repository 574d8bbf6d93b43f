//! Runtime scenarios on one node, embedded store (a real sync on every commit):
//! `hello3`, `fanout`, `entity`, `waiting`. Progress goes to stderr; one JSON summary line
//! is printed last on stdout.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use perdure_core::management::{InstanceQuery, ManagementApi, ManagementError, StartRequest};
use perdure_core::{EntityId, InstanceId, OrchestrationStatus, Payload};
use perdure_node::node::{Node, NodeHandle};
use perdure_node::options::NodeOptions;
use perdure_node::store::embedded::EmbeddedStore;
use serde_json::json;

use crate::counting::CountingStore;
use crate::measure::{Memory, arg, cpu_seconds, percentile_ms};

async fn start_node(dir: &std::path::Path) -> anyhow::Result<NodeHandle> {
    let store = Arc::new(EmbeddedStore::open(dir).context("open embedded store")?);
    start_node_on(store).await
}

async fn start_node_on(store: Arc<dyn perdure_node::store::Store>) -> anyhow::Result<NodeHandle> {
    start_node_with(store, NodeOptions::default()).await
}

async fn start_node_with(
    store: Arc<dyn perdure_node::store::Store>,
    opts: NodeOptions,
) -> anyhow::Result<NodeHandle> {
    let opts = NodeOptions {
        max_concurrent_activities: std::num::NonZeroUsize::new(256).context("nonzero")?,
        ..opts
    };
    Ok(Node::builder()
        .registry(Arc::new(perdure_node::sample::sample_registry()))
        .store(store)
        .options(opts)
        .start()
        .await?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Starts with retries while the node reports overload.
async fn start(node: &NodeHandle, req: StartRequest) -> anyhow::Result<InstanceId> {
    loop {
        match node.start(req.clone()).await {
            Ok(id) => return Ok(id),
            Err(ManagementError::Overloaded(_)) => tokio::task::yield_now().await,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `hello3`: N `HelloSequence` instances started as fast as accepted, then unloaded latency.
pub(crate) fn hello3(rest: &[String]) -> anyhow::Result<()> {
    let n = arg(rest, "--n", 10_000);
    let unloaded_n = arg(rest, "--unloaded", 200);
    let concurrency = arg(rest, "--concurrency", 256) as usize;
    let dir = tempfile::tempdir()?;
    runtime()?.block_on(async {
        let store = Arc::new(CountingStore::new(Arc::new(
            EmbeddedStore::open(dir.path()).context("open embedded store")?,
        )));
        let node = start_node_on(store.clone()).await?;
        let before = store.counts();
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut handles = Vec::with_capacity(n as usize);
        for i in 0..n {
            let permit = sem.clone().acquire_owned().await?;
            let node = node.clone();
            handles.push(tokio::spawn(async move {
                let mut req = StartRequest::new("HelloSequence");
                req.instance_id = Some(InstanceId::new(format!("h-{i}"))?);
                let started = Instant::now();
                let id = start(&node, req).await?;
                drop(permit);
                let st = node
                    .wait_for_completion(id, Duration::from_secs(600))
                    .await?
                    .context("instance vanished")?;
                anyhow::ensure!(st.runtime_status == OrchestrationStatus::Completed);
                Ok::<_, anyhow::Error>(started.elapsed())
            }));
            if (i + 1) % 1000 == 0 {
                eprintln!("hello3: started {} in {:.2?}", i + 1, t0.elapsed());
            }
        }
        let mut lat = Vec::with_capacity(handles.len());
        for h in handles {
            lat.push(h.await??);
        }
        let elapsed = t0.elapsed();
        let cpu = cpu_seconds() - cpu0;
        let written = store.counts();
        let per = |x: u64, y: u64| (x.saturating_sub(y)) as f64 / n.max(1) as f64;
        let (now, then) = (written.total(), before.total());
        let writes = json!({
            "commits": per(written.commits, before.commits),
            "keys_set": per(now.sets, then.sets),
            "bytes_set": per(now.bytes, then.bytes),
            "keys_cleared": per(now.clears, then.clears),
            "ranges_cleared": per(now.range_clears, then.range_clears),
            "by_keyspace": written.spaces.iter().map(|(k, w)| {
                let b = before.spaces.get(k).copied().unwrap_or_default();
                (k.clone(), json!({
                    "keys_set": per(w.sets, b.sets),
                    "bytes_set": per(w.bytes, b.bytes),
                    "keys_cleared": per(w.clears, b.clears),
                    "ranges_cleared": per(w.range_clears, b.range_clears),
                }))
            }).collect::<serde_json::Map<_, _>>(),
        });
        lat.sort();
        eprintln!(
            "hello3: {n} completed in {elapsed:.2?}, {:.0} µs of CPU per orchestration; \
             per orchestration: {writes}; measuring unloaded latency",
            cpu * 1e6 / n.max(1) as f64
        );
        let mut unloaded = Vec::with_capacity(unloaded_n as usize);
        for i in 0..unloaded_n {
            let mut req = StartRequest::new("HelloSequence");
            req.instance_id = Some(InstanceId::new(format!("u-{i}"))?);
            let t = Instant::now();
            let id = start(&node, req).await?;
            node.wait_for_completion(id, Duration::from_secs(60))
                .await?;
            unloaded.push(t.elapsed());
        }
        unloaded.sort();
        node.shutdown().await;
        let memory = Memory::now();
        eprintln!("hello3: {}", memory.describe());
        crate::measure::emit(json!({
            "scenario": "hello3",
            "rss_bytes": memory.rss,
            "peak_rss_bytes": memory.peak,
            "instances": n,
            "seconds": elapsed.as_secs_f64(),
            "orchestrations_per_sec": n as f64 / elapsed.as_secs_f64(),
            "latency_ms_p50": percentile_ms(&lat, 0.5),
            "latency_ms_p99": percentile_ms(&lat, 0.99),
            "unloaded_ms_p50": percentile_ms(&unloaded, 0.5),
            "unloaded_ms_p99": percentile_ms(&unloaded, 0.99),
            "cpu_us_per_orchestration": cpu * 1e6 / n.max(1) as f64,
            "written_per_orchestration": writes,
        }));
        Ok(())
    })
}

/// The bench's orchestrations beside the sample app's: `FanOutChain` (a fan-out of `n` per
/// execution over `executions` executions, through continue-as-new, returning the total) and
/// `FanOutThenWait` (a fan-out of `n`, then waits for the event `go`).
fn registry() -> perdure_core::registry::Registry {
    use perdure_core::orchestration::{OrchestrationContext, when_all};
    let mut r = perdure_node::sample::sample_registry();
    r.add_orchestration(
        "FanOutChain",
        |ctx: OrchestrationContext, (n, left, acc): (u64, u64, u64)| async move {
            let tasks = (1..=n).map(|i| ctx.call_activity::<u64>("Square", i));
            let mut sum = acc;
            for r in when_all(tasks).await {
                sum = sum.wrapping_add(r.map_err(|e| e.to_string())?);
            }
            if left > 1 {
                ctx.continue_as_new((n, left - 1, sum), false);
            }
            Ok::<_, String>(sum)
        },
    );
    r.add_orchestration(
        "FanOutThenWait",
        |ctx: OrchestrationContext, n: u64| async move {
            let tasks = (1..=n).map(|i| ctx.call_activity::<u64>("Square", i));
            let mut sum = 0u64;
            for r in when_all(tasks).await {
                sum = sum.wrapping_add(r.map_err(|e| e.to_string())?);
            }
            let _: bool = ctx
                .wait_for_external_event("go")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(sum)
        },
    );
    r
}

async fn start_fanout_node(store: Arc<EmbeddedStore>) -> anyhow::Result<NodeHandle> {
    let opts = NodeOptions {
        max_concurrent_activities: std::num::NonZeroUsize::new(256).context("nonzero")?,
        activity_queue_bound: std::num::NonZeroUsize::new(1 << 21).context("nonzero")?,
        ..NodeOptions::default()
    };
    Ok(Node::builder()
        .registry(Arc::new(registry()))
        .store(store)
        .options(opts)
        .start()
        .await?)
}

/// `fanout`: one orchestration with `--n` activities (`FanOutFanIn`), or, with
/// `--executions K`, `K` executions of `--n` each through continue-as-new (`FanOutChain`).
/// Prints activities/s and the peak memory above the node's idle memory per activity in
/// flight. With `--activate`, the orchestration then waits for an event, the node restarts,
/// and the time from raising the event to completion (load + replay of the whole history,
/// one episode) is measured too.
pub(crate) fn fanout(rest: &[String]) -> anyhow::Result<()> {
    let n = arg(rest, "--n", 10_000);
    let executions = arg(rest, "--executions", 1).max(1);
    let activate = rest.iter().any(|a| a == "--activate");
    let dir = tempfile::tempdir()?;
    runtime()?.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir.path()).context("open embedded store")?);
        let node = start_fanout_node(store.clone()).await?;
        let idle = Memory::now();
        let mut req = if activate {
            let mut r = StartRequest::new("FanOutThenWait");
            r.input = Some(Payload::json(&n)?);
            r
        } else if executions > 1 {
            let mut r = StartRequest::new("FanOutChain");
            r.input = Some(Payload::json(&(n, executions, 0u64))?);
            r
        } else {
            let mut r = StartRequest::new("FanOutFanIn");
            r.input = Some(Payload::json(&n)?);
            r
        };
        req.instance_id = Some(InstanceId::new("fanout-bench")?);
        let total = n * executions;
        let t0 = Instant::now();
        let id = start(&node, req).await?;
        let elapsed;
        let mut activation_ms = None;
        let mut history_events = None;
        let node = if activate {
            // Done when every result is in the history and the instance waits for `go`.
            let want = 2 * n as usize;
            loop {
                let h = node.get_history(id.clone()).await?.unwrap_or_default();
                let done = h.iter().filter(|e| e.name() == "TaskCompleted").count();
                if done >= n as usize {
                    elapsed = t0.elapsed();
                    history_events = Some(h.len());
                    break;
                }
                anyhow::ensure!(h.len() < want * 4, "unexpected history");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A new node on the same store: the instance is not in memory any more.
            node.shutdown().await;
            drop(node);
            let node = start_fanout_node(store.clone()).await?;
            let t = Instant::now();
            node.raise_event(id.clone(), "go".into(), Some(Payload::json(&true)?))
                .await?;
            let st = node
                .wait_for_completion(id.clone(), Duration::from_secs(3600))
                .await?
                .context("instance vanished")?;
            anyhow::ensure!(st.runtime_status == OrchestrationStatus::Completed);
            activation_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
            node
        } else {
            let st = node
                .wait_for_completion(id.clone(), Duration::from_secs(7200))
                .await?
                .context("instance vanished")?;
            elapsed = t0.elapsed();
            anyhow::ensure!(
                st.runtime_status == OrchestrationStatus::Completed,
                "fan-out ended {:?}: {:?}",
                st.runtime_status,
                st.failure
            );
            let sum: u64 = st.output.context("no output")?.decode()?;
            let one: u64 = (1..=n).map(|i| i.wrapping_mul(i)).fold(0, u64::wrapping_add);
            anyhow::ensure!(sum == one.wrapping_mul(executions), "wrong sum {sum}");
            node
        };
        let staged = node.metrics().staged_episodes.load(Ordering::Relaxed);
        node.shutdown().await;
        let memory = Memory::now();
        let per_task = memory.peak.saturating_sub(idle.rss) / n.max(1);
        eprintln!(
            "fanout: {total} activities ({executions} x {n}) in {elapsed:.2?}; {}; ~{per_task} B of peak memory per activity in flight",
            memory.describe()
        );
        if let Some(ms) = activation_ms {
            eprintln!("fanout: activation (load + replay of {history_events:?} events, one episode) {ms:.1} ms");
        }
        crate::measure::emit(json!({
            "scenario": "fanout",
            "rss_bytes": memory.rss,
            "peak_rss_bytes": memory.peak,
            "idle_rss_bytes": idle.rss,
            "peak_bytes_per_activity_in_flight": per_task,
            "activities": total,
            "executions": executions,
            "per_execution": n,
            "seconds": elapsed.as_secs_f64(),
            "activities_per_sec": total as f64 / elapsed.as_secs_f64(),
            "staged_episodes": staged,
            "activation_ms": activation_ms,
            "history_events": history_events,
        }));
        Ok(())
    })
}

/// `entity`: N signals to one `Counter` entity.
pub(crate) fn entity(rest: &[String]) -> anyhow::Result<()> {
    let n = arg(rest, "--n", 100_000);
    let concurrency = arg(rest, "--concurrency", 256) as usize;
    let dir = tempfile::tempdir()?;
    runtime()?.block_on(async {
        let node = start_node(dir.path()).await?;
        let counter = EntityId::new("Counter", "bench")?;
        let one = Payload::json(&1)?;
        let t0 = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut handles = Vec::new();
        for i in 0..n {
            let permit = sem.clone().acquire_owned().await?;
            let (node, counter, one) = (node.clone(), counter.clone(), one.clone());
            handles.push(tokio::spawn(async move {
                loop {
                    match node
                        .signal_entity(counter.clone(), "add".into(), Some(one.clone()), None)
                        .await
                    {
                        Ok(()) => break,
                        Err(ManagementError::Overloaded(_)) => tokio::task::yield_now().await,
                        Err(e) => return Err(anyhow::Error::from(e)),
                    }
                }
                drop(permit);
                Ok(())
            }));
            if (i + 1) % 10_000 == 0 {
                eprintln!("entity: {} signals sent in {:.2?}", i + 1, t0.elapsed());
            }
        }
        for h in handles {
            h.await??;
        }
        let sent = t0.elapsed();
        let m = node.metrics();
        // Benchmarks may poll: the counter of executed operations.
        while m.entity_operations.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = t0.elapsed();
        let state = node
            .get_entity(counter)
            .await?
            .and_then(|s| s.state)
            .context("no state")?;
        let value: u64 = state.decode()?;
        anyhow::ensure!(value == n, "counter is {value}, expected {n}");
        let batches = m.entity_batches.load(Ordering::Relaxed);
        node.shutdown().await;
        let memory = Memory::now();
        eprintln!("entity: {}", memory.describe());
        crate::measure::emit(json!({
            "scenario": "entity",
            "rss_bytes": memory.rss,
            "peak_rss_bytes": memory.peak,
            "signals": n,
            "seconds": elapsed.as_secs_f64(),
            "signals_per_sec": n as f64 / elapsed.as_secs_f64(),
            "send_seconds": sent.as_secs_f64(),
            "batches": batches,
        }));
        Ok(())
    })
}

/// `waiting`: N `Approval` orchestrations waiting for an event; RSS and bytes per instance
/// while they are in memory, then (with `--passivate-secs S`, the node's idle passivation)
/// once every instance has left memory.
pub(crate) fn waiting(rest: &[String]) -> anyhow::Result<()> {
    let n = arg(rest, "--n", 100_000);
    let concurrency = arg(rest, "--concurrency", 256) as usize;
    let passivate = arg(rest, "--passivate-secs", 0);
    let dir = tempfile::tempdir()?;
    runtime()?.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir.path()).context("open embedded store")?);
        let mut opts = NodeOptions::default();
        if passivate > 0 {
            opts.idle_passivation = Duration::from_secs(passivate);
        }
        let node = start_node_with(store, opts).await?;
        let before = Memory::now().rss;
        let input = Payload::json(&json!({"timeoutSeconds": 864_000}))?;
        let t0 = Instant::now();
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut handles = Vec::new();
        for i in 0..n {
            let permit = sem.clone().acquire_owned().await?;
            let (node, input) = (node.clone(), input.clone());
            handles.push(tokio::spawn(async move {
                let mut req = StartRequest::new("Approval");
                req.instance_id = Some(InstanceId::new(format!("w-{i}"))?);
                req.input = Some(input);
                start(&node, req).await?;
                drop(permit);
                Ok::<_, anyhow::Error>(())
            }));
            if (i + 1) % 10_000 == 0 {
                eprintln!("waiting: {} started in {:.2?}", i + 1, t0.elapsed());
            }
        }
        for h in handles {
            h.await??;
        }
        // Wait until every instance has run its first episode and waits.
        let m = node.metrics();
        while m.episodes.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let counts = node
            .count_instances(InstanceQuery {
                statuses: vec![OrchestrationStatus::Running],
                ..Default::default()
            })
            .await?;
        let running = counts
            .get(&OrchestrationStatus::Running)
            .copied()
            .unwrap_or(0);
        let memory = Memory::now();
        let after = memory.rss;
        let seconds_to_start = t0.elapsed().as_secs_f64();
        eprintln!("waiting: {running} running; RSS {} MiB", after >> 20);
        let mut passivated = serde_json::Value::Null;
        if passivate > 0 {
            let t1 = Instant::now();
            while m.active_instances.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Let the last sweeps' frees settle.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss = Memory::now().rss;
            eprintln!(
                "waiting: every instance passivated after {:.1?}; RSS {} MiB ({} armed timers)",
                t1.elapsed(),
                rss >> 20,
                m.armed_timers.load(Ordering::Relaxed)
            );
            passivated = json!({
                "rss_bytes": rss,
                "bytes_per_passivated_instance": rss.saturating_sub(before) as f64 / n as f64,
                "armed_timers": m.armed_timers.load(Ordering::Relaxed),
            });
        }
        node.shutdown().await;
        crate::measure::emit(json!({
            "scenario": "waiting",
            "instances": n,
            "running": running,
            "rss_bytes": after,
            "rss_before_bytes": before,
            "peak_rss_bytes": memory.peak,
            "bytes_per_waiting_instance": (after.saturating_sub(before)) as f64 / n as f64,
            "seconds_to_start": seconds_to_start,
            "passivated": passivated,
        }));
        Ok(())
    })
}
