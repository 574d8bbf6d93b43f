//! What one episode produces.

use serde::{Deserialize, Serialize};

use crate::orchestration::LogRecord;
use crate::{FailureDetails, HistoryEvent, OrchestratorAction, Payload};

/// The state of the execution after an episode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Waiting for more events.
    Running,
    /// Finished with an output.
    Completed {
        /// The output (`None` is JSON `null`).
        output: Option<Payload>,
    },
    /// Finished with a failure (including non-determinism and panics).
    Failed {
        /// The failure.
        failure: FailureDetails,
    },
    /// Ended by continue-as-new: the node starts a new execution with `input`, then
    /// delivers `carried_events` (unprocessed external events, when asked to keep them).
    ContinuedAsNew {
        /// The new execution's input.
        input: Option<Payload>,
        /// EventRaised events to deliver to the new execution, in arrival order.
        carried_events: Vec<HistoryEvent>,
    },
    /// Ended by an ExecutionTerminated event.
    Terminated {
        /// Why.
        reason: Option<String>,
    },
}

impl Outcome {
    /// Whether the execution has ended.
    pub fn is_finished(&self) -> bool {
        !matches!(self, Self::Running)
    }

    /// The runtime status this outcome corresponds to.
    pub fn status(&self) -> crate::OrchestrationStatus {
        use crate::OrchestrationStatus as S;
        match self {
            Self::Running => S::Running,
            Self::Completed { .. } => S::Completed,
            Self::Failed { .. } => S::Failed,
            Self::ContinuedAsNew { .. } => S::ContinuedAsNew,
            Self::Terminated { .. } => S::Terminated,
        }
    }
}

/// What an episode produced; the node commits `history` and `actions` in one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// Events to append to the stored history, in order: OrchestratorStarted, the new events,
    /// the events recording the new actions, ExecutionCompleted / ContinueAsNew when finished,
    /// OrchestratorCompleted.
    pub history: Vec<HistoryEvent>,
    /// The new actions, in sequence order.
    pub actions: Vec<OrchestratorAction>,
    /// The state after the episode.
    pub outcome: Outcome,
    /// The custom status after the episode.
    pub custom_status: Option<Payload>,
    /// Lines logged by the orchestrator (never during replay) and warnings of the engine
    /// (ignored events).
    pub logs: Vec<LogRecord>,
}
