//! The executor of a node that serves gRPC workers: functions registered in the node run in
//! process, every other orchestration, activity and entity goes to the connected workers as
//! work items (`../../shared/DESIGN.md`, "Executors").
//!
//! An orchestration run by a worker is replayed by the worker on every episode: the node
//! sends the whole history (`pastEvents`) and the episode's events (`newEvents`, starting
//! with OrchestratorStarted), takes the actions back, and records them as the in-process
//! engine does (OrchestratorStarted, the new events, one event per action, the terminal
//! event, OrchestratorCompleted), in the episode's one transaction.

use std::sync::Arc;

use futures::future::BoxFuture;
use perdure_core::management::FunctionKind;
use perdure_core::{
    EntityId, EventKind, FailureDetails, HistoryEvent, InstanceId, Payload, Timestamp,
};

use super::convert::{opt_timestamp, payload_from_proto, payload_to_proto};
use super::history::{
    BadResponse, Completed, Decided, action_from_proto, event_to_proto, failure_from_proto,
    terminal_event,
};
use super::proto;
use super::workers::{Completion, ItemKind, WorkerHub};
use crate::runtime::executor::{
    EntityBatchOutput, EntityOp, EntitySend, EpisodeOutcome, EpisodeResult, EpisodeUnavailable,
    Executors, OrchestrationSession,
};

/// Runs registered functions with `local` and the rest on gRPC workers.
pub struct GrpcExecutors {
    local: Arc<dyn Executors>,
    hub: Arc<WorkerHub>,
}

impl std::fmt::Debug for GrpcExecutors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcExecutors")
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

impl GrpcExecutors {
    /// `local` first, the workers of `hub` for the rest.
    pub fn new(local: Arc<dyn Executors>, hub: Arc<WorkerHub>) -> Self {
        Self { local, hub }
    }
}

/// The orchestration name of a history (its ExecutionStarted).
fn started_name(events: &[HistoryEvent]) -> Option<(&str, &str)> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::ExecutionStarted {
            name, execution_id, ..
        } => Some((name.as_str(), execution_id.0.as_str())),
        _ => None,
    })
}

impl Executors for GrpcExecutors {
    fn load_orchestration(
        &self,
        id: &InstanceId,
        history: Vec<HistoryEvent>,
    ) -> Result<Box<dyn OrchestrationSession>, FailureDetails> {
        match started_name(&history) {
            Some((name, _)) if self.local.knows(FunctionKind::Orchestration, name) => {
                self.local.load_orchestration(id, history)
            }
            // No ExecutionStarted yet: decided by the first episode's events.
            _ => Ok(Box::new(Routed {
                local: self.local.clone(),
                hub: self.hub.clone(),
                id: id.clone(),
                state: Route::Undecided(history),
            })),
        }
    }

    fn run_activity(
        &self,
        instance_id: &InstanceId,
        name: &str,
        task_id: i64,
        attempt: u32,
        input: Option<Payload>,
    ) -> BoxFuture<'static, Result<Option<Payload>, FailureDetails>> {
        if self.local.knows(FunctionKind::Activity, name) {
            return self
                .local
                .run_activity(instance_id, name, task_id, attempt, input);
        }
        let hub = self.hub.clone();
        let name = name.to_string();
        let request = proto::ActivityRequest {
            name: name.clone(),
            version: None,
            input: input.as_ref().map(payload_to_proto),
            orchestration_instance: Some(proto::OrchestrationInstance {
                instance_id: instance_id.as_str().to_string(),
                execution_id: None,
            }),
            task_id: i32::try_from(task_id).unwrap_or(i32::MAX),
            parent_trace_context: None,
            tags: Default::default(),
        };
        Box::pin(async move {
            let done = hub
                .dispatch(
                    ItemKind::Activity,
                    &name,
                    proto::work_item::Request::ActivityRequest(request),
                )
                .await;
            match done {
                Ok(Completion::Activity(r)) => {
                    if r.failure_details.is_some() {
                        return Err(failure_from_proto(r.failure_details));
                    }
                    payload_from_proto(r.result, "ActivityResponse.result").map_err(|e| {
                        FailureDetails::new("WorkerProtocolError", e.message().to_string())
                    })
                }
                Ok(other) => Err(FailureDetails::new(
                    "WorkerProtocolError",
                    format!("an activity work item was completed as {other:?}"),
                )),
                // The node is stopping: the activity pool stops too, and the task runs
                // again after the restart; this future is dropped before it matters.
                Err(closed) => {
                    futures::future::pending::<()>().await;
                    Err(FailureDetails::new("WorkerUnavailable", closed.to_string()))
                }
            }
        })
    }

    fn run_entity_batch(
        &self,
        id: &EntityId,
        state: Option<Payload>,
        ops: Vec<EntityOp>,
        now: Timestamp,
    ) -> BoxFuture<'static, Result<EntityBatchOutput, EpisodeUnavailable>> {
        if self.local.knows(FunctionKind::Entity, id.name()) {
            return self.local.run_entity_batch(id, state, ops, now);
        }
        let hub = self.hub.clone();
        let name = id.name().to_string();
        let n = ops.len();
        let request = proto::EntityBatchRequest {
            instance_id: id.to_string(),
            entity_state: state.as_ref().map(payload_to_proto),
            operations: ops
                .into_iter()
                .map(|o| proto::OperationRequest {
                    operation: o.operation,
                    request_id: o.request_id,
                    input: o.input.as_ref().map(payload_to_proto),
                    trace_context: None,
                })
                .collect(),
            properties: Default::default(),
        };
        Box::pin(async move {
            let done = hub
                .dispatch(
                    ItemKind::Entity,
                    &name,
                    proto::work_item::Request::EntityRequest(request),
                )
                .await
                .map_err(|e| EpisodeUnavailable(e.to_string()))?;
            let out = match done {
                Completion::Entity(r) => entity_output(r, n),
                other => Err(BadResponse(format!(
                    "an entity work item was completed as {other:?}"
                ))),
            };
            Ok(out.unwrap_or_else(|BadResponse(msg)| {
                tracing::warn!(entity = %name, error = %msg, "a gRPC worker's entity batch result was refused; its operations fail");
                let f = FailureDetails::new("WorkerProtocolError", msg);
                EntityBatchOutput {
                    state,
                    results: (0..n).map(|_| Err(f.clone())).collect(),
                    sends: Vec::new(),
                }
            }))
        })
    }

    fn names(&self, kind: FunctionKind) -> Vec<String> {
        self.local.names(kind)
    }

    fn knows(&self, kind: FunctionKind, name: &str) -> bool {
        if self.local.knows(kind, name) {
            return true;
        }
        match kind {
            FunctionKind::Orchestration => self.hub.serves_anywhere(ItemKind::Orchestration, name),
            FunctionKind::Activity => self.hub.serves_anywhere(ItemKind::Activity, name),
            FunctionKind::Entity => self.hub.serves_anywhere(ItemKind::Entity, name),
        }
    }

    fn rewind(
        &self,
        history: Vec<HistoryEvent>,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<Vec<HistoryEvent>, FailureDetails> {
        self.local.rewind(history, reason, now)
    }
}

/// A worker's entity batch result, for a batch of `n` operations. A batch-level failure
/// fails every operation and keeps the state.
fn entity_output(r: proto::EntityBatchResult, n: usize) -> Result<EntityBatchOutput, BadResponse> {
    use proto::operation_action::OperationActionType as A;
    use proto::operation_result::ResultType as R;
    if r.failure_details.is_some() {
        return Err(BadResponse(format!(
            "the worker failed the whole batch: {}",
            failure_from_proto(r.failure_details)
        )));
    }
    if r.results.len() != n {
        return Err(BadResponse(format!(
            "{} results for a batch of {n} operations",
            r.results.len()
        )));
    }
    let bad = |e: tonic::Status| BadResponse(e.message().to_string());
    let state = payload_from_proto(r.entity_state, "EntityBatchResult.entityState").map_err(bad)?;
    let mut results = Vec::with_capacity(n);
    for res in r.results {
        results.push(match res.result_type {
            Some(R::Success(ok)) => {
                Ok(payload_from_proto(ok.result, "OperationResultSuccess.result").map_err(bad)?)
            }
            Some(R::Failure(f)) => Err(failure_from_proto(f.failure_details)),
            None => return Err(BadResponse("an operation result has no type".into())),
        });
    }
    let mut sends = Vec::with_capacity(r.actions.len());
    for a in r.actions {
        sends.push(match a.operation_action_type {
            Some(A::SendSignal(s)) => EntitySend::Signal {
                entity: EntityId::parse(&s.instance_id).map_err(|e| {
                    BadResponse(format!(
                        "sendSignal.instanceId '{}' is not an entity id (@name@key): {e}",
                        s.instance_id
                    ))
                })?,
                operation: s.name,
                input: payload_from_proto(s.input, "sendSignal.input").map_err(bad)?,
                scheduled_time: opt_timestamp(
                    s.scheduled_time.as_ref(),
                    "sendSignal.scheduledTime",
                )
                .map_err(bad)?,
            },
            Some(A::StartNewOrchestration(o)) => EntitySend::StartOrchestration {
                instance_id: InstanceId::new(o.instance_id.clone()).map_err(|e| {
                    BadResponse(format!(
                        "startNewOrchestration.instanceId '{}' is not an instance id: {e}",
                        o.instance_id
                    ))
                })?,
                name: o.name,
                version: o.version,
                input: payload_from_proto(o.input, "startNewOrchestration.input").map_err(bad)?,
                scheduled_start: opt_timestamp(
                    o.scheduled_time.as_ref(),
                    "startNewOrchestration.scheduledTime",
                )
                .map_err(bad)?,
            },
            None => return Err(BadResponse("an operation action has no type".into())),
        });
    }
    Ok(EntityBatchOutput {
        state,
        results,
        sends,
    })
}

enum Route {
    /// The history so far; the first episode says whose the orchestration is.
    Undecided(Vec<HistoryEvent>),
    Local(Box<dyn OrchestrationSession>),
    Remote(RemoteSession),
}

/// A session that picks the in-process engine or the workers once it knows the name.
struct Routed {
    local: Arc<dyn Executors>,
    hub: Arc<WorkerHub>,
    id: InstanceId,
    state: Route,
}

impl Routed {
    /// Picks the route from the history and the episode's events.
    fn decide(&mut self, new_events: &[HistoryEvent]) -> Result<(), FailureDetails> {
        let Route::Undecided(history) = &mut self.state else {
            return Ok(());
        };
        let history = std::mem::take(history);
        let (name, execution_id) = match started_name(&history).or(started_name(new_events)) {
            Some((n, e)) => (n.to_string(), e.to_string()),
            None => {
                // Nothing to run on: the in-process engine reports the missing start.
                self.state = Route::Local(self.local.load_orchestration(&self.id, history)?);
                return Ok(());
            }
        };
        self.state = if self.local.knows(FunctionKind::Orchestration, &name) {
            Route::Local(self.local.load_orchestration(&self.id, history)?)
        } else {
            Route::Remote(RemoteSession {
                open_ids: {
                    let mut open = std::collections::BTreeSet::new();
                    track_open(&mut open, &history);
                    open
                },
                hub: self.hub.clone(),
                past: history
                    .iter()
                    .map(|e| event_to_proto(&self.id, e))
                    .collect(),
                id: self.id.clone(),
                name,
                execution_id,
            })
        };
        Ok(())
    }
}

impl OrchestrationSession for Routed {
    fn execute(
        &mut self,
        now: Timestamp,
        new_events: Vec<HistoryEvent>,
    ) -> BoxFuture<'_, Result<EpisodeResult, EpisodeUnavailable>> {
        if let Err(f) = self.decide(&new_events) {
            let mut history = vec![HistoryEvent::new(now, EventKind::OrchestratorStarted)];
            history.extend(new_events);
            let outcome = Completed::Failed(f.clone());
            history.push(terminal_event(&outcome, now));
            history.push(HistoryEvent::new(now, EventKind::OrchestratorCompleted));
            return Box::pin(std::future::ready(Ok(EpisodeResult {
                history,
                actions: Vec::new(),
                outcome: EpisodeOutcome::Failed(f),
                custom_status: None,
                logs: Vec::new(),
            })));
        }
        match &mut self.state {
            Route::Local(s) => s.execute(now, new_events),
            Route::Remote(r) => Box::pin(r.execute(now, new_events)),
            // `decide` always leaves a route.
            Route::Undecided(_) => Box::pin(std::future::ready(Err(EpisodeUnavailable(
                "the orchestration's route is undecided".into(),
            )))),
        }
    }
}

/// Keeps `open` the ids of the actions in `events` that wait for a result: an action event
/// opens its id, its result closes it (actions without results never open; a lock request
/// stays open, its grant names no id).
fn track_open(open: &mut std::collections::BTreeSet<i64>, events: &[HistoryEvent]) {
    for e in events {
        match &e.kind {
            EventKind::TaskScheduled { .. }
            | EventKind::TimerCreated { .. }
            | EventKind::SubOrchestrationInstanceCreated { .. }
            | EventKind::EntityOperationCalled { .. }
            | EventKind::EntityLockRequested { .. } => {
                open.insert(e.event_id);
            }
            EventKind::TaskCompleted {
                task_scheduled_id, ..
            }
            | EventKind::TaskFailed {
                task_scheduled_id, ..
            }
            | EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id, ..
            }
            | EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id, ..
            }
            | EventKind::EntityOperationCompleted {
                task_scheduled_id, ..
            }
            | EventKind::EntityOperationFailed {
                task_scheduled_id, ..
            } => {
                open.remove(task_scheduled_id);
            }
            EventKind::TimerFired { timer_id, .. } => {
                open.remove(timer_id);
            }
            _ => {}
        }
    }
}

/// An orchestration whose code runs on a gRPC worker.
struct RemoteSession {
    hub: Arc<WorkerHub>,
    /// The history so far, in the protocol's form.
    past: Vec<proto::HistoryEvent>,
    id: InstanceId,
    name: String,
    execution_id: String,
    /// The ids of the actions of the history still waiting for their results.
    open_ids: std::collections::BTreeSet<i64>,
}

impl RemoteSession {
    async fn execute(
        &mut self,
        now: Timestamp,
        new_events: Vec<HistoryEvent>,
    ) -> Result<EpisodeResult, EpisodeUnavailable> {
        let mut history = Vec::with_capacity(new_events.len() + 4);
        history.push(HistoryEvent::new(now, EventKind::OrchestratorStarted));
        history.extend(new_events);
        let new_proto: Vec<proto::HistoryEvent> = history
            .iter()
            .map(|e| event_to_proto(&self.id, e))
            .collect();
        let request = proto::OrchestratorRequest {
            instance_id: self.id.as_str().to_string(),
            execution_id: Some(self.execution_id.clone()),
            past_events: self.past.clone(),
            new_events: new_proto.clone(),
            ..Default::default()
        };
        // Results among the new events close their actions before the response is checked.
        track_open(&mut self.open_ids, &history);
        let done = self
            .hub
            .dispatch(
                ItemKind::Orchestration,
                &self.name,
                proto::work_item::Request::OrchestratorRequest(request),
            )
            .await
            .map_err(|e| EpisodeUnavailable(e.to_string()))?;
        let response = match done {
            Completion::Orchestrator(r) => Ok(r),
            other => Err(BadResponse(format!(
                "an orchestrator work item was completed as {other:?}"
            ))),
        };
        let decided = response.and_then(|r| {
            let custom_status = r.custom_status.and_then(|s| {
                payload_from_proto(Some(s), "customStatus")
                    .map_err(|e| {
                        tracing::warn!(instance = %self.id, error = %e.message(), "custom status dropped");
                    })
                    .ok()
                    .flatten()
            });
            let mut actions = Vec::new();
            let mut completed = None;
            let mut used = std::collections::BTreeSet::new();
            // A worker that fails the orchestration (its code threw, or its replay found
            // non-determinism) may send its pending actions along, recorded ones included:
            // only the failure counts then.
            use proto::orchestrator_action::OrchestratorActionType as A;
            let failure = r.actions.iter().position(|a| {
                matches!(&a.orchestrator_action_type, Some(A::CompleteOrchestration(c))
                    if c.orchestration_status == proto::OrchestrationStatus::Failed as i32)
            });
            let mut raw = r.actions;
            if let Some(i) = failure {
                raw = vec![raw.swap_remove(i)];
            }
            for a in raw {
                match action_from_proto(a)? {
                    Decided::Action(a) => {
                        // An action id names its result: it may not be that of an action
                        // still waiting for one (an SDK may reuse the id of a finished one,
                        // as the Python SDK does for a retry).
                        if a.id() < 0 || self.open_ids.contains(&a.id()) || !used.insert(a.id())
                        {
                            return Err(BadResponse(format!(
                                "action id {} is negative, repeated, or that of an action still \
                                 waiting for its result",
                                a.id()
                            )));
                        }
                        actions.push(a);
                    }
                    Decided::Complete(_) if completed.is_some() => {
                        return Err(BadResponse(
                            "more than one completeOrchestration action".into(),
                        ));
                    }
                    Decided::Complete(c) => completed = Some(c),
                }
            }
            Ok((actions, completed, custom_status))
        });
        let (actions, completed, custom_status) = match decided {
            Ok(d) => d,
            Err(BadResponse(msg)) => {
                tracing::warn!(instance = %self.id, error = %msg, "a gRPC worker's orchestrator response was refused; the orchestration fails");
                let f = FailureDetails::new("WorkerProtocolError", msg);
                (Vec::new(), Some(Completed::Failed(f)), None)
            }
        };
        let decided_from = history.len();
        for a in &actions {
            history.push(a.history_event(now));
        }
        let outcome = match &completed {
            None => EpisodeOutcome::Running,
            Some(c) => {
                history.push(terminal_event(c, now));
                match c {
                    Completed::Output(o) => EpisodeOutcome::Completed(o.clone()),
                    Completed::Failed(f) => EpisodeOutcome::Failed(f.clone()),
                    Completed::ContinuedAsNew { input, carried } => {
                        EpisodeOutcome::ContinuedAsNew {
                            input: input.clone(),
                            carried: carried.clone(),
                        }
                    }
                }
            }
        };
        history.push(HistoryEvent::new(now, EventKind::OrchestratorCompleted));
        // The new events were tracked and converted before the dispatch.
        let decided = &history[decided_from..];
        track_open(&mut self.open_ids, decided);
        self.past.extend(new_proto);
        self.past
            .extend(decided.iter().map(|e| event_to_proto(&self.id, e)));
        Ok(EpisodeResult {
            history,
            actions,
            outcome,
            custom_status,
            logs: Vec::new(),
        })
    }
}
