//! Each context operation alone, through the executor and the tester.

use std::sync::Arc;
use std::time::Duration;

use perdure_core::orchestration::{OrchestrationContext, TaskError, when_all, when_any, when_any2};
use perdure_core::replay::{OrchestrationExecutor, Outcome};
use perdure_core::testing::{OrchestrationTester, events};
use perdure_core::{
    EventKind, FailureDetails, InstanceId, OrchestratorAction, Payload, Registry, Timestamp,
};

fn id() -> InstanceId {
    InstanceId::new("i1").unwrap()
}

fn chain_registry() -> Registry {
    let mut r = Registry::new();
    r.add_orchestration("Chain", |ctx: OrchestrationContext, x: i64| async move {
        let a: i64 = ctx.call_activity("Inc", x).await?;
        let b: i64 = ctx.call_activity("Inc", a).await?;
        let c: i64 = ctx.call_activity("Inc", b).await?;
        Ok::<_, TaskError>(c)
    });
    r.add_activity("Inc", |_ctx, x: i64| async move { Ok::<_, String>(x + 1) });
    r
}

#[test]
fn executor_runs_a_chain_episode_by_episode() {
    let mut ex = OrchestrationExecutor::new(Arc::new(chain_registry()), id());
    let ep = ex.execute(Timestamp(10), vec![events::execution_started("Chain", &1)]);
    assert_eq!(ep.outcome, Outcome::Running);
    assert_eq!(ep.actions.len(), 1);
    assert!(
        matches!(&ep.actions[0], OrchestratorAction::ScheduleTask { id: 0, name, .. } if name == "Inc")
    );
    let names: Vec<&str> = ep.history.iter().map(|e| e.name()).collect();
    assert_eq!(
        names,
        [
            "OrchestratorStarted",
            "ExecutionStarted",
            "TaskScheduled",
            "OrchestratorCompleted"
        ]
    );
    assert_eq!(ep.history[2].event_id, 0);

    let ep = ex.execute(Timestamp(20), vec![events::task_completed(0, &2)]);
    assert!(matches!(
        &ep.actions[..],
        [OrchestratorAction::ScheduleTask { id: 1, .. }]
    ));
    let ep = ex.execute(Timestamp(30), vec![events::task_completed(1, &3)]);
    assert!(matches!(
        &ep.actions[..],
        [OrchestratorAction::ScheduleTask { id: 2, .. }]
    ));
    let ep = ex.execute(Timestamp(40), vec![events::task_completed(2, &4)]);
    assert_eq!(
        ep.outcome,
        Outcome::Completed {
            output: Some(Payload::json(&4).unwrap())
        }
    );
    assert!(ep.actions.is_empty());
    assert!(ep.history.iter().any(|e| e.name() == "ExecutionCompleted"));
    assert!(ex.is_finished());
}

#[test]
fn tester_runs_registered_activities() {
    let mut t = OrchestrationTester::new(Arc::new(chain_registry()));
    let run = t.run("Chain", &10);
    assert_eq!(run.output::<i64>().unwrap(), 13);
    assert_eq!(run.episodes, 4);
}

#[test]
fn load_then_continue_equals_one_run() {
    let registry = Arc::new(chain_registry());
    let mut ex = OrchestrationExecutor::new(registry.clone(), id());
    let mut history = ex
        .execute(Timestamp(1), vec![events::execution_started("Chain", &1)])
        .history;
    history.extend(
        ex.execute(Timestamp(2), vec![events::task_completed(0, &2)])
            .history,
    );
    let mut loaded = OrchestrationExecutor::load(registry, id(), &history).unwrap();
    assert!(loaded.non_determinism().is_none());
    let a = ex.execute(Timestamp(3), vec![events::task_completed(1, &3)]);
    let b = loaded.execute(Timestamp(3), vec![events::task_completed(1, &3)]);
    assert_eq!(a, b);
}

#[test]
fn timers_and_current_time() {
    let mut r = Registry::new();
    r.add_orchestration("Sleep", |ctx: OrchestrationContext, ()| async move {
        let t0 = ctx.current_utc_date_time();
        ctx.create_timer_after(Duration::from_secs(5)).await;
        let t1 = ctx.current_utc_date_time();
        Ok::<_, String>(t1.as_millis() - t0.as_millis())
    });
    let run = OrchestrationTester::new(Arc::new(r)).run("Sleep", &());
    assert_eq!(run.output::<u64>().unwrap(), 5000);
}

#[test]
fn external_events_are_fifo_and_buffered() {
    let mut r = Registry::new();
    r.add_orchestration("Events", |ctx: OrchestrationContext, ()| async move {
        ctx.create_timer_after(Duration::from_secs(10)).await;
        // Both events arrived before anyone waited.
        let a: String = ctx.wait_for_external_event("E").await?;
        let b: String = ctx.wait_for_external_event("E").await?;
        let c: i32 = ctx.wait_for_external_event("Late").await?;
        Ok::<_, TaskError>(format!("{a}{b}{c}"))
    });
    let mut t = OrchestrationTester::new(Arc::new(r));
    t.raise_event_after(Duration::from_secs(1), "E", &"x")
        .raise_event_after(Duration::from_secs(2), "E", &"y")
        .raise_event_after(Duration::from_secs(20), "Late", &7);
    let run = t.run("Events", &());
    assert_eq!(run.output::<String>().unwrap(), "xy7");
}

#[test]
fn dropped_event_waiter_leaves_the_queue() {
    let mut r = Registry::new();
    r.add_orchestration("Drop", |ctx: OrchestrationContext, ()| async move {
        let first = ctx.wait_for_external_event::<i32>("E");
        drop(first);
        let v: i32 = ctx.wait_for_external_event("E").await?;
        Ok::<_, TaskError>(v)
    });
    let mut ex = OrchestrationExecutor::new(Arc::new(r), id());
    ex.execute(Timestamp(1), vec![events::execution_started("Drop", &())]);
    let ep = ex.execute(Timestamp(2), vec![events::event_raised("E", &5)]);
    assert_eq!(
        ep.outcome,
        Outcome::Completed {
            output: Some(Payload::json(&5).unwrap())
        }
    );
}

#[test]
fn when_any_with_timer_timeout() {
    let mut r = Registry::new();
    r.add_orchestration("Approval", |ctx: OrchestrationContext, ()| async move {
        let event = ctx.wait_for_external_event::<bool>("Approve");
        let timer = ctx.create_timer_after(Duration::from_secs(60));
        let (winner, _) = when_any(vec![
            Box::pin(async move { event.await.map(Some) })
                as perdure_core::orchestration::TaskFuture<_>,
            Box::pin(async move {
                timer.await;
                Ok(None)
            }),
        ])
        .await;
        Ok::<_, String>(if winner == 0 { "approved" } else { "timed out" })
    });
    let r = Arc::new(r);
    let mut t = OrchestrationTester::new(r.clone());
    t.raise_event_after(Duration::from_secs(30), "Approve", &true);
    assert_eq!(
        t.run("Approval", &()).output::<String>().unwrap(),
        "approved"
    );
    let run = OrchestrationTester::new(r).run("Approval", &());
    assert_eq!(run.output::<String>().unwrap(), "timed out");
}

#[test]
fn when_any2_keeps_the_loser() {
    let mut r = Registry::new();
    r.add_orchestration("Race", |ctx: OrchestrationContext, ()| async move {
        let mut slow = ctx.call_activity::<i32>("Slow", ());
        let timer = ctx.create_timer_after(Duration::from_secs(1));
        match when_any2(&mut slow, timer).await {
            futures::future::Either::Left(_) => Ok::<_, TaskError>(-1),
            futures::future::Either::Right(()) => slow.await,
        }
    });
    let mut ex = OrchestrationExecutor::new(Arc::new(r), id());
    let ep = ex.execute(Timestamp(0), vec![events::execution_started("Race", &())]);
    assert_eq!(ep.actions.len(), 2);
    ex.execute(
        Timestamp(1000),
        vec![events::timer_fired(1, Timestamp(1000))],
    );
    let ep = ex.execute(Timestamp(2000), vec![events::task_completed(0, &9)]);
    assert_eq!(
        ep.outcome,
        Outcome::Completed {
            output: Some(Payload::json(&9).unwrap())
        }
    );
}

#[test]
fn fan_out_1000_with_when_all() {
    let mut r = Registry::new();
    r.add_orchestration("FanOut", |ctx: OrchestrationContext, n: i64| async move {
        let tasks: Vec<_> = (0..n).map(|i| ctx.call_activity::<i64>("Sq", i)).collect();
        let mut sum = 0;
        for r in when_all(tasks).await {
            sum += r?;
        }
        Ok::<_, TaskError>(sum)
    });
    r.add_activity("Sq", |_ctx, x: i64| async move { Ok::<_, String>(x * x) });
    let run = OrchestrationTester::new(Arc::new(r)).run("FanOut", &1000);
    let expected: i64 = (0..1000).map(|i| i * i).sum();
    assert_eq!(run.output::<i64>().unwrap(), expected);
    let scheduled = run
        .history
        .iter()
        .filter(|e| e.name() == "TaskScheduled")
        .count();
    assert_eq!(scheduled, 1000);
}

#[test]
fn fan_out_1000_schedules_in_one_episode_and_fans_in_in_call_order() {
    let mut r = Registry::new();
    r.add_orchestration("FanOut", |ctx: OrchestrationContext, n: i64| async move {
        let tasks = (0..n).map(|i| ctx.call_activity::<i64>("Id", i));
        when_all(tasks)
            .await
            .into_iter()
            .collect::<Result<Vec<i64>, TaskError>>()
    });
    let mut ex = OrchestrationExecutor::new(Arc::new(r), id());
    let ep = ex.execute(
        Timestamp(0),
        vec![events::execution_started("FanOut", &1000)],
    );
    assert_eq!(ep.actions.len(), 1000);
    // Results arrive in reverse order, in uneven batches.
    let mut pending: Vec<i64> = (0..1000).collect();
    let mut t = 1;
    while !pending.is_empty() {
        let take = (pending.len()).min(t as usize * 7 % 97 + 1);
        let batch: Vec<_> = pending
            .split_off(pending.len() - take)
            .into_iter()
            .rev()
            .map(|i| events::task_completed(i, &(i * 10)))
            .collect();
        let ep = ex.execute(Timestamp(t), batch);
        assert!(ep.actions.is_empty());
        t += 1;
        if pending.is_empty() {
            let expected: Vec<i64> = (0..1000).map(|i| i * 10).collect();
            assert_eq!(
                ep.outcome,
                Outcome::Completed {
                    output: Some(Payload::json(&expected).unwrap())
                }
            );
        } else {
            assert_eq!(ep.outcome, Outcome::Running);
        }
    }
}

#[test]
fn activity_failure_propagates_with_inner_failure() {
    let mut r = Registry::new();
    r.add_orchestration("Fails", |ctx: OrchestrationContext, ()| async move {
        let v: i32 = ctx.call_activity("Boom", ()).await?;
        Ok::<_, FailureDetails>(v)
    });
    r.add_activity("Boom", |_ctx, ()| async move {
        Err::<i32, _>("kaput".to_string())
    });
    let run = OrchestrationTester::new(Arc::new(r)).run("Fails", &());
    let failure = run.output::<i32>().unwrap_err();
    assert_eq!(failure.error_type, "TaskFailedError");
    let inner = failure.inner.expect("inner failure");
    assert_eq!(inner.message, "kaput");
}

#[test]
fn panic_in_orchestrator_fails_the_instance() {
    let mut r = Registry::new();
    r.add_orchestration("Panics", |_ctx: OrchestrationContext, ()| async move {
        if true {
            panic!("orchestrator exploded");
        }
        Ok::<(), String>(())
    });
    let mut ex = OrchestrationExecutor::new(Arc::new(r), id());
    let ep = ex.execute(Timestamp(1), vec![events::execution_started("Panics", &())]);
    match ep.outcome {
        Outcome::Failed { failure } => {
            assert_eq!(failure.error_type, "PanicError");
            assert!(failure.message.contains("orchestrator exploded"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_orchestration_fails_cleanly() {
    let mut ex = OrchestrationExecutor::new(Arc::new(Registry::new()), id());
    let ep = ex.execute(Timestamp(1), vec![events::execution_started("Nope", &())]);
    assert!(
        matches!(ep.outcome, Outcome::Failed { ref failure } if failure.error_type == "OrchestrationNotFound")
    );
    assert!(
        ep.history
            .iter()
            .any(|e| matches!(e.kind, EventKind::ExecutionCompleted { .. }))
    );
}

#[test]
fn an_event_received_by_a_dropped_wait_is_given_back_in_order() {
    let mut r = Registry::new();
    r.add_orchestration("GiveBack", |ctx: OrchestrationContext, ()| async move {
        let unused = ctx.wait_for_external_event::<i32>("A");
        ctx.create_timer_after(Duration::from_secs(1)).await;
        // "A" was delivered to `unused` while the timer ran; dropping it gives "A" back.
        drop(unused);
        ctx.continue_as_new((), true);
        Ok::<_, String>(())
    });
    let mut ex = OrchestrationExecutor::new(Arc::new(r), id());
    ex.execute(
        Timestamp(0),
        vec![events::execution_started("GiveBack", &())],
    );
    ex.execute(
        Timestamp(1),
        vec![events::event_raised("A", &1), events::event_raised("B", &2)],
    );
    let ep = ex.execute(
        Timestamp(1000),
        vec![events::timer_fired(0, Timestamp(1000))],
    );
    let Outcome::ContinuedAsNew { carried_events, .. } = ep.outcome else {
        panic!("{:?}", ep.outcome)
    };
    let names: Vec<&str> = carried_events
        .iter()
        .map(|e| match &e.kind {
            EventKind::EventRaised { name, .. } => name.as_str(),
            _ => "?",
        })
        .collect();
    assert_eq!(names, ["A", "B"]);
}

#[test]
fn mocked_entity_operations() {
    let mut r = Registry::new();
    r.add_orchestration("AskEntity", |ctx: OrchestrationContext, ()| async move {
        let e = perdure_core::EntityId::new("Prices", "p").map_err(|e| e.to_string())?;
        let price: f64 = ctx
            .call_entity(&e, "get", "apple")
            .await
            .map_err(|e| e.to_string())?;
        let missing = ctx.call_entity::<f64>(&e, "get", "durian").await;
        Ok::<_, String>((price, missing.is_err()))
    });
    let mut t = OrchestrationTester::new(Arc::new(r));
    t.mock_entity_operation("Prices", "get", |fruit: String| {
        if fruit == "apple" {
            Ok(1.5)
        } else {
            Err(FailureDetails::new("NoPrice", fruit))
        }
    });
    assert_eq!(
        t.run("AskEntity", &()).output::<(f64, bool)>().unwrap(),
        (1.5, true)
    );
}
