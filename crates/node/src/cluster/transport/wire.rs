//! What travels between nodes: requests, replies and casts, each encoded by the one codec
//! (`perdure_core::codec`: a version byte, then bincode 2, decoded with a size limit) and
//! carried as opaque bytes inside a `ractor_cluster` message. Nothing here holds an actor
//! reference: peers name each other by node name only.

use perdure_core::codec::{self, CodecError};
use perdure_core::management::{
    EntityState, InstanceState, ManagementResult, PurgeResult, StartRequest,
};
use perdure_core::{EntityId, HistoryEvent, InstanceId, Payload, Timestamp};
use serde::{Deserialize, Serialize};

/// A request that expects a reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A management operation on one instance or entity, for the owner of its partition.
    Forward(ForwardRequest),
    /// A round trip with no work (latency probe, liveness).
    Ping,
    /// A Durable Task work item for the receiver's gRPC workers: the sender owns the
    /// partition and has no worker that serves the name. Answered with
    /// [`PeerReply::WorkItemDone`] once one of them completes it, or [`PeerReply::NoWorker`].
    WorkItem(WorkItemRequest),
}

/// A work item handed to another node's gRPC workers (`docs/grpc.md`, "In a cluster").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkItemRequest {
    /// The sending node (the partition's owner).
    pub origin: String,
    /// The sending process (a restarted node numbers its items from 0 again).
    pub incarnation: u64,
    /// The item's number among the sender's forwarded items (with `origin` and
    /// `incarnation`, what [`PeerCast::WithdrawWorkItem`] names).
    pub id: u64,
    /// 0 orchestrator, 1 activity, 2 entity batch.
    pub kind: u8,
    /// The orchestration, activity or entity name (what workers filter on).
    pub name: String,
    /// The protocol's `WorkItem.request`, protobuf-encoded (a `WorkItem` without a token).
    pub item: Vec<u8>,
    /// How long the receiver waits for a completion, in milliseconds.
    pub wait_ms: u64,
}

/// The gRPC workers connected to a node: the names they serve (what a peer needs to know to
/// send it work items and to accept starts of those names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkersSummary {
    /// The node.
    pub node: String,
    /// How many workers are connected.
    pub workers: u32,
    /// Some worker serves every name (it sent no filters).
    pub any: bool,
    /// Orchestration names served.
    pub orchestrations: Vec<String>,
    /// Activity names served.
    pub activities: Vec<String>,
    /// Entity names served.
    pub entities: Vec<String>,
}

/// A one-way message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerCast {
    /// New inbox messages or timers were committed to `partition`: its owner should read them.
    Nudge {
        /// The partition.
        partition: u32,
    },
    /// The sender's gRPC workers changed (or a periodic refresh): what they serve.
    Workers(WorkersSummary),
    /// The owner no longer waits for work item `id` it sent (its episode was cancelled, its
    /// call failed, the node is stopping): the receiver withdraws it from its workers.
    WithdrawWorkItem {
        /// The sending node.
        origin: String,
        /// The sending process.
        incarnation: u64,
        /// The item's number.
        id: u64,
    },
}

/// The answer to a [`PeerRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReply {
    /// The outcome of a forwarded operation.
    Forwarded(Box<ForwardReply>),
    /// The receiving node does not own the target's partition (a handoff is under way, or
    /// the sender's view of ownership is stale): ask again after ownership settles.
    NotMine {
        /// The partition asked about.
        partition: u32,
    },
    /// The receiving node is not serving yet (starting or stopping).
    NotReady,
    /// The answer to [`PeerRequest::Ping`].
    Pong,
    /// The request's bytes did not decode; nothing was done.
    Undecodable(String),
    /// A worker completed the [`PeerRequest::WorkItem`]: the completion's kind (as in the
    /// request) and the protocol message, protobuf-encoded.
    WorkItemDone {
        /// 0 `OrchestratorResponse`, 1 `ActivityResponse`, 2 `EntityBatchResult`.
        kind: u8,
        /// The message.
        completion: Vec<u8>,
    },
    /// No worker of the receiver serves the work item's name (any more): nothing was done
    /// with it; send it elsewhere.
    NoWorker(String),
    /// The work item cannot be carried between nodes (its request or its completion is over
    /// the transport's limit): sending it again would fail the same way.
    WorkItemFailed(String),
    /// The receiver stopped waiting for its worker (its wait limit passed): the item may or
    /// may not have run; send it again.
    WorkItemUnfinished(String),
}

/// A management operation that targets one instance or entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// `ManagementApi::start`; the ingress node has already chosen the instance id.
    Start {
        /// The request (its `instance_id` is always set when forwarded).
        req: StartRequest,
    },
    /// `ManagementApi::get_instance`.
    GetInstance {
        /// The instance.
        id: InstanceId,
        /// Include input and output.
        with_payloads: bool,
    },
    /// `ManagementApi::get_history`.
    GetHistory {
        /// The instance.
        id: InstanceId,
    },
    /// `ManagementApi::wait_for_completion` (a long poll, answered when the instance ends or
    /// the timeout passes).
    WaitForCompletion {
        /// The instance.
        id: InstanceId,
        /// The longest wait, in milliseconds.
        timeout_ms: u64,
    },
    /// `ManagementApi::raise_event`.
    RaiseEvent {
        /// The instance.
        id: InstanceId,
        /// Event name.
        name: String,
        /// Event data.
        data: Option<Payload>,
    },
    /// `ManagementApi::terminate`.
    Terminate {
        /// The instance.
        id: InstanceId,
        /// Why.
        reason: Option<String>,
        /// Also its sub-orchestrations.
        recursive: bool,
    },
    /// `ManagementApi::suspend`.
    Suspend {
        /// The instance.
        id: InstanceId,
        /// Why.
        reason: Option<String>,
    },
    /// `ManagementApi::resume`.
    Resume {
        /// The instance.
        id: InstanceId,
        /// Why.
        reason: Option<String>,
    },
    /// `ManagementApi::rewind`.
    Rewind {
        /// The instance.
        id: InstanceId,
        /// Why.
        reason: Option<String>,
    },
    /// `ManagementApi::restart`.
    Restart {
        /// The instance.
        id: InstanceId,
        /// Start under a new id.
        new_instance_id: bool,
    },
    /// `ManagementApi::purge_instance`.
    PurgeInstance {
        /// The instance.
        id: InstanceId,
    },
    /// `ManagementApi::signal_entity`.
    SignalEntity {
        /// The entity.
        entity: EntityId,
        /// The operation.
        operation: String,
        /// Its input.
        input: Option<Payload>,
        /// Deliver no earlier than this.
        scheduled_time: Option<Timestamp>,
    },
    /// `ManagementApi::get_entity`.
    GetEntity {
        /// The entity.
        entity: EntityId,
    },
}

impl ForwardRequest {
    /// The routing key of the target (instance id, or `@name@key` for an entity): what
    /// decides its partition.
    pub fn routing_key(&self) -> String {
        match self {
            Self::Start { req } => req
                .instance_id
                .as_ref()
                .map(|i| i.as_str().to_string())
                .unwrap_or_default(),
            Self::GetInstance { id, .. }
            | Self::GetHistory { id }
            | Self::WaitForCompletion { id, .. }
            | Self::RaiseEvent { id, .. }
            | Self::Terminate { id, .. }
            | Self::Suspend { id, .. }
            | Self::Resume { id, .. }
            | Self::Rewind { id, .. }
            | Self::Restart { id, .. }
            | Self::PurgeInstance { id } => id.as_str().to_string(),
            Self::SignalEntity { entity, .. } | Self::GetEntity { entity } => entity.to_string(),
        }
    }

    /// The operation's name, for logs and errors.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Start { .. } => "start",
            Self::GetInstance { .. } => "get_instance",
            Self::GetHistory { .. } => "get_history",
            Self::WaitForCompletion { .. } => "wait_for_completion",
            Self::RaiseEvent { .. } => "raise_event",
            Self::Terminate { .. } => "terminate",
            Self::Suspend { .. } => "suspend",
            Self::Resume { .. } => "resume",
            Self::Rewind { .. } => "rewind",
            Self::Restart { .. } => "restart",
            Self::PurgeInstance { .. } => "purge_instance",
            Self::SignalEntity { .. } => "signal_entity",
            Self::GetEntity { .. } => "get_entity",
        }
    }
}

/// The outcome of a [`ForwardRequest`], one variant per result type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardReply {
    /// raise_event, terminate, suspend, resume, rewind, signal_entity.
    Unit(ManagementResult<()>),
    /// start, restart.
    InstanceId(ManagementResult<InstanceId>),
    /// get_instance, wait_for_completion.
    Instance(ManagementResult<Option<InstanceState>>),
    /// get_history.
    History(ManagementResult<Option<Vec<HistoryEvent>>>),
    /// purge_instance.
    Purge(ManagementResult<PurgeResult>),
    /// get_entity.
    Entity(ManagementResult<Option<EntityState>>),
}

/// Encodes a wire value with the one codec.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    codec::encode(value)
}

/// Decodes a wire value with the one codec (size-limited, never panics).
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    codec::decode(bytes)
}
