//! The in-process executor: `perdure-core`'s registry and replay engine.

use std::sync::Arc;

use futures::future::BoxFuture;
use perdure_core::activity::ActivityContext;
use perdure_core::entity::{
    EntityAction, OperationRequest, OperationResult, execute_entity_batch_async,
};
use perdure_core::management::FunctionKind;
use perdure_core::registry::{Registry, execute_activity};
use perdure_core::replay::{Episode, OrchestrationExecutor, Outcome};
use perdure_core::{EntityId, FailureDetails, HistoryEvent, InstanceId, Payload, Timestamp};

use super::executor::{
    EntityBatchOutput, EntityOp, EntitySend, EpisodeOutcome, EpisodeResult, EpisodeUnavailable,
    Executors, OrchestrationSession,
};

/// Runs the functions of a [`Registry`] in process.
#[derive(Debug, Clone)]
pub struct CoreExecutor {
    registry: Arc<Registry>,
}

impl CoreExecutor {
    /// An executor over a registry.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

struct Session(OrchestrationExecutor);

fn convert(ep: Episode) -> EpisodeResult {
    let outcome = match ep.outcome {
        Outcome::Running => EpisodeOutcome::Running,
        Outcome::Completed { output } => EpisodeOutcome::Completed(output),
        Outcome::Failed { failure } => EpisodeOutcome::Failed(failure),
        Outcome::ContinuedAsNew {
            input,
            carried_events,
        } => EpisodeOutcome::ContinuedAsNew {
            input,
            carried: carried_events,
        },
        Outcome::Terminated { reason } => EpisodeOutcome::Failed(FailureDetails::new(
            "Terminated",
            reason.unwrap_or_else(|| "terminated".into()),
        )),
    };
    EpisodeResult {
        history: ep.history,
        actions: ep.actions,
        outcome,
        custom_status: ep.custom_status,
        logs: ep
            .logs
            .into_iter()
            .map(|l| format!("{:?}: {}", l.level, l.message))
            .collect(),
    }
}

impl OrchestrationSession for Session {
    fn execute(
        &mut self,
        now: Timestamp,
        new_events: Vec<HistoryEvent>,
    ) -> BoxFuture<'_, Result<EpisodeResult, EpisodeUnavailable>> {
        // In process the episode runs here, inside the caller's span; the future is ready.
        let result = convert(self.0.execute(now, new_events));
        Box::pin(std::future::ready(Ok(result)))
    }
}

impl Executors for CoreExecutor {
    fn load_orchestration(
        &self,
        id: &InstanceId,
        history: Vec<HistoryEvent>,
    ) -> Result<Box<dyn OrchestrationSession>, FailureDetails> {
        let ex = OrchestrationExecutor::load(self.registry.clone(), id.clone(), &history)
            .map_err(|e| FailureDetails::from_error(&e))?;
        Ok(Box::new(Session(ex)))
    }

    fn run_activity(
        &self,
        instance_id: &InstanceId,
        name: &str,
        task_id: i64,
        attempt: u32,
        input: Option<Payload>,
    ) -> BoxFuture<'static, Result<Option<Payload>, FailureDetails>> {
        match self.registry.try_activity(name) {
            Ok(f) => {
                let ctx = ActivityContext::new(instance_id.clone(), name, task_id, attempt);
                execute_activity(&f, ctx, input)
            }
            Err(e) => {
                let failure = e.to_failure_details();
                Box::pin(async move { Err(failure) })
            }
        }
    }

    fn run_entity_batch(
        &self,
        id: &EntityId,
        state: Option<Payload>,
        ops: Vec<EntityOp>,
        _now: Timestamp,
    ) -> BoxFuture<'static, Result<EntityBatchOutput, EpisodeUnavailable>> {
        let registry = self.registry.clone();
        let id = id.clone();
        Box::pin(async move { Ok(run_entity_batch(&registry, &id, state, ops).await) })
    }

    fn names(&self, kind: FunctionKind) -> Vec<String> {
        match kind {
            FunctionKind::Orchestration => self.registry.orchestration_names(),
            FunctionKind::Activity => self.registry.activity_names(),
            FunctionKind::Entity => self.registry.entity_names(),
        }
    }

    fn knows(&self, kind: FunctionKind, name: &str) -> bool {
        match kind {
            FunctionKind::Orchestration => self.registry.orchestration(name, None).is_ok(),
            FunctionKind::Activity => self.registry.activity(name).is_some(),
            FunctionKind::Entity => self.registry.entity(name).is_some(),
        }
    }
}

/// Runs an entity batch with the registry's entity and converts the outcome.
async fn run_entity_batch(
    registry: &Registry,
    id: &EntityId,
    state: Option<Payload>,
    ops: Vec<EntityOp>,
) -> EntityBatchOutput {
    let n = ops.len();
    let reqs = ops
        .into_iter()
        .map(|o| OperationRequest::new(o.operation, o.input).with_request_id(o.request_id))
        .collect();
    match execute_entity_batch_async(registry, id, state.clone(), reqs).await {
        Ok(out) => EntityBatchOutput {
            state: out.state,
            results: out
                .results
                .into_iter()
                .map(|r| match r {
                    OperationResult::Completed(p) => Ok(p),
                    OperationResult::Failed(f) => Err(f),
                })
                .collect(),
            sends: out
                .actions
                .into_iter()
                .map(|a| match a {
                    EntityAction::SignalEntity {
                        entity,
                        operation,
                        input,
                        scheduled_time,
                    } => EntitySend::Signal {
                        entity,
                        operation,
                        input,
                        scheduled_time,
                    },
                    EntityAction::StartOrchestration {
                        name,
                        version,
                        instance_id,
                        input,
                    } => EntitySend::StartOrchestration {
                        name,
                        version,
                        instance_id,
                        input,
                        scheduled_start: None,
                    },
                })
                .collect(),
        },
        Err(e) => {
            let f = FailureDetails::new("EntityNotFound", e.to_string());
            EntityBatchOutput {
                state,
                results: (0..n).map(|_| Err(f.clone())).collect(),
                sends: Vec::new(),
            }
        }
    }
}
