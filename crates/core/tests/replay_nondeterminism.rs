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

/// Records `v1` (activities, sub-orchestrations and entities answered by the tester), then
/// replays its history against `v2`.
fn mismatch<F1, F2, Fut1, Fut2>(v1: F1, v2: F2) -> NonDeterminismError
where
    F1: Fn(OrchestrationContext, ()) -> Fut1 + Send + Sync + 'static,
    F2: Fn(OrchestrationContext, ()) -> Fut2 + Send + Sync + 'static,
    Fut1: std::future::Future<Output = Result<i32, TaskError>> + Send + 'static,
    Fut2: std::future::Future<Output = Result<i32, TaskError>> + Send + 'static,
{
    let mut r1 = Registry::new();
    r1.add_orchestration("Flow", v1);
    let mut t = OrchestrationTester::new(Arc::new(r1));
    t.mock_activity("A", |()| Ok(1))
        .mock_sub_orchestration("Child", |()| Ok(2))
        .mock_entity_operation("Counter", "add", |n: i32| Ok(n));
    let run = t.run("Flow", &());
    assert!(run.output::<i32>().is_ok(), "{:?}", run.outcome);
    let mut r2 = Registry::new();
    r2.add_orchestration("Flow", v2);
    match replay_history(Arc::new(r2), InstanceId::new("test").unwrap(), &run.history) {
        Err(NonDeterminismReport::NonDeterminism(nd)) => nd,
        other => panic!("expected non-determinism, got {other:?}"),
    }
}

fn counter(key: &str) -> perdure_core::EntityId {
    perdure_core::EntityId::new("Counter", key).unwrap()
}

#[test]
fn changed_sub_orchestration_entity_operation_and_lock_set() {
    let nd = mismatch(
        |ctx, ()| async move { ctx.call_sub_orchestration::<i32>("Child", ()).await },
        |ctx, ()| async move { ctx.call_sub_orchestration::<i32>("Child2", ()).await },
    );
    assert_eq!(nd.sequence, 0);
    assert_eq!(
        nd.expected,
        r#"SubOrchestrationInstanceCreated(name="Child", instance_id=test:0000)"#
    );
    assert_eq!(
        nd.actual,
        r#"CreateSubOrchestration(name="Child2", instance_id=test:0000)"#
    );

    let nd = mismatch(
        |ctx, ()| async move { ctx.call_entity::<i32>(&counter("c"), "add", 1).await },
        |ctx, ()| async move { ctx.call_entity::<i32>(&counter("d"), "add", 1).await },
    );
    assert_eq!(nd.sequence, 0);
    assert_eq!(
        nd.expected,
        r#"EntityOperationCalled(entity=@counter@c, operation="add")"#
    );
    assert_eq!(
        nd.actual,
        r#"CallEntity(entity=@counter@d, operation="add")"#
    );

    let nd = mismatch(
        |ctx, ()| async move {
            let _s = ctx.lock_entities(&[counter("a")]).await?;
            ctx.call_entity::<i32>(&counter("a"), "add", 1).await
        },
        |ctx, ()| async move {
            let _s = ctx.lock_entities(&[counter("a"), counter("b")]).await?;
            ctx.call_entity::<i32>(&counter("a"), "add", 1).await
        },
    );
    assert_eq!(nd.sequence, 0);
    assert_eq!(nd.expected, "EntityLockRequested([@counter@a])");
    assert_eq!(nd.actual, "LockEntities([@counter@a, @counter@b])");

    // A changed input is data, not code: it replays.
    let mut r1 = Registry::new();
    r1.add_orchestration("Flow", |ctx: OrchestrationContext, ()| async move {
        ctx.call_activity::<i32>("A", 1).await
    });
    let mut t = OrchestrationTester::new(Arc::new(r1));
    t.mock_activity("A", |_: i32| Ok(1));
    let history = t.run("Flow", &()).history;
    let mut r2 = Registry::new();
    r2.add_orchestration("Flow", |ctx: OrchestrationContext, ()| async move {
        ctx.call_activity::<i32>("A", 2).await
    });
    replay_history(Arc::new(r2), InstanceId::new("test").unwrap(), &history).unwrap();
}
