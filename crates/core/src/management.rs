//! The management contract: what a Durable Client can ask of a Perdure node.
//!
//! The node implements [`ManagementApi`]; the HTTP API serves it; `perdure-client` calls it
//! in process or over HTTP. Types only — no I/O here.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::{
    EntityId, ExecutionId, FailureDetails, HistoryEvent, InstanceId, OrchestrationStatus, Payload,
    Timestamp,
};

/// What to do when a start names an instance id that already exists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdReusePolicy {
    /// Replace a finished (completed, failed, terminated) instance; refuse a live one
    /// (Durable Functions' default).
    #[default]
    ReplaceFinished,
    /// Refuse whenever the id exists.
    RejectExisting,
    /// Terminate a live instance and start anew.
    TerminateExisting,
}

/// A request to start an orchestration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// Registered orchestration name.
    pub name: String,
    /// Version, if any.
    pub version: Option<String>,
    /// Instance id; a new unique one when `None`.
    pub instance_id: Option<InstanceId>,
    /// Input.
    pub input: Option<Payload>,
    /// Start no earlier than this.
    pub scheduled_start: Option<Timestamp>,
    /// What to do if the id exists.
    pub reuse_policy: IdReusePolicy,
    /// The W3C `traceparent` the orchestration's spans join (stored with the instance).
    pub trace_parent: Option<String>,
}

impl StartRequest {
    /// A start of `name` with no input and a generated id.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: None,
            instance_id: None,
            input: None,
            scheduled_start: None,
            reuse_policy: IdReusePolicy::default(),
            trace_parent: None,
        }
    }
}

/// The state of an orchestration instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// Instance id.
    pub instance_id: InstanceId,
    /// Orchestration name.
    pub name: String,
    /// Version.
    pub version: Option<String>,
    /// Current execution.
    pub execution_id: ExecutionId,
    /// Runtime status.
    pub runtime_status: OrchestrationStatus,
    /// Input (omitted when payloads were not asked for).
    pub input: Option<Payload>,
    /// Output (omitted when payloads were not asked for).
    pub output: Option<Payload>,
    /// Custom status set by the orchestrator.
    pub custom_status: Option<Payload>,
    /// The failure, when failed.
    pub failure: Option<FailureDetails>,
    /// When the instance was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub last_updated_at: Timestamp,
    /// The parent instance, for a sub-orchestration.
    pub parent_instance_id: Option<InstanceId>,
}

/// A filter over instances, with paging.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceQuery {
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created at or before.
    pub created_to: Option<Timestamp>,
    /// Any of these statuses (empty = all).
    pub statuses: Vec<OrchestrationStatus>,
    /// Instance ids starting with this.
    pub instance_id_prefix: Option<String>,
    /// Orchestration name (beyond Durable Functions).
    pub name: Option<String>,
    /// Page size (0 = the server's default, 100).
    pub page_size: u32,
    /// Continuation token from the previous page.
    pub continuation: Option<String>,
    /// Whether to return inputs and outputs.
    pub fetch_payloads: bool,
}

/// One page of instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancePage {
    /// The instances.
    pub instances: Vec<InstanceState>,
    /// Token for the next page, if any.
    pub continuation: Option<String>,
}

/// A filter for bulk purge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeFilter {
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created at or before.
    pub created_to: Option<Timestamp>,
    /// Any of these statuses (empty = every terminal status).
    pub statuses: Vec<OrchestrationStatus>,
}

/// The outcome of a purge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeResult {
    /// Instances removed.
    pub deleted: u64,
    /// Whether everything matching was removed (false: call again to continue).
    pub complete: bool,
}

/// The state of an entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityState {
    /// The entity.
    pub id: EntityId,
    /// Its state (None: no state, or not fetched).
    pub state: Option<Payload>,
    /// When its state last changed.
    pub last_modified: Timestamp,
    /// The critical section holding its lock, if any.
    pub locked_by: Option<String>,
    /// Operations waiting in its queue.
    pub backlog: u64,
}

/// A filter over entities, with paging.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityQuery {
    /// Entity name (lower case; None = all).
    pub name: Option<String>,
    /// Keys starting with this.
    pub key_prefix: Option<String>,
    /// Modified at or after.
    pub last_modified_from: Option<Timestamp>,
    /// Modified at or before.
    pub last_modified_to: Option<Timestamp>,
    /// Page size (0 = 100).
    pub page_size: u32,
    /// Continuation token.
    pub continuation: Option<String>,
    /// Whether to return states.
    pub fetch_state: bool,
}

/// One page of entities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityPage {
    /// The entities.
    pub entities: Vec<EntityState>,
    /// Token for the next page.
    pub continuation: Option<String>,
}

/// The outcome of cleaning entity storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanEntityStorageResult {
    /// Entities without state removed.
    pub empty_entities_removed: u64,
    /// Locks released whose holder had finished.
    pub orphaned_locks_released: u64,
}

/// The kinds of registered functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FunctionKind {
    /// An orchestration.
    Orchestration,
    /// An activity.
    Activity,
    /// An entity.
    Entity,
}

/// Why a management request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ManagementError {
    /// No such instance (or entity).
    #[error("no instance with id {0}")]
    NotFound(String),
    /// The instance exists and the reuse policy refuses it.
    #[error("instance {instance_id} already exists with status {status}")]
    AlreadyExists {
        /// The id.
        instance_id: InstanceId,
        /// Its status.
        status: OrchestrationStatus,
    },
    /// The operation does not apply in the instance's status (for example raising an event on a
    /// completed instance).
    #[error("instance {instance_id} is {status}: cannot {operation}")]
    InvalidState {
        /// The id.
        instance_id: InstanceId,
        /// Its status.
        status: OrchestrationStatus,
        /// What was asked.
        operation: String,
    },
    /// No function of that kind and name is registered.
    #[error("no {kind:?} named {name:?} is registered; registered: {registered:?}")]
    UnknownName {
        /// The kind.
        kind: FunctionKind,
        /// The name asked for.
        name: String,
        /// What is registered.
        registered: Vec<String>,
    },
    /// The request is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A payload is over the size limit.
    #[error("payload of {size} bytes is over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The node is saturated; try again later.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The node cannot serve the request now (store down, shutting down); retryable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request could not be completed; it may or may not have taken effect.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ManagementError {
    /// Whether the same request may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Overloaded(_) | Self::Unavailable(_))
    }
}

/// Result of a management call.
pub type ManagementResult<T> = Result<T, ManagementError>;

/// What a Durable Client can do. Implemented by the node (in process) and by the HTTP
/// transport of `perdure-client`.
pub trait ManagementApi: Send + Sync {
    /// Starts an orchestration; returns its instance id.
    fn start(&self, req: StartRequest) -> BoxFuture<'_, ManagementResult<InstanceId>>;
    /// The instance's state, with or without input and output.
    fn get_instance(
        &self,
        id: InstanceId,
        with_payloads: bool,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>>;
    /// The current execution's history.
    fn get_history(
        &self,
        id: InstanceId,
    ) -> BoxFuture<'_, ManagementResult<Option<Vec<HistoryEvent>>>>;
    /// Waits until the instance is terminal or `timeout` passes, then returns its state.
    fn wait_for_completion(
        &self,
        id: InstanceId,
        timeout: std::time::Duration,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>>;
    /// A page of instances.
    fn query_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<InstancePage>>;
    /// Counts of instances per status, for the query's filters (paging ignored).
    fn count_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<BTreeMap<OrchestrationStatus, u64>>>;
    /// Raises an event.
    fn raise_event(
        &self,
        id: InstanceId,
        name: String,
        data: Option<Payload>,
    ) -> BoxFuture<'_, ManagementResult<()>>;
    /// Terminates an instance (and, if `recursive`, its sub-orchestrations).
    fn terminate(
        &self,
        id: InstanceId,
        reason: Option<String>,
        recursive: bool,
    ) -> BoxFuture<'_, ManagementResult<()>>;
    /// Suspends an instance.
    fn suspend(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>>;
    /// Resumes a suspended instance.
    fn resume(&self, id: InstanceId, reason: Option<String>)
    -> BoxFuture<'_, ManagementResult<()>>;
    /// Rewinds a failed instance to its last successful step.
    fn rewind(&self, id: InstanceId, reason: Option<String>)
    -> BoxFuture<'_, ManagementResult<()>>;
    /// Restarts an instance with its original input; returns the (new) instance id.
    fn restart(
        &self,
        id: InstanceId,
        new_instance_id: bool,
    ) -> BoxFuture<'_, ManagementResult<InstanceId>>;
    /// Purges one finished instance.
    fn purge_instance(&self, id: InstanceId) -> BoxFuture<'_, ManagementResult<PurgeResult>>;
    /// Purges finished instances matching a filter, a bounded batch per call.
    fn purge_instances(&self, filter: PurgeFilter) -> BoxFuture<'_, ManagementResult<PurgeResult>>;
    /// Signals an entity.
    fn signal_entity(
        &self,
        entity: EntityId,
        operation: String,
        input: Option<Payload>,
        scheduled_time: Option<Timestamp>,
    ) -> BoxFuture<'_, ManagementResult<()>>;
    /// An entity's state.
    fn get_entity(&self, entity: EntityId) -> BoxFuture<'_, ManagementResult<Option<EntityState>>>;
    /// A page of entities.
    fn query_entities(&self, query: EntityQuery) -> BoxFuture<'_, ManagementResult<EntityPage>>;
    /// Removes empty entities and releases orphaned locks.
    fn clean_entity_storage(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
    ) -> BoxFuture<'_, ManagementResult<CleanEntityStorageResult>>;
    /// Registered function names of a kind, sorted.
    fn registered_names(&self, kind: FunctionKind) -> Vec<String>;
}
