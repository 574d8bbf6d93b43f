//! Non-determinism: each kind of code change gives its specific error, with the stable code,
//! the sequence number and both sides.

use std::sync::Arc;
use std::time::Duration;

use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::replay::{
    NONDETERMINISM_CODE, NonDeterminismError, OrchestrationExecutor, Outcome,
};
use perdure_core::testing::{
    NonDeterminismReport, OrchestrationTester, replay_history, replay_history_json,
};
use perdure_core::{HistoryEvent, InstanceId, Registry, Timestamp};

/// v1: timer, then A, then B.
fn v1(r: &mut Registry) {
    r.add_orchestration("Flow", |ctx: OrchestrationContext, ()| async move {
        ctx.create_timer_after(Duration::from_secs(1)).await;
        let a: i32 = ctx.call_activity("A", ()).await?;
        let b: i32 = ctx.call_activity("B", ()).await?;
        Ok::<_, TaskError>(a + b)
    });
}

fn recorded() -> Vec<HistoryEvent> {
    let mut r = Registry::new();
    v1(&mut r);
    let mut t = OrchestrationTester::new(Arc::new(r));
    t.mock_activity("A", |()| Ok(1))
        .mock_activity("B", |()| Ok(2));
    let run = t.run("Flow", &());
    assert_eq!(run.output::<i32>().unwrap(), 3);
    run.history
}

fn check(change: impl FnOnce(&mut Registry)) -> NonDeterminismError {
    let mut r = Registry::new();
    change(&mut r);
    match replay_history(Arc::new(r), InstanceId::new("test").unwrap(), &recorded()) {
        Err(NonDeterminismReport::NonDeterminism(nd)) => {
            assert_eq!(nd.code, NONDETERMINISM_CODE);
            nd
        }
        other => panic!("expected non-determinism, got {other:?}"),
    }
}

#[test]
fn unchanged_code_replays() {
    let mut r = Registry::new();
    v1(&mut r);
    replay_history(Arc::new(r), InstanceId::new("test").unwrap(), &recorded()).unwrap();
}

#[test]
fn changed_activity_name() {
    let nd = check(|r| {
        r.add_orchestration("Flow", |ctx: OrchestrationContext, ()| async move {
            ctx.create_timer_after(Duration::from_secs(1)).await;
            let a: i32 = ctx.call_activity("A2", ()).await?;
            let b: i32 = ctx.call_activity("B", ()).await?;
            Ok::<_, TaskError>(a + b)
        });
    });
    assert_eq!(nd.sequence, 1);
    assert_eq!(nd.expected, r#"TaskScheduled(name="A")"#);
    assert_eq!(nd.actual, r#"ScheduleTask(name="A2")"#);
    assert_eq!(nd.instance_id.as_str(), "test");
    assert_eq!(
        nd.to_string(),
        r#"PERDURE-NONDETERMINISM: instance test, sequence 1: history has TaskScheduled(name="A"), code produced ScheduleTask(name="A2")"#
    );
}

#[test]
fn changed_order() {
    let nd = check(|r| {
        r.add_orchestration("Flow", |ctx: OrchestrationContext, ()| async move {
            ctx.create_timer_after(Duration::from_secs(1)).await;
            let b: i32 = ctx.call_activity("B", ()).await?;
            let a: i32 = ctx.call_activity("A", ()).await?;
            Ok::<_, TaskError>(a + b)
        });
    });
    assert_eq!(nd.sequence, 1);
    assert_eq!(nd.expected, r#"TaskScheduled(name="A")"#);
    assert_eq!(nd.actual, r#"ScheduleTask(name="B")"#);
}

#[test]
fn removed_timer() {
    let nd = check(|r| {
        r.add_orchestration("Flow", |ctx: OrchestrationContext, ()| async move {
            let a: i32 = ctx.call_activity("A", ()).await?;
            let b: i32 = ctx.call_activity("B", ()).await?;
            Ok::<_, TaskError>(a + b)
        });
    });
    assert_eq!(nd.sequence, 0);
    let fire_at = recorded()
        .iter()
        .find_map(|e| match e.kind {
            perdure_core::EventKind::TimerCreated { fire_at } => Some(fire_at.as_millis()),
            _ => None,
        })
        .unwrap();
    assert_eq!(nd.expected, format!("TimerCreated(fire_at={fire_at})"));
    assert_eq!(nd.actual, r#"ScheduleTask(name="A")"#);
}

#[test]
fn added_activity() {
    let nd = check(|r| {
        r.add_orchestration("Flow", |ctx: OrchestrationContext, ()| async move {
            ctx.create_timer_after(Duration::from_secs(1)).await;
            let a: i32 = ctx.call_activity("A", ()).await?;
            let b: i32 = ctx.call_activity("B", ()).await?;
            let c: i32 = ctx.call_activity("C", ()).await?;
            Ok::<_, TaskError>(a + b + c)
        });
    });
    assert_eq!(nd.sequence, 3);
    assert_eq!(nd.expected, "ExecutionCompleted(Completed)");
    assert_eq!(nd.actual, r#"ScheduleTask(name="C")"#);
}

#[test]
fn removed_activity_at_the_end() {
    let nd = check(|r| {
        r.add_orchestration("Flow", |ctx: OrchestrationContext, ()| async move {
            ctx.create_timer_after(Duration::from_secs(1)).await;
            let a: i32 = ctx.call_activity("A", ()).await?;
            Ok::<_, TaskError>(a)
        });
    });
    assert_eq!(nd.sequence, 2);
    assert_eq!(nd.expected, r#"TaskScheduled(name="B")"#);
    assert_eq!(
        nd.actual,
        "no action (the orchestration had already completed)"
    );
}

#[test]
fn loaded_mismatch_fails_the_instance_on_the_next_episode() {
    let mut history = recorded();
    // Keep the first two episodes only: the instance is waiting for A.
    let cut = history
        .iter()
        .enumerate()
        .filter(|(_, e)| e.name() == "OrchestratorCompleted")
        .nth(1)
        .map(|(i, _)| i + 1)
        .unwrap();
    history.truncate(cut);
    let mut r = Registry::new();
    r.add_orchestration("Flow", |ctx: OrchestrationContext, ()| async move {
        let a: i32 = ctx.call_activity("Other", ()).await?;
        Ok::<_, TaskError>(a)
    });
    let mut ex =
        OrchestrationExecutor::load(Arc::new(r), InstanceId::new("test").unwrap(), &history)
            .unwrap();
    assert!(ex.non_determinism().is_some());
    let ep = ex.execute(Timestamp(99), vec![]);
    match ep.outcome {
        Outcome::Failed { failure } => {
            assert_eq!(failure.error_type, "NonDeterminismError");
            assert_eq!(failure.details.as_deref(), Some(NONDETERMINISM_CODE));
            assert!(failure.message.contains("TimerCreated"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(ep.actions.is_empty());
}

#[test]
fn json_history_round_trip_through_the_replayer() {
    let json = serde_json::to_string_pretty(&recorded()).unwrap();
    let mut r = Registry::new();
    v1(&mut r);
    replay_history_json(Arc::new(r), &json).unwrap();
    let mut changed = Registry::new();
    changed.add_orchestration("Flow", |_ctx: OrchestrationContext, ()| async move {
        Ok::<_, String>(0)
    });
    assert!(matches!(
        replay_history_json(Arc::new(changed), &json),
        Err(NonDeterminismReport::NonDeterminism(_))
    ));
}
