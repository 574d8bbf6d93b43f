//! Rewind: a failed execution resumes from its last successful step.
//!
//! The history is cut just before its first failure event (TaskFailed,
//! SubOrchestrationInstanceFailed, EntityOperationFailed) and everything after it is dropped,
//! so the orchestrator replays up to the point where the failed work was pending. The runtime
//! then re-queues every activity the cut history leaves pending, re-arms its pending timers,
//! restarts its pending sub-orchestrations and calls its pending entity operations again.
//! (Locks held at the failure were released when the execution failed; a rewound call made
//! inside a critical section runs without the lock.) With retried activities, the first failed
//! attempt is the cut point: the whole retry sequence runs again.

use std::collections::BTreeMap;

use perdure_core::{
    EntityId, EventKind, FailureDetails, HistoryEvent, InstanceId, Payload, Timestamp,
};

/// Cuts a failed history before its first failure event.
pub fn cut_before_failure(
    mut history: Vec<HistoryEvent>,
) -> Result<Vec<HistoryEvent>, FailureDetails> {
    let first_failure = history.iter().position(|e| {
        matches!(
            e.kind,
            EventKind::TaskFailed { .. }
                | EventKind::SubOrchestrationInstanceFailed { .. }
                | EventKind::EntityOperationFailed { .. }
        )
    });
    let cut = match first_failure {
        Some(i) => i,
        None => history
            .iter()
            .position(|e| matches!(e.kind, EventKind::ExecutionCompleted { .. }))
            .ok_or_else(|| {
                FailureDetails::new("RewindError", "the history holds no failure to rewind")
            })?,
    };
    history.truncate(cut);
    Ok(history)
}

/// A sub-orchestration left pending: (seq, name, version, instance id, input).
pub type PendingChild = (i64, String, Option<String>, InstanceId, Option<Payload>);

/// Work a history leaves pending, to be re-issued after a rewind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PendingWork {
    /// Activities scheduled without a result: (seq, name, version, input).
    pub tasks: Vec<(i64, String, Option<String>, Option<Payload>)>,
    /// Timers created and not fired: (seq, fire_at).
    pub timers: Vec<(i64, Timestamp)>,
    /// Sub-orchestrations created and not finished: (seq, name, version, id, input).
    pub children: Vec<PendingChild>,
    /// Entity operations called without an answer: (seq, entity, operation, input).
    pub calls: Vec<PendingCall>,
}

/// An entity operation called and not answered: (seq, entity, operation, input).
pub type PendingCall = (i64, EntityId, String, Option<Payload>);

/// The activities, timers, sub-orchestrations and entity calls a history leaves pending.
pub fn pending_work(history: &[HistoryEvent]) -> PendingWork {
    let mut calls = BTreeMap::new();
    let mut tasks = BTreeMap::new();
    let mut timers = BTreeMap::new();
    let mut children = BTreeMap::new();
    for e in history {
        match &e.kind {
            EventKind::TaskScheduled {
                name,
                version,
                input,
            } => {
                tasks.insert(e.event_id, (name.clone(), version.clone(), input.clone()));
            }
            EventKind::TaskCompleted {
                task_scheduled_id, ..
            }
            | EventKind::TaskFailed {
                task_scheduled_id, ..
            } => {
                tasks.remove(task_scheduled_id);
            }
            EventKind::TimerCreated { fire_at } => {
                timers.insert(e.event_id, *fire_at);
            }
            EventKind::TimerFired { timer_id, .. } => {
                timers.remove(timer_id);
            }
            EventKind::SubOrchestrationInstanceCreated {
                name,
                version,
                instance_id,
                input,
            } => {
                children.insert(
                    e.event_id,
                    (
                        name.clone(),
                        version.clone(),
                        instance_id.clone(),
                        input.clone(),
                    ),
                );
            }
            EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id, ..
            }
            | EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id, ..
            } => {
                children.remove(task_scheduled_id);
            }
            EventKind::EntityOperationCalled {
                entity,
                operation,
                input,
            } => {
                calls.insert(
                    e.event_id,
                    (entity.clone(), operation.clone(), input.clone()),
                );
            }
            EventKind::EntityOperationCompleted {
                task_scheduled_id, ..
            }
            | EventKind::EntityOperationFailed {
                task_scheduled_id, ..
            } => {
                calls.remove(task_scheduled_id);
            }
            _ => {}
        }
    }
    PendingWork {
        tasks: tasks
            .into_iter()
            .map(|(s, (n, v, i))| (s, n, v, i))
            .collect(),
        timers: timers.into_iter().collect(),
        children: children
            .into_iter()
            .map(|(s, (n, v, id, i))| (s, n, v, id, i))
            .collect(),
        calls: calls
            .into_iter()
            .map(|(s, (e, op, i))| (s, e, op, i))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: i64, kind: EventKind) -> HistoryEvent {
        HistoryEvent {
            event_id: id,
            timestamp: Timestamp(0),
            kind,
        }
    }

    #[test]
    fn cuts_before_the_first_failure_and_finds_pending_work() {
        let h = vec![
            ev(-1, EventKind::OrchestratorStarted),
            ev(
                0,
                EventKind::TaskScheduled {
                    name: "A".into(),
                    version: None,
                    input: None,
                },
            ),
            ev(
                -1,
                EventKind::TaskFailed {
                    task_scheduled_id: 0,
                    failure: FailureDetails::new("E", "boom"),
                },
            ),
            ev(
                -1,
                EventKind::ExecutionCompleted {
                    status: perdure_core::OrchestrationStatus::Failed,
                    result: None,
                    failure: None,
                },
            ),
        ];
        let cut = cut_before_failure(h).unwrap();
        assert_eq!(cut.len(), 2);
        let p = pending_work(&cut);
        assert_eq!(p.tasks.len(), 1);
        assert_eq!(p.tasks[0].1, "A");
    }

    #[test]
    fn a_failed_entity_call_is_called_again() {
        let account = EntityId::new("Account", "shop").unwrap();
        let called = |id: i64, op: &str| {
            ev(
                id,
                EventKind::EntityOperationCalled {
                    entity: account.clone(),
                    operation: op.into(),
                    input: None,
                },
            )
        };
        let h = vec![
            ev(-1, EventKind::OrchestratorStarted),
            called(0, "balance"),
            ev(
                -1,
                EventKind::EntityOperationCompleted {
                    task_scheduled_id: 0,
                    result: None,
                },
            ),
            called(1, "withdraw"),
            ev(
                -1,
                EventKind::EntityOperationFailed {
                    task_scheduled_id: 1,
                    failure: FailureDetails::new("InsufficientFunds", "short"),
                },
            ),
        ];
        let cut = cut_before_failure(h).unwrap();
        let p = pending_work(&cut);
        assert_eq!(p.calls, vec![(1, account, "withdraw".to_string(), None)]);
        assert!(p.tasks.is_empty() && p.children.is_empty() && p.timers.is_empty());
    }
}
