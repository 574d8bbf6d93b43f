//! Scenario `store`: logical transactions per second for a write shaped like one
//! orchestration step, at 1, 8 and 64 concurrent writers, with p50/p99 latency.
//!
//! One step, in one transaction: read the instance record, append 2 history events, write
//! 1 inbox message, delete 1 inbox message (the one the step consumed). Each writer works on
//! its own instances, as a partition actor does, so steps do not conflict. Commits are
//! real: the embedded store syncs its journal (`fdatasync`, shared by concurrent commits),
//! PostgreSQL runs with its defaults (`fsync = on`, `synchronous_commit = on`).
//!
//! ```text
//! cargo run --release -p perdure-bench -- store [--backend embedded|postgres]
//!     [--writers 1,8,64] [--seconds 5] [--path DIR] [--url postgres://...]
//! ```
//! PostgreSQL's URL defaults to `PERDURE_BENCH_POSTGRES_URL`, then
//! `PERDURE_TEST_POSTGRES_URL`. Progress goes to stderr, one JSON summary line to stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use perdure_node::store::embedded::EmbeddedStore;
use perdure_node::store::postgres::PostgresStore;
use perdure_node::store::{RetryOptions, Store, StoreError, transact};

/// Instances per writer: steps cycle over them.
const INSTANCES_PER_WRITER: u64 = 64;
const RECORD_BYTES: usize = 256;
const EVENT_BYTES: usize = 160;
const MESSAGE_BYTES: usize = 128;

struct Args {
    backend: String,
    writers: Vec<usize>,
    seconds: f64,
    path: Option<String>,
    url: Option<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut out = Args {
        backend: "embedded".into(),
        writers: vec![1, 8, 64],
        seconds: 5.0,
        path: None,
        url: std::env::var("PERDURE_BENCH_POSTGRES_URL")
            .or_else(|_| std::env::var("PERDURE_TEST_POSTGRES_URL"))
            .ok(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => out.backend = value()?.clone(),
            "--writers" => {
                out.writers = value()?
                    .split(',')
                    .map(|w| w.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--writers takes a list like 1,8,64")?;
            }
            "--seconds" => out.seconds = value()?.parse().context("--seconds")?,
            "--path" => out.path = Some(value()?.clone()),
            "--url" => out.url = Some(value()?.clone()),
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    if out.writers.is_empty() || out.writers.contains(&0) {
        anyhow::bail!("--writers needs positive counts");
    }
    Ok(out)
}

fn instance_key(writer: usize, instance: u64) -> Vec<u8> {
    format!("inst/{writer:04}/{instance:06}").into_bytes()
}

fn history_key(writer: usize, instance: u64, seq: u64) -> Vec<u8> {
    format!("hist/{writer:04}/{instance:06}/{seq:010}").into_bytes()
}

fn inbox_key(writer: usize, instance: u64, seq: u64) -> Vec<u8> {
    format!("inbox/{writer:04}/{instance:06}/{seq:010}").into_bytes()
}

/// Writes every writer's instance records and one inbox message per instance.
async fn preload(store: &dyn Store, writers: usize) -> Result<(), StoreError> {
    for w in 0..writers {
        let mut tx = store.begin().await?;
        for i in 0..INSTANCES_PER_WRITER {
            tx.set(&instance_key(w, i), &[7; RECORD_BYTES])?;
            tx.set(&inbox_key(w, i, 0), &[1; MESSAGE_BYTES])?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// One writer: steps until `deadline`; returns each step's latency in microseconds.
async fn writer(
    store: Arc<dyn Store>,
    w: usize,
    start_step: u64,
    deadline: Instant,
) -> Result<(Vec<u32>, u64), StoreError> {
    let retry = RetryOptions::default();
    let mut latencies = Vec::with_capacity(100_000);
    let mut step = start_step;
    let mut conflicts = 0u64;
    while Instant::now() < deadline {
        let instance = step % INSTANCES_PER_WRITER;
        // Each instance's n-th step consumes message n and writes message n+1.
        let n = step / INSTANCES_PER_WRITER;
        let started = Instant::now();
        let mut attempts = 0u64;
        transact(&*store, &retry, |tx| {
            attempts += 1;
            Box::pin(async move {
                let record = tx.get(&instance_key(w, instance)).await?;
                debug_assert!(record.is_some());
                tx.set(&history_key(w, instance, 2 * n), &[2; EVENT_BYTES])?;
                tx.set(&history_key(w, instance, 2 * n + 1), &[3; EVENT_BYTES])?;
                tx.set(&inbox_key(w, instance, n + 1), &[4; MESSAGE_BYTES])?;
                tx.clear(&inbox_key(w, instance, n));
                Ok(())
            })
        })
        .await?;
        conflicts += attempts.saturating_sub(1);
        let micros = started.elapsed().as_micros();
        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
        step += 1;
    }
    Ok((latencies, conflicts))
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
        .unwrap_or(0)
}

async fn open(
    args: &Args,
    max_writers: usize,
) -> anyhow::Result<(Arc<dyn Store>, Option<tempfile::TempDir>)> {
    match args.backend.as_str() {
        "embedded" => {
            let (path, guard) = match &args.path {
                Some(p) => (std::path::PathBuf::from(p), None),
                None => {
                    let dir = tempfile::tempdir().context("temp dir")?;
                    (dir.path().to_path_buf(), Some(dir))
                }
            };
            eprintln!("store: embedded store at {}", path.display());
            Ok((Arc::new(EmbeddedStore::open(&path)?), guard))
        }
        "postgres" => {
            let url = args.url.clone().context(
                "postgres needs --url or PERDURE_BENCH_POSTGRES_URL (see .ci/postgres.sh)",
            )?;
            let table = format!("kv_bench_{}", std::process::id());
            eprintln!("store: PostgreSQL table {table}");
            let store = PostgresStore::connect_with_table(&url, max_writers.max(1), &table).await?;
            Ok((Arc::new(store), None))
        }
        other => anyhow::bail!("unknown backend {other:?} (embedded or postgres)"),
    }
}

/// Runs the scenario with the arguments after `store`.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<()> {
    let max_writers = args.writers.iter().copied().max().unwrap_or(1);
    let (store, _dir) = open(&args, max_writers).await?;
    preload(&*store, max_writers).await?;
    let mut results = Vec::new();
    // Steps already taken per writer, so every level continues the same instances' histories.
    let mut taken = vec![0u64; max_writers];
    for &writers in &args.writers {
        // Warm up briefly, then measure.
        for (phase, seconds) in [
            ("warm-up", 0.5f64.min(args.seconds)),
            ("measure", args.seconds),
        ] {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let started = Instant::now();
            let mut handles = Vec::new();
            for w in 0..writers {
                let store = store.clone();
                let from = taken.get(w).copied().unwrap_or(0);
                handles.push(tokio::spawn(writer(store, w, from, deadline)));
            }
            let mut latencies = Vec::new();
            let mut conflicts = 0;
            for (w, handle) in handles.into_iter().enumerate() {
                let (l, c) = handle.await??;
                if let Some(t) = taken.get_mut(w) {
                    *t += l.len() as u64;
                }
                latencies.extend(l);
                conflicts += c;
            }
            let elapsed = started.elapsed().as_secs_f64();
            if phase == "warm-up" {
                continue;
            }
            latencies.sort_unstable();
            let count = latencies.len();
            let tps = count as f64 / elapsed;
            let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
            eprintln!(
                "store [{}] writers={writers:>3}: {tps:>9.0} tx/s  p50={p50} µs  p99={p99} µs  \
                 ({count} steps in {elapsed:.1} s, {conflicts} conflicts)",
                store.backend_name()
            );
            results.push(serde_json::json!({
                "writers": writers,
                "tx_per_s": tps.round(),
                "p50_us": p50,
                "p99_us": p99,
                "steps": count,
                "conflicts": conflicts,
            }));
        }
    }
    if args.backend == "postgres"
        && let Some(url) = &args.url
    {
        let table = format!("kv_bench_{}", std::process::id());
        PostgresStore::connect(url, 1)
            .await?
            .drop_table(&table)
            .await?;
    }
    let memory = crate::measure::Memory::now();
    eprintln!("store: {}", memory.describe());
    crate::measure::emit(serde_json::json!({
        "scenario": "store",
        "backend": store.backend_name(),
        "step": "read record + 2 history appends + 1 inbox write + 1 inbox delete",
        "results": results,
        "rss_bytes": memory.rss,
        "peak_rss_bytes": memory.peak,
    }));
    Ok(())
}
