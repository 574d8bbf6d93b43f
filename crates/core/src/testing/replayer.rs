//! Replaying a recorded history against the current code.

use std::sync::Arc;

use crate::registry::Registry;
use crate::replay::{NonDeterminismError, OrchestrationExecutor, ReplayError};
use crate::{HistoryEvent, InstanceId};

/// Why a recorded history does not replay against the current code.
#[derive(Debug, thiserror::Error)]
pub enum NonDeterminismReport {
    /// The code does not match the history: a change that would break running instances.
    #[error(transparent)]
    NonDeterminism(NonDeterminismError),
    /// The history itself is corrupt.
    #[error(transparent)]
    Corrupt(ReplayError),
    /// The JSON is not a list of history events.
    #[error("history is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// Replays a history (one execution) against the registered code. The instance id is only
/// used for ids derived from it (`"replay"` by default via [`replay_history_json`]).
pub fn replay_history(
    registry: Arc<Registry>,
    instance_id: InstanceId,
    history: &[HistoryEvent],
) -> Result<(), NonDeterminismReport> {
    let ex = OrchestrationExecutor::load(registry, instance_id, history)
        .map_err(NonDeterminismReport::Corrupt)?;
    match ex.non_determinism() {
        Some(nd) => Err(NonDeterminismReport::NonDeterminism(nd.clone())),
        None => Ok(()),
    }
}

/// Replays a history stored as JSON (`serde_json` of `Vec<HistoryEvent>`).
///
/// ```
/// use std::sync::Arc;
/// use perdure_core::{registry::Registry, orchestration::OrchestrationContext, testing};
/// let mut registry = Registry::new();
/// registry.add_orchestration("Chain", |ctx: OrchestrationContext, x: i32| async move {
///     let y: i32 = ctx.call_activity("Step", x).await?;
///     Ok::<_, perdure_core::TaskError>(y)
/// });
/// let history = testing::HistoryBuilder::new(perdure_core::Timestamp(0))
///     .started("Chain", &1).task_scheduled(0, "Step")
///     .episode(perdure_core::Timestamp(5)).task_completed(0, &2).completed(&2)
///     .build();
/// let json = serde_json::to_string(&history).unwrap();
/// assert!(testing::replay_history_json(Arc::new(registry), &json).is_ok());
/// ```
pub fn replay_history_json(
    registry: Arc<Registry>,
    json: &str,
) -> Result<(), NonDeterminismReport> {
    let history: Vec<HistoryEvent> =
        serde_json::from_str(json).map_err(NonDeterminismReport::Json)?;
    replay_history(registry, InstanceId::new_unchecked("replay"), &history)
}

/// The history replayer as a value: a registry and the instance id to replay as.
///
/// ```
/// use std::sync::Arc;
/// use perdure_core::{Registry, testing::HistoryReplayer};
/// let replayer = HistoryReplayer::new(Arc::new(Registry::new()));
/// assert!(replayer.replay_json("not json").is_err());
/// ```
#[derive(Clone, Debug)]
pub struct HistoryReplayer {
    registry: Arc<Registry>,
    instance_id: InstanceId,
}

impl HistoryReplayer {
    /// A replayer over the current code; instance id `"replay"`.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            instance_id: InstanceId::new_unchecked("replay"),
        }
    }

    /// Replays as this instance (ids derived from the instance id then match the original).
    pub fn with_instance_id(mut self, instance_id: InstanceId) -> Self {
        self.instance_id = instance_id;
        self
    }

    /// Replays a history.
    pub fn replay(&self, history: &[HistoryEvent]) -> Result<(), NonDeterminismReport> {
        replay_history(self.registry.clone(), self.instance_id.clone(), history)
    }

    /// Replays a history stored as JSON.
    pub fn replay_json(&self, json: &str) -> Result<(), NonDeterminismReport> {
        let history: Vec<HistoryEvent> =
            serde_json::from_str(json).map_err(NonDeterminismReport::Json)?;
        self.replay(&history)
    }
}
