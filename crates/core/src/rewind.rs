//! Rewind: resume a failed execution from its last successful step.
//!
//! [`rewind_history`] is pure. Given the history of a Failed execution it returns the history
//! to keep and the actions to issue again; the node stores the kept history, sets the instance
//! Running, performs the actions and loads the instance from the kept history as usual.
//!
//! The rule: the final episode (the one holding `ExecutionCompleted(Failed)`) loses its
//! `ExecutionCompleted`, its `OrchestratorCompleted` and its TaskFailed /
//! SubOrchestrationInstanceFailed events; the tasks and sub-orchestrations those failures
//! belonged to are issued again under their original sequence numbers. Failures of earlier
//! episodes stay: with a retry policy those are the earlier attempts, which the orchestrator
//! already handled, so replay reaches the last attempt and waits for its new result.
//! Dropping the final `OrchestratorCompleted` lets the final episode be re-run by code that
//! was fixed since (for a failure in orchestrator code).
//! A re-issued sub-orchestration carries the child's original instance id: the node rewinds
//! that child if it exists and failed, as Durable Functions does.
//!
//! ```
//! use perdure_core::rewind::rewind_history;
//! use perdure_core::testing::{HistoryBuilder, events};
//! use perdure_core::{EventKind, FailureDetails, HistoryEvent, OrchestrationStatus, Timestamp};
//! let failed = FailureDetails::new("Error", "boom");
//! let history = HistoryBuilder::new(Timestamp(0))
//!     .started("Chain", &1).task_scheduled(0, "Step")
//!     .episode(Timestamp(5))
//!     .event(events::task_failed(0, failed.clone()))
//!     .event(HistoryEvent::new(Timestamp(5), EventKind::ExecutionCompleted {
//!         status: OrchestrationStatus::Failed, result: None, failure: Some(failed) }))
//!     .end()
//!     .build();
//! let plan = rewind_history(&history).unwrap();
//! assert_eq!(plan.actions.len(), 1);
//! assert_eq!(plan.history.len(), 5);
//! ```

use serde::{Deserialize, Serialize};

use crate::replay::describe::event_action;
use crate::{EventKind, HistoryEvent, OrchestrationStatus, OrchestratorAction};

/// What the node does to rewind an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewindPlan {
    /// The history to keep (replaces the stored history of the execution).
    pub history: Vec<HistoryEvent>,
    /// The tasks and sub-orchestrations to issue again, by their original sequence numbers.
    pub actions: Vec<OrchestratorAction>,
}

/// Why a history cannot be rewound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RewindError {
    /// The execution did not end in failure.
    #[error("only a failed execution can be rewound")]
    NotFailed,
    /// A failure refers to a task whose scheduling event is missing.
    #[error("history event #{index} fails task {task_id}, which was never scheduled")]
    UnknownTask {
        /// Index of the failure event.
        index: usize,
        /// The task's sequence number.
        task_id: i64,
    },
}

/// Computes the rewind of a failed execution's history. See the module documentation.
pub fn rewind_history(history: &[HistoryEvent]) -> Result<RewindPlan, RewindError> {
    let completed = history
        .iter()
        .rposition(|e| {
            matches!(
                e.kind,
                EventKind::ExecutionCompleted {
                    status: OrchestrationStatus::Failed,
                    ..
                }
            )
        })
        .ok_or(RewindError::NotFailed)?;
    let episode_start = history
        .get(..completed)
        .unwrap_or_default()
        .iter()
        .rposition(|e| matches!(e.kind, EventKind::OrchestratorStarted))
        .unwrap_or(0);
    let mut kept = Vec::with_capacity(history.len());
    let mut actions = Vec::new();
    for (index, event) in history.iter().enumerate() {
        let in_final = index >= episode_start;
        let failed_task = match &event.kind {
            EventKind::TaskFailed {
                task_scheduled_id, ..
            }
            | EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id, ..
            } if in_final => Some(*task_scheduled_id),
            _ => None,
        };
        if let Some(task_id) = failed_task {
            let action = history
                .get(..index)
                .unwrap_or_default()
                .iter()
                .rev()
                .find(|e| {
                    e.event_id == task_id
                        && matches!(
                            e.kind,
                            EventKind::TaskScheduled { .. }
                                | EventKind::SubOrchestrationInstanceCreated { .. }
                        )
                })
                .and_then(event_action)
                .ok_or(RewindError::UnknownTask { index, task_id })?;
            actions.push(action);
            continue;
        }
        if index == completed
            || (index > completed && matches!(event.kind, EventKind::OrchestratorCompleted))
        {
            continue;
        }
        kept.push(event.clone());
    }
    actions.sort_by_key(OrchestratorAction::id);
    actions.dedup_by_key(|a| a.id());
    Ok(RewindPlan {
        history: kept,
        actions,
    })
}
