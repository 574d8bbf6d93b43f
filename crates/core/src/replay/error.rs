//! Replay errors: a corrupt history (a system error) and non-determinism (its own kind).

use serde::{Deserialize, Serialize};

use crate::{FailureDetails, InstanceId};

/// The stable code of a non-determinism error.
pub const NONDETERMINISM_CODE: &str = "PERDURE-NONDETERMINISM";

/// The error type (`FailureDetails::error_type`) of an instance failed because its
/// orchestrator waits for something that is not a durable task, so nothing can ever wake it.
pub const NON_DURABLE_AWAIT_ERROR: &str = "NonDurableAwaitError";

/// The orchestrator's code does not match its history: at sequence number `sequence`, history
/// recorded `expected` but the code produced `actual`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "{code}: instance {instance_id}, sequence {sequence}: history has {expected}, code produced \
     {actual}"
)]
pub struct NonDeterminismError {
    /// Always [`NONDETERMINISM_CODE`].
    pub code: String,
    /// The instance.
    pub instance_id: InstanceId,
    /// The action sequence number where code and history diverge.
    pub sequence: i64,
    /// What history recorded.
    pub expected: String,
    /// What the code did.
    pub actual: String,
}

impl NonDeterminismError {
    pub(crate) fn new(
        instance_id: &InstanceId,
        sequence: i64,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Self {
        Self {
            code: NONDETERMINISM_CODE.to_string(),
            instance_id: instance_id.clone(),
            sequence,
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    /// The failure the instance fails with (error type `NonDeterminismError`, the code in
    /// `details`).
    pub fn to_failure_details(&self) -> FailureDetails {
        let mut f = FailureDetails::new("NonDeterminismError", self.to_string());
        f.details = Some(self.code.clone());
        f
    }
}

/// What is wrong with a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplayErrorKind {
    /// An event other than OrchestratorStarted comes before ExecutionStarted.
    MissingExecutionStarted,
    /// A second ExecutionStarted.
    DuplicateExecutionStarted,
    /// An event after the execution completed.
    EventAfterCompletion,
    /// An action event recorded twice for one sequence number.
    DuplicateActionEvent,
    /// An ExecutionCompleted with a status that does not end an execution.
    BadCompletionStatus,
}

impl std::fmt::Display for ReplayErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MissingExecutionStarted => "no ExecutionStarted before it",
            Self::DuplicateExecutionStarted => "a second ExecutionStarted",
            Self::EventAfterCompletion => "an event after the execution completed",
            Self::DuplicateActionEvent => "its sequence number was already recorded",
            Self::BadCompletionStatus => "the status does not end an execution",
        })
    }
}

/// A history the engine cannot replay: names the instance, the event's index in the history
/// and the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("corrupt history of instance {instance_id}: event #{index} ({event}): {kind}")]
pub struct ReplayError {
    /// The instance.
    pub instance_id: InstanceId,
    /// The index of the offending event in the history.
    pub index: usize,
    /// The offending event's name.
    pub event: String,
    /// What is wrong.
    pub kind: ReplayErrorKind,
}
