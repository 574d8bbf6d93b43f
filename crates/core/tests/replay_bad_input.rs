//! Bad input: corrupt or truncated histories and payloads of the wrong type give typed errors
//! naming the instance and the event, never a panic.

use std::sync::Arc;

use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::replay::{OrchestrationExecutor, Outcome, ReplayErrorKind};
use perdure_core::testing::{HistoryBuilder, NonDeterminismReport, events, replay_history_json};
use perdure_core::{InstanceId, Registry, Timestamp};

fn registry() -> Arc<Registry> {
    let mut r = Registry::new();
    r.add_orchestration("Typed", |ctx: OrchestrationContext, x: i32| async move {
        let y: i32 = ctx.call_activity("Step", x).await?;
        Ok::<_, TaskError>(y)
    });
    r.add_orchestration("Catches", |ctx: OrchestrationContext, x: i32| async move {
        match ctx.call_activity::<i32>("Step", x).await {
            Err(e @ TaskError::Decode { .. }) => Ok::<_, TaskError>(e.to_string()),
            other => Ok(format!("{other:?}")),
        }
    });
    Arc::new(r)
}

fn id() -> InstanceId {
    InstanceId::new("bad-1").unwrap()
}

#[test]
fn missing_execution_started() {
    let h = HistoryBuilder::new(Timestamp(0))
        .task_scheduled(0, "Step")
        .build();
    let err = OrchestrationExecutor::load(registry(), id(), &h).unwrap_err();
    assert_eq!(err.kind, ReplayErrorKind::MissingExecutionStarted);
    assert_eq!(
        (err.instance_id.as_str(), err.index, err.event.as_str()),
        ("bad-1", 1, "TaskScheduled")
    );
    assert!(err.to_string().contains("bad-1"));
}

#[test]
fn duplicate_execution_started() {
    let h = HistoryBuilder::new(Timestamp(0))
        .started("Typed", &1)
        .started("Typed", &1)
        .build();
    let err = OrchestrationExecutor::load(registry(), id(), &h).unwrap_err();
    assert_eq!(
        (err.kind, err.index),
        (ReplayErrorKind::DuplicateExecutionStarted, 2)
    );
}

#[test]
fn events_after_completion() {
    let h = HistoryBuilder::new(Timestamp(0))
        .started("Typed", &1)
        .task_scheduled(0, "Step")
        .episode(Timestamp(1))
        .task_completed(0, &2)
        .completed(&2)
        .event_raised("late", &1)
        .build();
    let err = OrchestrationExecutor::load(registry(), id(), &h).unwrap_err();
    assert_eq!(err.kind, ReplayErrorKind::EventAfterCompletion);
    assert_eq!(err.event, "EventRaised");
}

#[test]
fn duplicate_action_event() {
    let h = HistoryBuilder::new(Timestamp(0))
        .started("Typed", &1)
        .task_scheduled(0, "Step")
        .task_scheduled(0, "Step")
        .build();
    let err = OrchestrationExecutor::load(registry(), id(), &h).unwrap_err();
    assert_eq!(
        (err.kind, err.index),
        (ReplayErrorKind::DuplicateActionEvent, 3)
    );
}

#[test]
fn truncated_or_garbage_json() {
    let h = HistoryBuilder::new(Timestamp(0))
        .started("Typed", &1)
        .build();
    let json = serde_json::to_string(&h).unwrap();
    let truncated = &json[..json.len() / 2];
    assert!(matches!(
        replay_history_json(registry(), truncated),
        Err(NonDeterminismReport::Json(_))
    ));
    assert!(matches!(
        replay_history_json(registry(), "[{\"what\":1}]"),
        Err(NonDeterminismReport::BadEvent(_))
    ));
    assert!(matches!(
        replay_history_json(registry(), "{\"not\": \"a list\"}"),
        Err(NonDeterminismReport::Json(_))
    ));
}

#[test]
fn truncated_history_replays_as_a_waiting_instance() {
    // A history cut after an episode is a valid, shorter history: the instance waits.
    let h = HistoryBuilder::new(Timestamp(0))
        .started("Typed", &1)
        .task_scheduled(0, "Step")
        .end()
        .build();
    let mut ex = OrchestrationExecutor::load(registry(), id(), &h).unwrap();
    let ep = ex.execute(Timestamp(5), vec![events::task_completed(0, &7)]);
    assert!(matches!(ep.outcome, Outcome::Completed { .. }));
}

#[test]
fn orchestration_input_of_the_wrong_type() {
    let mut ex = OrchestrationExecutor::new(registry(), id());
    let ep = ex.execute(
        Timestamp(0),
        vec![events::execution_started("Typed", &"not a number")],
    );
    let Outcome::Failed { failure } = ep.outcome else {
        panic!("{:?}", ep.outcome)
    };
    assert_eq!(failure.error_type, "PayloadDecodeError");
    assert!(failure.message.contains("bad-1"), "{}", failure.message);
    assert!(
        failure.message.contains("ExecutionStarted"),
        "{}",
        failure.message
    );
}

#[test]
fn activity_result_of_the_wrong_type() {
    let mut ex = OrchestrationExecutor::new(registry(), id());
    ex.execute(Timestamp(0), vec![events::execution_started("Catches", &1)]);
    let ep = ex.execute(Timestamp(1), vec![events::task_completed(0, &"text")]);
    let Outcome::Completed { output } = ep.outcome else {
        panic!("{:?}", ep.outcome)
    };
    let message: String = output.unwrap().decode().unwrap();
    assert!(message.contains("instance bad-1"), "{message}");
    assert!(message.contains("activity 'Step' (task 0)"), "{message}");
}

#[test]
fn unknown_completions_are_ignored_with_a_warning() {
    let mut ex = OrchestrationExecutor::new(registry(), id());
    ex.execute(Timestamp(0), vec![events::execution_started("Typed", &1)]);
    let ep = ex.execute(
        Timestamp(1),
        vec![
            events::task_completed(42, &1),
            events::timer_fired(0, Timestamp(1)),
        ],
    );
    assert_eq!(ep.outcome, Outcome::Running);
    assert_eq!(ep.logs.len(), 2, "{:?}", ep.logs);
    let ep = ex.execute(Timestamp(2), vec![events::task_completed(0, &5)]);
    assert!(matches!(ep.outcome, Outcome::Completed { .. }));
}

#[test]
fn suspension_events_replay() {
    let h = HistoryBuilder::new(Timestamp(0))
        .started("Typed", &1)
        .task_scheduled(0, "Step")
        .episode(Timestamp(1))
        .event(perdure_core::HistoryEvent::new(
            Timestamp(1),
            perdure_core::EventKind::ExecutionSuspended { reason: None },
        ))
        .episode(Timestamp(2))
        .event(perdure_core::HistoryEvent::new(
            Timestamp(2),
            perdure_core::EventKind::ExecutionResumed { reason: None },
        ))
        .end()
        .build();
    let mut ex = OrchestrationExecutor::load(registry(), id(), &h).unwrap();
    assert!(ex.non_determinism().is_none());
    let ep = ex.execute(Timestamp(3), vec![events::terminated(Some("stop"))]);
    assert_eq!(
        ep.outcome,
        Outcome::Terminated {
            reason: Some("stop".into())
        }
    );
    assert!(ep.actions.is_empty());
}

#[test]
fn unknown_event_kind_in_json_names_the_instance_the_index_and_the_kind() {
    let h = HistoryBuilder::new(Timestamp(0))
        .started("Typed", &1)
        .task_scheduled(0, "Step")
        .end()
        .build();
    let mut values: Vec<serde_json::Value> =
        serde_json::from_value(serde_json::to_value(&h).unwrap()).unwrap();
    values.insert(
        2,
        serde_json::json!({"event_id": -1, "timestamp": 0, "kind": {"TaskRescheduled": {"x": 1}}}),
    );
    let json = serde_json::to_string(&values).unwrap();
    let replayer = perdure_core::testing::HistoryReplayer::new(registry()).with_instance_id(id());
    let report = replayer.replay_json(&json).unwrap_err();
    let NonDeterminismReport::BadEvent(err) = &report else {
        panic!("{report:?}")
    };
    assert_eq!(
        (err.instance_id.as_str(), err.index, err.event.as_str()),
        ("bad-1", 2, "TaskRescheduled")
    );
    let text = report.to_string();
    assert!(
        text.starts_with("history of instance bad-1: event #2 (TaskRescheduled) does not decode"),
        "{text}"
    );
    // A known kind with a field of the wrong type is named the same way.
    values[2] = serde_json::json!({"event_id": 0, "timestamp": 0,
        "kind": {"TaskCompleted": {"task_scheduled_id": "zero", "result": null}}});
    let json = serde_json::to_string(&values).unwrap();
    match replay_history_json(registry(), &json) {
        Err(NonDeterminismReport::BadEvent(e)) => {
            assert_eq!((e.index, e.event.as_str()), (2, "TaskCompleted"));
            assert_eq!(e.instance_id.as_str(), "replay");
        }
        other => panic!("{other:?}"),
    }
    // An element that is not an event at all.
    match replay_history_json(registry(), "[42]") {
        Err(NonDeterminismReport::BadEvent(e)) => assert_eq!((e.index, e.event.as_str()), (0, "?")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn corrupt_history_report_is_readable() {
    let h = HistoryBuilder::new(Timestamp(0))
        .started("Typed", &1)
        .task_scheduled(0, "Step")
        .task_scheduled(0, "Step")
        .build();
    let report = perdure_core::testing::replay_history(registry(), id(), &h).unwrap_err();
    assert_eq!(
        report.to_string(),
        "corrupt history of instance bad-1: event #3 (TaskScheduled): its sequence number was \
         already recorded"
    );
}

#[test]
fn a_history_of_an_orchestration_no_longer_registered_is_reported() {
    let h = HistoryBuilder::new(Timestamp(0))
        .started("Typed", &1)
        .task_scheduled(0, "Step")
        .end()
        .build();
    let report =
        perdure_core::testing::replay_history(Arc::new(Registry::new()), id(), &h).unwrap_err();
    assert!(
        matches!(&report, NonDeterminismReport::NotRegistered { instance_id, .. } if instance_id == &id()),
        "{report:?}"
    );
    assert_eq!(
        report.to_string(),
        "instance bad-1: no orchestration named 'Typed' is registered"
    );
}

#[test]
fn event_and_entity_and_sub_orchestration_results_of_the_wrong_type() {
    let mut r = Registry::new();
    r.add_orchestration("Wrong", |ctx: OrchestrationContext, ()| async move {
        let mut found = Vec::new();
        let entity = perdure_core::EntityId::new("Counter", "c").unwrap();
        found.push(
            ctx.wait_for_external_event::<i32>("Number")
                .await
                .map(|_| ()),
        );
        found.push(ctx.call_entity::<i32>(&entity, "get", ()).await.map(|_| ()));
        found.push(
            ctx.call_sub_orchestration::<i32>("Child", ())
                .await
                .map(|_| ()),
        );
        Ok::<_, TaskError>(
            found
                .into_iter()
                .map(|r| match r {
                    Err(e @ TaskError::Decode { .. }) => e.to_string(),
                    other => format!("unexpected {other:?}"),
                })
                .collect::<Vec<_>>(),
        )
    });
    let mut ex = OrchestrationExecutor::new(Arc::new(r), id());
    ex.execute(Timestamp(0), vec![events::execution_started("Wrong", &())]);
    ex.execute(Timestamp(1), vec![events::event_raised("Number", &"seven")]);
    ex.execute(
        Timestamp(2),
        vec![events::entity_operation_completed(0, &"x")],
    );
    let ep = ex.execute(
        Timestamp(3),
        vec![events::sub_orchestration_completed(1, &[1])],
    );
    let Outcome::Completed { output } = ep.outcome else {
        panic!("{:?}", ep.outcome)
    };
    let found: Vec<String> = output.unwrap().decode().unwrap();
    assert_eq!(found.len(), 3);
    assert!(
        found[0].starts_with("instance bad-1: result of external event 'Number'"),
        "{found:?}"
    );
    assert!(
        found[1]
            .starts_with("instance bad-1: result of entity operation '@counter@c.get' (task 0)"),
        "{found:?}"
    );
    assert!(
        found[2].starts_with("instance bad-1: result of sub-orchestration 'Child' (task 1)"),
        "{found:?}"
    );
}

#[test]
fn an_uncaught_decode_error_fails_the_instance_naming_instance_and_task() {
    let mut ex = OrchestrationExecutor::new(registry(), id());
    ex.execute(Timestamp(0), vec![events::execution_started("Typed", &1)]);
    let ep = ex.execute(Timestamp(1), vec![events::task_completed(0, &"text")]);
    let Outcome::Failed { failure } = ep.outcome else {
        panic!("{:?}", ep.outcome)
    };
    assert_eq!(failure.error_type, "PayloadDecodeError");
    assert!(failure.message.contains("instance bad-1"), "{failure}");
    assert!(
        failure.message.contains("activity 'Step' (task 0)"),
        "{failure}"
    );
}
