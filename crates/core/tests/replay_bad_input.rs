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
