//! Plain `futures` combinators inside orchestrators (`join!`, `join_all`, `select_biased!`,
//! `FuturesUnordered`) stay deterministic: for any order in which the environment answers,
//! replaying any prefix of the recorded history and then running the rest gives exactly the
//! episodes of one uninterrupted run, and the recorded history replays without mismatch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::{FutureExt, join, select_biased};
use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::replay::{Episode, OrchestrationExecutor, Outcome};
use perdure_core::testing::{OrchestrationTester, events, replay_history};
use perdure_core::{HistoryEvent, InstanceId, OrchestratorAction, Registry, Timestamp};
use proptest::prelude::*;

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration(
        "Combinators",
        |ctx: OrchestrationContext, n: i64| async move {
            let mut trace: Vec<String> = Vec::new();
            // join!: three different kinds of durable task at once.
            let (a, b, ()) = join!(
                ctx.call_activity::<i64>("Double", n),
                ctx.call_activity::<i64>("Double", n + 1),
                ctx.create_timer_after(Duration::from_secs(5)),
            );
            trace.push(format!("join {} {}", a?, b?));
            // join_all: a fan-out, results in call order whatever the completion order.
            let all =
                futures::future::join_all((0..4).map(|i| ctx.call_activity::<i64>("Double", i)))
                    .await
                    .into_iter()
                    .collect::<Result<Vec<i64>, TaskError>>()?;
            trace.push(format!("join_all {all:?}"));
            // FuturesUnordered: results in completion order, which history fixes.
            let mut unordered: FuturesUnordered<_> = (10..13)
                .map(|i| ctx.call_activity::<i64>("Double", i))
                .collect();
            let mut order = Vec::new();
            while let Some(r) = unordered.next().await {
                order.push(r?);
            }
            trace.push(format!("unordered {order:?}"));
            // select_biased!: an activity raced against a timer and an external event.
            let mut work = ctx.call_activity::<i64>("Double", 100).fuse();
            let mut timeout = ctx.create_timer_after(Duration::from_secs(60)).fuse();
            let mut cancel = ctx.wait_for_external_event::<String>("Cancel").fuse();
            let raced = select_biased! {
                r = work => format!("work {}", r?),
                r = cancel => format!("cancel {}", r?),
                () = timeout => "timeout".to_string(),
            };
            trace.push(format!("select {raced}"));
            ctx.set_custom_status(&trace.len());
            Ok::<_, TaskError>(trace)
        },
    );
    r.add_activity(
        "Double",
        |_ctx, x: i64| async move { Ok::<_, String>(x * 2) },
    );
    Arc::new(r)
}

/// The environment's answer to an action.
fn respond(action: &OrchestratorAction) -> Option<HistoryEvent> {
    match action {
        OrchestratorAction::ScheduleTask { id, input, .. } => {
            let x: i64 = input.as_ref().and_then(|p| p.decode().ok()).unwrap_or(0);
            Some(events::task_completed(*id, &(x * 2)))
        }
        OrchestratorAction::CreateTimer { id, fire_at } => Some(events::timer_fired(*id, *fire_at)),
        _ => None,
    }
}

struct Run {
    inputs: Vec<(Timestamp, Vec<HistoryEvent>)>,
    episodes: Vec<Episode>,
}

/// Runs to the end. `order` picks, per delivered event, whether the oldest (`false`) or the
/// newest (`true`) pending answer arrives next; `batch` how many arrive per episode.
fn run(order: &[bool], batch: usize, cancel_first: bool) -> Run {
    let mut ex = OrchestrationExecutor::new(registry(), InstanceId::new("f").unwrap());
    let mut pending: VecDeque<HistoryEvent> = VecDeque::new();
    if cancel_first {
        pending.push_back(events::event_raised("Cancel", "stop"));
    }
    let mut new_events = vec![events::execution_started("Combinators", &1)];
    let (mut inputs, mut episodes) = (Vec::new(), Vec::new());
    let mut picks = order.iter().cycle();
    for i in 0..1000u64 {
        let now = Timestamp(1_000 + i * 1_000);
        inputs.push((now, new_events.clone()));
        let ep = ex.execute(now, std::mem::take(&mut new_events));
        pending.extend(ep.actions.iter().filter_map(respond));
        let done = ep.outcome.is_finished();
        episodes.push(ep);
        if done || pending.is_empty() {
            break;
        }
        for _ in 0..batch.max(1) {
            let newest = picks.next().copied().unwrap_or(false);
            let next = if newest {
                pending.pop_back()
            } else {
                pending.pop_front()
            };
            new_events.extend(next);
        }
    }
    Run { inputs, episodes }
}

fn history(episodes: &[Episode]) -> Vec<HistoryEvent> {
    episodes.iter().flat_map(|e| e.history.clone()).collect()
}

fn output(run: &Run) -> Vec<String> {
    match &run.episodes.last().unwrap().outcome {
        Outcome::Completed { output: Some(p) } => p.decode().unwrap(),
        other => panic!("not completed: {other:?}"),
    }
}

/// Replays every prefix (cut at every episode boundary) and runs the rest.
fn assert_replays_from_every_prefix(reference: &Run) -> Result<(), TestCaseError> {
    for k in 0..=reference.episodes.len() {
        let prefix = history(&reference.episodes[..k]);
        let mut ex =
            OrchestrationExecutor::load(registry(), InstanceId::new("f").unwrap(), &prefix)
                .unwrap();
        prop_assert!(ex.non_determinism().is_none(), "prefix {}", k);
        for (i, (now, new_events)) in reference.inputs.iter().enumerate().skip(k) {
            let ep = ex.execute(*now, new_events.clone());
            let want = &reference.episodes[i];
            prop_assert_eq!(&ep.history, &want.history, "prefix {} episode {}", k, i);
            prop_assert_eq!(&ep.actions, &want.actions);
            prop_assert_eq!(&ep.outcome, &want.outcome);
            prop_assert_eq!(&ep.custom_status, &want.custom_status);
        }
    }
    Ok(())
}

#[test]
fn combinators_give_the_expected_results() {
    let run = run(&[false], 1, false);
    assert_eq!(
        output(&run),
        [
            "join 2 4",
            "join_all [0, 2, 4, 6]",
            "unordered [20, 22, 24]",
            "select work 200",
        ]
    );
    // The first episode schedules the three joined tasks at once.
    assert_eq!(run.episodes[0].actions.len(), 3);
    assert_replays_from_every_prefix(&run).unwrap();
}

#[test]
fn completion_order_decides_and_history_remembers_it() {
    // Newest answer first: FuturesUnordered sees the tasks complete in reverse.
    let reversed = run(&[true], 1, false);
    assert_eq!(output(&reversed)[2], "unordered [24, 22, 20]");
    assert_replays_from_every_prefix(&reversed).unwrap();
    // An event buffered before the race is ready at the select's first poll, when the
    // activity has not completed yet: the event wins, and history makes that stick.
    let cancelled = run(&[false], 1, true);
    assert_eq!(output(&cancelled)[3], "select cancel stop");
    assert_replays_from_every_prefix(&cancelled).unwrap();
}

#[test]
fn tester_run_replays_cleanly() {
    let registry = registry();
    let run = OrchestrationTester::new(registry.clone()).run("Combinators", &1);
    assert_eq!(run.output::<Vec<String>>().unwrap().len(), 4);
    replay_history(registry, InstanceId::new("test").unwrap(), &run.history).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn any_answer_order_replays_identically_from_any_prefix(
        order in prop::collection::vec(any::<bool>(), 1..8),
        batch in 1usize..4,
        cancel_first in any::<bool>(),
    ) {
        let reference = run(&order, batch, cancel_first);
        let finished = matches!(
            reference.episodes.last().unwrap().outcome,
            Outcome::Completed { .. }
        );
        prop_assert!(finished);
        assert_replays_from_every_prefix(&reference)?;
        // Running it again gives the same run: nothing depends on anything but the events.
        let again = run(&order, batch, cancel_first);
        prop_assert_eq!(history(&again.episodes), history(&reference.episodes));
    }
}
