//! Constructors of the history events a runtime delivers, for tests.

use serde::Serialize;

use crate::{EventKind, ExecutionId, FailureDetails, HistoryEvent, Payload, Timestamp};

fn json<T: Serialize + ?Sized>(value: &T) -> Option<Payload> {
    crate::orchestration::task::encode_payload(value)
        .ok()
        .flatten()
}

/// ExecutionStarted of orchestration `name` (execution id `"e1"`) with a JSON input.
pub fn execution_started<T: Serialize + ?Sized>(name: &str, input: &T) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::ExecutionStarted {
            name: name.to_string(),
            version: None,
            input: json(input),
            execution_id: ExecutionId("e1".to_string()),
            parent: None,
            scheduled_start: None,
        },
    )
}

/// TaskCompleted for task `seq` with a JSON result.
pub fn task_completed<T: Serialize + ?Sized>(seq: i64, result: &T) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::TaskCompleted {
            task_scheduled_id: seq,
            result: json(result),
        },
    )
}

/// TaskFailed for task `seq`.
pub fn task_failed(seq: i64, failure: FailureDetails) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::TaskFailed {
            task_scheduled_id: seq,
            failure,
        },
    )
}

/// TimerFired for timer `seq`.
pub fn timer_fired(seq: i64, fire_at: Timestamp) -> HistoryEvent {
    HistoryEvent::new(
        fire_at,
        EventKind::TimerFired {
            timer_id: seq,
            fire_at,
        },
    )
}

/// EventRaised with a JSON payload.
pub fn event_raised<T: Serialize + ?Sized>(name: &str, data: &T) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::EventRaised {
            name: name.to_string(),
            input: json(data),
        },
    )
}

/// SubOrchestrationInstanceCompleted for task `seq`.
pub fn sub_orchestration_completed<T: Serialize + ?Sized>(seq: i64, result: &T) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id: seq,
            result: json(result),
        },
    )
}

/// SubOrchestrationInstanceFailed for task `seq`.
pub fn sub_orchestration_failed(seq: i64, failure: FailureDetails) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id: seq,
            failure,
        },
    )
}

/// EntityOperationCompleted for task `seq`.
pub fn entity_operation_completed<T: Serialize + ?Sized>(seq: i64, result: &T) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::EntityOperationCompleted {
            task_scheduled_id: seq,
            result: json(result),
        },
    )
}

/// EntityOperationFailed for task `seq`.
pub fn entity_operation_failed(seq: i64, failure: FailureDetails) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::EntityOperationFailed {
            task_scheduled_id: seq,
            failure,
        },
    )
}

/// EntityLockGranted for a critical section.
pub fn lock_granted(critical_section_id: &str) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::EntityLockGranted {
            critical_section_id: critical_section_id.to_string(),
        },
    )
}

/// ExecutionTerminated.
pub fn terminated(reason: Option<&str>) -> HistoryEvent {
    HistoryEvent::new(
        Timestamp(0),
        EventKind::ExecutionTerminated {
            reason: reason.map(str::to_string),
        },
    )
}
