//! Replaying a recorded history against the current code.
//!
//! This is the check to run before deploying a change to an orchestrator: export the
//! histories of running instances (the HTTP API's history endpoint, or a test's
//! [`TestRun::history`](crate::testing::TestRun)), then replay each against the new code in a
//! test. A report's `Display` says what broke and where:
//!
//! ```
//! use std::sync::Arc;
//! use perdure_core::{OrchestrationContext, Registry, TaskError, Timestamp};
//! use perdure_core::testing::{HistoryBuilder, NonDeterminismReport, replay_history_json};
//!
//! // Recorded by v1, which called "Step" once.
//! let recorded = HistoryBuilder::new(Timestamp(0))
//!     .started("Chain", &1)
//!     .task_scheduled(0, "Step")
//!     .end()
//!     .build();
//! let json = serde_json::to_string_pretty(&recorded).unwrap();
//!
//! // v2 renamed the activity: running instances would break.
//! let mut v2 = Registry::new();
//! v2.add_orchestration("Chain", |ctx: OrchestrationContext, x: i32| async move {
//!     let y: i32 = ctx.call_activity("StepV2", x).await?;
//!     Ok::<_, TaskError>(y)
//! });
//! let report = replay_history_json(Arc::new(v2), &json).unwrap_err();
//! assert!(matches!(report, NonDeterminismReport::NonDeterminism(_)));
//! assert_eq!(
//!     report.to_string(),
//!     "PERDURE-NONDETERMINISM: instance replay, sequence 0: history has \
//!      TaskScheduled(name=\"Step\"), code produced ScheduleTask(name=\"StepV2\")"
//! );
//! ```

use std::sync::Arc;

use crate::registry::{Registry, RegistryError};
use crate::replay::{NonDeterminismError, OrchestrationExecutor, ReplayError};
use crate::{EventKind, HistoryEvent, InstanceId};

/// Why a recorded history does not replay against the current code.
#[derive(Debug, thiserror::Error)]
pub enum NonDeterminismReport {
    /// The code does not match the history: a change that would break running instances.
    #[error(transparent)]
    NonDeterminism(NonDeterminismError),
    /// The history's orchestration (name and version) is not registered: the code that would
    /// continue it is gone.
    #[error("instance {instance_id}: {source}")]
    NotRegistered {
        /// The instance the history is replayed as.
        instance_id: InstanceId,
        /// The lookup that failed.
        #[source]
        source: RegistryError,
    },
    /// The history itself is corrupt.
    #[error(transparent)]
    Corrupt(ReplayError),
    /// The JSON is not a list.
    #[error("history is not a JSON list of events: {0}")]
    Json(#[source] serde_json::Error),
    /// One element of the JSON list is not a history event this build knows (an unknown
    /// kind, a missing field, a value of the wrong type).
    #[error(transparent)]
    BadEvent(HistoryJsonError),
}

/// One event of a JSON history that does not decode: names the instance, the event's index in
/// the list and its kind as written.
#[derive(Debug, thiserror::Error)]
#[error("history of instance {instance_id}: event #{index} ({event}) does not decode: {source}")]
pub struct HistoryJsonError {
    /// The instance the history is replayed as.
    pub instance_id: InstanceId,
    /// The index of the event in the list.
    pub index: usize,
    /// The event's kind as written (`"?"` if it has none).
    pub event: String,
    /// Why it does not decode.
    #[source]
    pub source: serde_json::Error,
}

/// Decodes a history stored as JSON (`serde_json` of `Vec<HistoryEvent>`), event by event, so
/// that an event that does not decode is reported with its index and kind.
pub fn history_from_json(
    instance_id: &InstanceId,
    json: &str,
) -> Result<Vec<HistoryEvent>, NonDeterminismReport> {
    let values: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(NonDeterminismReport::Json)?;
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let event = event_kind_name(&value);
            serde_json::from_value(value).map_err(|source| {
                NonDeterminismReport::BadEvent(HistoryJsonError {
                    instance_id: instance_id.clone(),
                    index,
                    event,
                    source,
                })
            })
        })
        .collect()
}

/// The kind of a JSON history event as written: `"kind": "OrchestratorStarted"` or
/// `"kind": {"TaskScheduled": {...}}`.
fn event_kind_name(value: &serde_json::Value) -> String {
    const MAX: usize = 64;
    let name = match value.get("kind") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(serde_json::Value::Object(m)) => m.keys().next().map_or("?", String::as_str),
        _ => "?",
    };
    name.chars().take(MAX).collect()
}

/// Replays a history (one execution) against the registered code. The instance id is only
/// used for ids derived from it (`"replay"` by default via [`replay_history_json`]).
pub fn replay_history(
    registry: Arc<Registry>,
    instance_id: InstanceId,
    history: &[HistoryEvent],
) -> Result<(), NonDeterminismReport> {
    let ex = OrchestrationExecutor::load(registry.clone(), instance_id.clone(), history)
        .map_err(NonDeterminismReport::Corrupt)?;
    let started = history.iter().find_map(|e| match &e.kind {
        EventKind::ExecutionStarted { name, version, .. } => Some((name, version)),
        _ => None,
    });
    if let Some((name, version)) = started
        && let Err(source) = registry.orchestration(name, version.as_deref())
    {
        return Err(NonDeterminismReport::NotRegistered {
            instance_id,
            source,
        });
    }
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
    let instance_id = InstanceId::new_unchecked("replay");
    let history = history_from_json(&instance_id, json)?;
    replay_history(registry, instance_id, &history)
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
        let history = history_from_json(&self.instance_id, json)?;
        self.replay(&history)
    }
}
