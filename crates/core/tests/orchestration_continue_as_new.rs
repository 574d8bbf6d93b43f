//! continue_as_new, with and without carrying unprocessed events.

use std::sync::Arc;

use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::{OrchestrationTester, events};
use perdure_core::{EventKind, InstanceId, Payload, Registry, Timestamp};

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    for (name, preserve) in [("Sum", true), ("SumDropping", false)] {
        r.add_orchestration(
            name,
            move |ctx: OrchestrationContext, total: i32| async move {
                let v: i32 = ctx.wait_for_external_event("add").await?;
                if total + v >= 100 {
                    return Ok::<_, TaskError>(total + v);
                }
                ctx.continue_as_new(total + v, preserve);
                Ok(0)
            },
        );
    }
    r.add_orchestration(
        "Generations",
        |ctx: OrchestrationContext, n: u32| async move {
            if n < 5 {
                ctx.continue_as_new(n + 1, false);
            }
            Ok::<_, String>(n)
        },
    );
    Arc::new(r)
}

#[test]
fn unprocessed_events_are_carried() {
    let id = InstanceId::new("i").unwrap();
    let mut ex = OrchestrationExecutor::new(registry(), id.clone());
    ex.execute(Timestamp(1), vec![events::execution_started("Sum", &0)]);
    let ep = ex.execute(
        Timestamp(2),
        vec![
            events::event_raised("add", &1),
            events::event_raised("add", &2),
            events::event_raised("add", &3),
        ],
    );
    let Outcome::ContinuedAsNew {
        input,
        carried_events,
    } = ep.outcome
    else {
        panic!("expected continue-as-new, got {:?}", ep.outcome);
    };
    assert_eq!(input, Some(Payload::json(&1).unwrap()));
    let carried: Vec<i32> = carried_events
        .iter()
        .map(|e| match &e.kind {
            EventKind::EventRaised { input, .. } => input.as_ref().unwrap().decode().unwrap(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(carried, vec![2, 3]);
    assert!(matches!(
        ep.history.iter().rev().nth(1).map(|e| &e.kind),
        Some(EventKind::ContinueAsNew { .. })
    ));

    // The next execution starts with the carried events.
    let mut next = OrchestrationExecutor::new(registry(), id);
    let mut new_events = vec![events::execution_started("Sum", &1)];
    new_events.extend(carried_events);
    let ep = next.execute(Timestamp(3), new_events);
    let Outcome::ContinuedAsNew {
        input,
        carried_events,
    } = ep.outcome
    else {
        panic!()
    };
    assert_eq!(input, Some(Payload::json(&3).unwrap()));
    assert_eq!(carried_events.len(), 1);
}

#[test]
fn events_are_dropped_without_preserve() {
    let mut ex = OrchestrationExecutor::new(registry(), InstanceId::new("i").unwrap());
    ex.execute(
        Timestamp(1),
        vec![events::execution_started("SumDropping", &0)],
    );
    let ep = ex.execute(
        Timestamp(2),
        vec![
            events::event_raised("add", &1),
            events::event_raised("add", &2),
        ],
    );
    assert!(
        matches!(ep.outcome, Outcome::ContinuedAsNew { ref carried_events, .. } if carried_events.is_empty())
    );
}

#[test]
fn tester_follows_generations() {
    let run = OrchestrationTester::new(registry()).run("Generations", &0);
    assert_eq!(run.output::<u32>().unwrap(), 5);
    assert_eq!(run.previous_histories.len(), 5);
}

#[test]
fn tester_carries_unprocessed_events_across_generations() {
    let mut t = OrchestrationTester::new(registry());
    for v in [40, 30, 50] {
        t.raise_event_after(std::time::Duration::ZERO, "add", &v);
    }
    let run = t.run("Sum", &0);
    // 0+40 -> continue (carrying 30, 50); 40+30 -> continue (carrying 50); 70+50 -> done.
    assert_eq!(run.output::<i32>().unwrap(), 120);
    assert_eq!(run.previous_histories.len(), 2);
    let raised_in = |h: &[perdure_core::HistoryEvent]| {
        h.iter()
            .filter(|e| matches!(e.kind, EventKind::EventRaised { .. }))
            .count()
    };
    // The second generation starts with both carried events in its history.
    assert_eq!(raised_in(&run.previous_histories[1]), 2);
    assert_eq!(raised_in(&run.history), 1);
    // Without preserving, the extra events are lost and the instance waits forever.
    let mut t = OrchestrationTester::new(registry());
    for v in [40, 30, 50] {
        t.raise_event_after(std::time::Duration::ZERO, "add", &v);
    }
    let run = t.run("SumDropping", &0);
    assert!(matches!(run.outcome, Outcome::Running), "{:?}", run.outcome);
}
