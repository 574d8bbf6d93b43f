//! Property tests of the replay engine: for generated orchestrations and event orders,
//! replaying any prefix of the history and then running the rest gives the same episodes as
//! one uninterrupted run, and how events are batched into episodes does not change the
//! actions or the outcome.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use perdure_core::orchestration::{Either, OrchestrationContext, TaskError, when_all, when_any2};
use perdure_core::replay::{Episode, OrchestrationExecutor, Outcome};
use perdure_core::testing::events;
use perdure_core::{
    EntityId, FailureDetails, HistoryEvent, InstanceId, OrchestratorAction, Payload, Registry,
    RetryPolicy, Timestamp,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Step {
    Activity(u8),
    Timer(u16),
    Event(u8),
    FanOut(u8),
    Race(u8),
    Fail,
    Guid,
    Status,
    Sub(u8),
    Entity(u8),
    Signal,
    Locked,
    Retry,
    /// `wait_for_external_event_with_timeout`: events 0 and 1 are raised, 2 never is.
    EventOrTimeout(u8),
    /// `when_any!` of an activity, a timer and an event wait that never completes.
    AnyOf(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..3).prop_map(Step::Activity),
        (1u16..5000).prop_map(Step::Timer),
        (0u8..2).prop_map(Step::Event),
        (1u8..6).prop_map(Step::FanOut),
        (0u8..3).prop_map(Step::Race),
        Just(Step::Fail),
        Just(Step::Guid),
        Just(Step::Status),
        (0u8..3).prop_map(Step::Sub),
        (0u8..3).prop_map(Step::Entity),
        Just(Step::Signal),
        Just(Step::Locked),
        Just(Step::Retry),
        (0u8..3).prop_map(Step::EventOrTimeout),
        (0u8..3).prop_map(Step::AnyOf),
    ]
}

fn counter(key: &str) -> EntityId {
    EntityId::new("Counter", key).unwrap()
}

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration(
        "Script",
        |ctx: OrchestrationContext, steps: Vec<Step>| async move {
            let mut acc: Vec<i64> = Vec::new();
            for s in steps {
                match s {
                    Step::Activity(n) => {
                        acc.push(ctx.call_activity(&format!("A{n}"), acc.len()).await?)
                    }
                    Step::Timer(ms) => {
                        ctx.create_timer_after(Duration::from_millis(u64::from(ms)))
                            .await
                    }
                    Step::Event(n) => {
                        acc.push(ctx.wait_for_external_event(&format!("E{n}")).await?)
                    }
                    Step::FanOut(n) => {
                        let tasks = (0..n).map(|i| ctx.call_activity::<i64>("A0", i));
                        let mut sum = 0;
                        for r in when_all(tasks).await {
                            sum += r?;
                        }
                        acc.push(sum);
                    }
                    Step::Race(n) => {
                        let a = ctx.call_activity::<i64>(&format!("A{n}"), 7);
                        let t = ctx.create_timer_after(Duration::from_millis(10));
                        acc.push(match when_any2(a, t).await {
                            Either::Left(v) => v?,
                            Either::Right(()) => -2,
                        });
                    }
                    Step::Fail => {
                        acc.push(ctx.call_activity::<i64>("Fail", ()).await.unwrap_or(-1))
                    }
                    Step::Guid => {
                        acc.push(ctx.new_guid().len() as i64 + (ctx.random_u64() % 7) as i64)
                    }
                    Step::Status => ctx.set_custom_status(&acc.len()),
                    Step::Sub(n) => acc.push(
                        ctx.call_sub_orchestration(&format!("S{n}"), acc.len())
                            .await?,
                    ),
                    Step::Entity(n) => acc.push(
                        ctx.call_entity(&counter(&format!("k{n}")), "add", acc.len())
                            .await?,
                    ),
                    Step::Signal => ctx.signal_entity(&counter("s"), "add", 1)?,
                    Step::Locked => {
                        let section = ctx.lock_entities(&[counter("l1"), counter("l0")]).await?;
                        let a: i64 = ctx.call_entity(&counter("l0"), "get", ()).await?;
                        let b: i64 = ctx.call_entity(&counter("l1"), "add", a).await?;
                        section.release();
                        acc.push(b);
                    }
                    Step::Retry => {
                        let policy = RetryPolicy::new(3, Duration::from_millis(20))
                            .with_backoff_coefficient(2.0);
                        acc.push(
                            ctx.call_activity_with_retry::<i64>("Fail", policy, ())
                                .await
                                .unwrap_or(-3),
                        )
                    }
                    Step::EventOrTimeout(n) => acc.push(
                        match ctx
                            .wait_for_external_event_with_timeout::<i64>(
                                &format!("E{n}"),
                                Duration::from_millis(10),
                            )
                            .await
                        {
                            Err(e) if e.is_timeout() => -4,
                            other => other?,
                        },
                    ),
                    Step::AnyOf(n) => acc.push(perdure_core::when_any! {
                        v = ctx.call_activity::<i64>(&format!("A{n}"), 5) => v?,
                        () = ctx.create_timer_after(Duration::from_millis(10)) => -5,
                        v = ctx.wait_for_external_event::<i64>("Never") => v?,
                    }),
                }
            }
            Ok::<_, TaskError>(acc)
        },
    );
    Arc::new(r)
}

/// The environment's answer to an action, if any.
fn respond(action: &OrchestratorAction) -> Option<HistoryEvent> {
    match action {
        OrchestratorAction::ScheduleTask {
            id, name, input, ..
        } if name == "Fail" => {
            let _ = input;
            Some(events::task_failed(
                *id,
                FailureDetails::new("Boom", "always"),
            ))
        }
        OrchestratorAction::ScheduleTask {
            id, name, input, ..
        } => {
            let x: i64 = input.as_ref().map_or(0, |p| p.decode().unwrap_or(0));
            let k = i64::from(name.as_bytes().last().copied().unwrap_or(0));
            Some(events::task_completed(*id, &(x * 3 + k)))
        }
        OrchestratorAction::CreateTimer { id, fire_at } => Some(events::timer_fired(*id, *fire_at)),
        OrchestratorAction::CreateSubOrchestration { id, input, .. } => {
            let x: i64 = input.as_ref().map_or(0, |p| p.decode().unwrap_or(0));
            Some(events::sub_orchestration_completed(*id, &(x + 1000)))
        }
        OrchestratorAction::CallEntity {
            id, entity, input, ..
        } => {
            let x: i64 = input.as_ref().map_or(0, |p| p.decode().unwrap_or(0));
            Some(events::entity_operation_completed(
                *id,
                &(x + entity.key().len() as i64),
            ))
        }
        OrchestratorAction::LockEntities {
            critical_section_id,
            ..
        } => Some(events::lock_granted(critical_section_id)),
        _ => None,
    }
}

struct Run {
    /// (time, new events) of each episode.
    inputs: Vec<(Timestamp, Vec<HistoryEvent>)>,
    episodes: Vec<Episode>,
}

/// Runs the script to the end, delivering `batch[i % len]` events per episode.
fn run(steps: &[Step], batch: &[usize], clock: bool) -> Run {
    let id = InstanceId::new("p").unwrap();
    let mut ex = OrchestrationExecutor::new(registry(), id);
    let mut queue: VecDeque<HistoryEvent> = VecDeque::new();
    // External events are raised up front: they are buffered until waited for.
    for s in steps {
        match s {
            Step::Event(n) | Step::EventOrTimeout(n @ 0..2) => {
                queue.push_back(events::event_raised(&format!("E{n}"), &i64::from(*n + 100)));
            }
            _ => {}
        }
    }
    let mut inputs = Vec::new();
    let mut episodes = Vec::new();
    let mut new_events = vec![events::execution_started("Script", steps)];
    for i in 0..10_000usize {
        let now = Timestamp(if clock { 1000 + i as u64 * 100 } else { 1000 });
        inputs.push((now, new_events.clone()));
        let ep = ex.execute(now, std::mem::take(&mut new_events));
        queue.extend(ep.actions.iter().filter_map(respond));
        let done = ep.outcome.is_finished();
        episodes.push(ep);
        if done || queue.is_empty() {
            break;
        }
        let n = batch[i % batch.len()].max(1);
        for _ in 0..n {
            if let Some(e) = queue.pop_front() {
                new_events.push(e);
            }
        }
    }
    Run { inputs, episodes }
}

fn history(episodes: &[Episode]) -> Vec<HistoryEvent> {
    episodes
        .iter()
        .flat_map(|e| e.history.iter().cloned())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn replaying_any_prefix_then_the_rest_equals_one_run(
        steps in prop::collection::vec(step(), 0..12),
        batch in prop::collection::vec(1usize..4, 1..4),
        split in any::<prop::sample::Index>(),
    ) {
        let reference = run(&steps, &batch, true);
        let k = split.index(reference.episodes.len() + 1);
        let prefix = history(&reference.episodes[..k]);
        let mut ex = OrchestrationExecutor::load(registry(), InstanceId::new("p").unwrap(), &prefix).unwrap();
        prop_assert!(ex.non_determinism().is_none());
        for (i, (now, new_events)) in reference.inputs.iter().enumerate().skip(k) {
            let ep = ex.execute(*now, new_events.clone());
            prop_assert_eq!(&ep.history, &reference.episodes[i].history);
            prop_assert_eq!(&ep.actions, &reference.episodes[i].actions);
            prop_assert_eq!(&ep.outcome, &reference.episodes[i].outcome);
            prop_assert_eq!(&ep.custom_status, &reference.episodes[i].custom_status);
        }
        // The full history replays cleanly to the same end state.
        let full = history(&reference.episodes);
        let loaded = OrchestrationExecutor::load(registry(), InstanceId::new("p").unwrap(), &full).unwrap();
        prop_assert!(loaded.non_determinism().is_none());
        prop_assert_eq!(loaded.outcome(), reference.episodes.last().unwrap().outcome.clone());
    }

    #[test]
    fn batching_does_not_change_actions_or_outcome(
        steps in prop::collection::vec(step(), 0..12),
        batch_a in prop::collection::vec(1usize..5, 1..4),
        batch_b in prop::collection::vec(1usize..5, 1..4),
    ) {
        let a = run(&steps, &batch_a, false);
        let b = run(&steps, &batch_b, false);
        let actions = |r: &Run| {
            let mut all: Vec<OrchestratorAction> = r.episodes.iter().flat_map(|e| e.actions.clone()).collect();
            all.sort_by_key(OrchestratorAction::id);
            all
        };
        prop_assert_eq!(actions(&a), actions(&b));
        let (oa, ob) = (&a.episodes.last().unwrap().outcome, &b.episodes.last().unwrap().outcome);
        prop_assert_eq!(oa, ob);
        prop_assert!(matches!(oa, Outcome::Completed { .. }), "{:?}", oa);
    }
}

#[test]
fn completed_output_is_reproducible() {
    let steps = vec![
        Step::Activity(1),
        Step::FanOut(3),
        Step::Event(0),
        Step::Race(2),
        Step::Fail,
        Step::Guid,
    ];
    let a = run(&steps, &[1], true);
    let b = run(&steps, &[3], true);
    let out = |r: &Run| match &r.episodes.last().unwrap().outcome {
        Outcome::Completed { output } => output.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        out(&a)
            .and_then(|p: Payload| p.decode::<Vec<i64>>().ok())
            .map(|v| v.len()),
        Some(6)
    );
    assert_eq!(out(&a), out(&b));
    assert_ne!(
        a.episodes.len(),
        b.episodes.len(),
        "different batching, same result"
    );
}
