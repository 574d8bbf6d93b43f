//! The executor seam: the runtime hands a work item (history plus new events, an activity
//! input, an entity batch) to an executor and commits what comes back. Today the executor is
//! the in-process registry of `perdure-core` ([`super::core_executor`]), or the workers
//! connected over the Durable Task gRPC protocol (`crate::grpc::workers`), which run the
//! functions the node does not have.

use futures::future::BoxFuture;
use perdure_core::management::FunctionKind;
use perdure_core::{
    EntityId, FailureDetails, HistoryEvent, InstanceId, OrchestratorAction, Payload, Timestamp,
};

/// How an episode ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpisodeOutcome {
    /// Still running: waits for more events.
    Running,
    /// Finished with an output.
    Completed(Option<Payload>),
    /// Finished with a failure.
    Failed(FailureDetails),
    /// Ends this execution; a new one starts with `input`, and `carried` events are
    /// delivered to it.
    ContinuedAsNew {
        /// The next execution's input.
        input: Option<Payload>,
        /// Unprocessed events carried over.
        carried: Vec<HistoryEvent>,
    },
}

/// What one episode produced.
#[derive(Clone, Debug)]
pub struct EpisodeResult {
    /// History events to append (the new events included).
    pub history: Vec<HistoryEvent>,
    /// Actions to perform.
    pub actions: Vec<OrchestratorAction>,
    /// How it ended.
    pub outcome: EpisodeOutcome,
    /// The custom status after the episode.
    pub custom_status: Option<Payload>,
    /// Log lines written by the orchestrator while not replaying.
    pub logs: Vec<String>,
}

/// Why an episode could not run now (nothing was decided: the same events run again later).
#[derive(Clone, Debug, thiserror::Error)]
#[error("the episode could not run: {0}")]
pub struct EpisodeUnavailable(pub String);

/// A live orchestration: replayed once on activation, then fed new events episode by episode.
pub trait OrchestrationSession: Send {
    /// Runs one episode with the new events. A future: the episode may run out of process
    /// (a worker connected over gRPC). An error decides nothing: the caller forgets the
    /// session and runs the same events again later.
    fn execute(
        &mut self,
        now: Timestamp,
        new_events: Vec<HistoryEvent>,
    ) -> BoxFuture<'_, Result<EpisodeResult, EpisodeUnavailable>>;
}

/// One entity operation of a batch.
#[derive(Clone, Debug)]
pub struct EntityOp {
    /// Operation name.
    pub operation: String,
    /// Input.
    pub input: Option<Payload>,
    /// A unique id of the request (the message key), so that a re-executed batch starts the
    /// same orchestration ids.
    pub request_id: String,
}

/// Something an entity operation sends.
#[derive(Clone, Debug)]
pub enum EntitySend {
    /// Signal another entity.
    Signal {
        /// Target.
        entity: EntityId,
        /// Operation.
        operation: String,
        /// Input.
        input: Option<Payload>,
        /// Deliver no earlier than this.
        scheduled_time: Option<Timestamp>,
    },
    /// Start an orchestration.
    StartOrchestration {
        /// Orchestration name.
        name: String,
        /// Version.
        version: Option<String>,
        /// Instance id.
        instance_id: InstanceId,
        /// Input.
        input: Option<Payload>,
        /// Start no earlier than this (a scheduled start).
        scheduled_start: Option<Timestamp>,
    },
}

/// What an entity batch produced.
#[derive(Clone, Debug)]
pub struct EntityBatchOutput {
    /// The state after the batch (None: deleted / no state).
    pub state: Option<Payload>,
    /// One result per operation, in order.
    pub results: Vec<Result<Option<Payload>, FailureDetails>>,
    /// Messages the operations sent (only those of successful operations).
    pub sends: Vec<EntitySend>,
}

/// Runs user code for the runtime.
pub trait Executors: Send + Sync + 'static {
    /// Replays an orchestration over its history; a failure (unknown name, bad input,
    /// non-determinism) fails only that instance.
    fn load_orchestration(
        &self,
        id: &InstanceId,
        history: Vec<HistoryEvent>,
    ) -> Result<Box<dyn OrchestrationSession>, FailureDetails>;
    /// Runs an activity; panics are caught and become failures.
    fn run_activity(
        &self,
        instance_id: &InstanceId,
        name: &str,
        task_id: i64,
        attempt: u32,
        input: Option<Payload>,
    ) -> BoxFuture<'static, Result<Option<Payload>, FailureDetails>>;
    /// Runs a batch of operations on an entity's state. A future: an operation may await
    /// (an `async` entity method, or a batch handed to a worker out of process). An error
    /// decides nothing: the same operations run again later.
    fn run_entity_batch(
        &self,
        id: &EntityId,
        state: Option<Payload>,
        ops: Vec<EntityOp>,
        now: Timestamp,
    ) -> BoxFuture<'static, Result<EntityBatchOutput, EpisodeUnavailable>>;
    /// Registered names of a kind, sorted.
    fn names(&self, kind: FunctionKind) -> Vec<String>;
    /// Whether a name of a kind is registered (entity names ignore case). Checked on every
    /// start and signal; the default searches [`Executors::names`].
    fn knows(&self, kind: FunctionKind, name: &str) -> bool {
        let names = self.names(kind);
        match kind {
            FunctionKind::Entity => names.iter().any(|n| n.eq_ignore_ascii_case(name)),
            _ => names.iter().any(|n| n == name),
        }
    }
    /// Rewinds a failed execution's history so that it resumes from its last successful
    /// step; returns the history to replay. The runtime re-queues the activities and timers
    /// that the returned history leaves pending. The default cuts the history just before
    /// its first failure event ([`super::rewind::cut_before_failure`]).
    fn rewind(
        &self,
        history: Vec<HistoryEvent>,
        reason: Option<String>,
        now: Timestamp,
    ) -> Result<Vec<HistoryEvent>, FailureDetails> {
        let _ = (reason, now);
        super::rewind::cut_before_failure(history)
    }
}
