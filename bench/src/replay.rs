//! Scenario `replay`: the replay engine's cost.
//!
//! - full replay: `OrchestrationExecutor::load` of a 10,000-event history (a chain of 2,500
//!   activities, one per episode: OrchestratorStarted, TaskCompleted, TaskScheduled,
//!   OrchestratorCompleted), target < 20 ms;
//! - incremental episode: `execute` of one TaskCompleted on a loaded 3-activity chain (it
//!   schedules the next activity), target < 20 µs. Measured as single-threaded wall time
//!   over many iterations, which on an idle core is CPU time.
//!
//! - fan-out replay: a when_all over 5,000 activities (`FAN=n` to change), to show replay
//!   stays linear in the number of tasks.
//!
//! Run: `cargo run --release -p perdure-bench -- replay`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::events;
use perdure_core::{HistoryEvent, InstanceId, Registry, Timestamp};

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration("Chain", |ctx: OrchestrationContext, n: i64| async move {
        let mut x = 0i64;
        for _ in 0..n {
            x = ctx.call_activity("Step", x).await?;
        }
        Ok::<_, TaskError>(x)
    });
    r.add_orchestration("FanOut", |ctx: OrchestrationContext, n: i64| async move {
        let tasks = (0..n).map(|i| ctx.call_activity::<i64>("Step", i));
        let mut sum = 0;
        for r in perdure_core::when_all(tasks).await {
            sum += r?;
        }
        Ok::<_, TaskError>(sum)
    });
    Arc::new(r)
}

/// A fan-out of `n` activities whose results arrive one per episode.
fn fan_out_history(registry: &Arc<Registry>, n: i64) -> anyhow::Result<Vec<HistoryEvent>> {
    let mut ex = OrchestrationExecutor::new(registry.clone(), InstanceId::new("bench")?);
    let mut history = ex
        .execute(Timestamp(0), vec![events::execution_started("FanOut", &n)])
        .history;
    for seq in 0..n {
        history.extend(
            ex.execute(Timestamp(1), vec![events::task_completed(seq, &seq)])
                .history,
        );
    }
    Ok(history)
}

/// Runs a chain of `n` activities episode by episode; returns the history.
fn chain_history(
    registry: &Arc<Registry>,
    n: i64,
    episodes: usize,
) -> anyhow::Result<Vec<HistoryEvent>> {
    let id = InstanceId::new("bench")?;
    let mut ex = OrchestrationExecutor::new(registry.clone(), id);
    let mut history = ex
        .execute(Timestamp(0), vec![events::execution_started("Chain", &n)])
        .history;
    for seq in 0..episodes as i64 {
        let ep = ex.execute(
            Timestamp(seq as u64 + 1),
            vec![events::task_completed(seq, &(seq + 1))],
        );
        history.extend(ep.history);
        if ep.outcome != Outcome::Running {
            break;
        }
    }
    Ok(history)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn run(_args: &[String]) -> anyhow::Result<()> {
    let registry = registry();
    let id = InstanceId::new("bench")?;

    // Full replay of a 10,000-event history.
    let history = chain_history(&registry, 100_000, 2_499)?;
    let events = history.len();
    let mut samples = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let ex = OrchestrationExecutor::load(registry.clone(), id.clone(), &history)?;
        samples.push(t.elapsed());
        anyhow::ensure!(
            ex.non_determinism().is_none(),
            "benchmark history must replay"
        );
        anyhow::ensure!(
            ex.history_len() == events && !ex.is_finished(),
            "replayed to the end"
        );
    }
    // The replayed instance continues where the history ends.
    let mut ex = OrchestrationExecutor::load(registry.clone(), id.clone(), &history)?;
    let ep = ex.execute(
        Timestamp(1 << 40),
        vec![events::task_completed(2_499, &2_500)],
    );
    anyhow::ensure!(
        matches!(
            ep.actions.as_slice(),
            [perdure_core::OrchestratorAction::ScheduleTask { id: 2_500, .. }]
        ),
        "replayed instance schedules the next activity"
    );
    let full = median(samples);
    println!(
        "full replay: {events} events in {:.3} ms (median of 30)",
        full.as_secs_f64() * 1e3
    );

    // Fan-out: replay must stay linear in the number of tasks.
    let fan_n: i64 = std::env::var("FAN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let fan = fan_out_history(&registry, fan_n)?;
    let mut samples = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let ex = OrchestrationExecutor::load(registry.clone(), id.clone(), &fan)?;
        samples.push(t.elapsed());
        anyhow::ensure!(ex.is_finished(), "fan-out completes");
    }
    let fan_time = median(samples);
    println!(
        "fan-out replay: {fan_n} activities, {} events in {:.3} ms (median of 10)",
        fan.len(),
        fan_time.as_secs_f64() * 1e3
    );

    // Incremental episode of a 3-activity chain: deliver TaskCompleted(0).
    let prefix = chain_history(&registry, 3, 0)?;
    let rounds = 20;
    let batch = 1_000;
    let mut per_episode = Vec::new();
    for _ in 0..rounds {
        let mut executors = (0..batch)
            .map(|_| OrchestrationExecutor::load(registry.clone(), id.clone(), &prefix))
            .collect::<Result<Vec<_>, _>>()?;
        let completed = events::task_completed(0, &1);
        let t = Instant::now();
        for ex in &mut executors {
            let ep = ex.execute(Timestamp(10), vec![completed.clone()]);
            std::hint::black_box(&ep);
        }
        per_episode.push(t.elapsed() / batch);
        drop(executors);
    }
    let incremental = median(per_episode);
    println!(
        "incremental episode (3-activity chain, 1 new event): {:.2} µs (median of {rounds} x {batch})",
        incremental.as_secs_f64() * 1e6
    );

    let full_ms = full.as_secs_f64() * 1e3;
    let inc_us = incremental.as_secs_f64() * 1e6;
    let summary = serde_json::json!({
        "scenario": "replay",
        "full_replay_events": events,
        "full_replay_ms": (full_ms * 1000.0).round() / 1000.0,
        "full_replay_target_ms": 20,
        "fan_out_replay_events": fan.len(),
        "fan_out_replay_ms": (fan_time.as_secs_f64() * 1e6).round() / 1000.0,
        "incremental_episode_us": (inc_us * 100.0).round() / 100.0,
        "incremental_episode_target_us": 20,
        "pass": full_ms < 20.0 && inc_us < 20.0,
    });
    crate::measure::emit(summary);
    Ok(())
}
