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

use crate::measure::{Memory, arg, percentile_ms};

async fn start_node(dir: &std::path::Path) -> anyhow::Result<NodeHandle> {
    let store = Arc::new(EmbeddedStore::open(dir).context("open embedded store")?);
    let opts = NodeOptions {
        max_concurrent_activities: std::num::NonZeroUsize::new(256).context("nonzero")?,
        ..NodeOptions::default()
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
        let node = start_node(dir.path()).await?;
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
        lat.sort();
        eprintln!("hello3: {n} completed in {elapsed:.2?}; measuring unloaded latency");
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
        }));
        Ok(())
    })
}

/// `fanout`: one `FanOutFanIn` orchestration with N activities.
pub(crate) fn fanout(rest: &[String]) -> anyhow::Result<()> {
    let n = arg(rest, "--n", 10_000);
    let dir = tempfile::tempdir()?;
    runtime()?.block_on(async {
        let node = start_node(dir.path()).await?;
        let mut req = StartRequest::new("FanOutFanIn");
        req.input = Some(Payload::json(&n)?);
        let t0 = Instant::now();
        let id = start(&node, req).await?;
        let st = node
            .wait_for_completion(id, Duration::from_secs(3600))
            .await?
            .context("instance vanished")?;
        let elapsed = t0.elapsed();
        anyhow::ensure!(
            st.runtime_status == OrchestrationStatus::Completed,
            "fan-out ended {:?}",
            st.runtime_status
        );
        eprintln!("fanout: {n} activities in {elapsed:.2?}");
        node.shutdown().await;
        let memory = Memory::now();
        eprintln!("fanout: {}", memory.describe());
        crate::measure::emit(json!({
            "scenario": "fanout",
            "rss_bytes": memory.rss,
            "peak_rss_bytes": memory.peak,
            "activities": n,
            "seconds": elapsed.as_secs_f64(),
            "activities_per_sec": n as f64 / elapsed.as_secs_f64(),
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

/// `waiting`: N `Approval` orchestrations waiting for an event; RSS and bytes per instance.
pub(crate) fn waiting(rest: &[String]) -> anyhow::Result<()> {
    let n = arg(rest, "--n", 100_000);
    let concurrency = arg(rest, "--concurrency", 256) as usize;
    let dir = tempfile::tempdir()?;
    runtime()?.block_on(async {
        let node = start_node(dir.path()).await?;
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
        eprintln!("waiting: {running} running; RSS {} MiB", after >> 20);
        node.shutdown().await;
        crate::measure::emit(json!({
            "scenario": "waiting",
            "instances": n,
            "running": running,
            "rss_bytes": after,
            "rss_before_bytes": before,
            "peak_rss_bytes": memory.peak,
            "bytes_per_waiting_instance": (after.saturating_sub(before)) as f64 / n as f64,
            "seconds_to_start": t0.elapsed().as_secs_f64(),
        }));
        Ok(())
    })
}
