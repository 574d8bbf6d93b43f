//! The records stored above the store contract, and the messages between instances and
//! entities. All are encoded with `perdure_core::codec`.

use perdure_core::management::InstanceState;
use perdure_core::{
    EntityId, ExecutionId, FailureDetails, HistoryEvent, InstanceId, OrchestrationStatus,
    ParentInstance, Payload, Timestamp,
};
use serde::{Deserialize, Serialize};

/// The durable record of an orchestration instance (its current execution).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Instance id.
    pub instance_id: InstanceId,
    /// Orchestration name.
    pub name: String,
    /// Version.
    pub version: Option<String>,
    /// Current execution.
    pub execution_id: ExecutionId,
    /// Runtime status.
    pub status: OrchestrationStatus,
    /// Input of the current execution.
    pub input: Option<Payload>,
    /// Output, when completed.
    pub output: Option<Payload>,
    /// Custom status.
    pub custom_status: Option<Payload>,
    /// Failure, when failed.
    pub failure: Option<FailureDetails>,
    /// Creation time (of the instance; kept across continue-as-new).
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// The parent, for a sub-orchestration.
    pub parent: Option<ParentInstance>,
    /// Number of history events of the current execution (the next sequence number).
    pub history_len: u64,
    /// The input the instance was first started with (for restart).
    pub original_input: Option<Payload>,
}

impl InstanceRecord {
    /// The management view of the record.
    pub fn to_state(&self, with_payloads: bool) -> InstanceState {
        InstanceState {
            instance_id: self.instance_id.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            execution_id: self.execution_id.clone(),
            runtime_status: self.status,
            input: if with_payloads {
                self.input.clone()
            } else {
                None
            },
            output: if with_payloads {
                self.output.clone()
            } else {
                None
            },
            custom_status: self.custom_status.clone(),
            failure: self.failure.clone(),
            created_at: self.created_at,
            last_updated_at: self.updated_at,
            parent_instance_id: self.parent.as_ref().map(|p| p.instance_id.clone()),
        }
    }
}

/// Who a message is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Target {
    /// An orchestration instance.
    Instance(InstanceId),
    /// An entity.
    Entity(EntityId),
}

impl Target {
    /// The string that is hashed to find the partition (`@name@key` for entities).
    pub fn routing_key(&self) -> String {
        match self {
            Target::Instance(id) => id.as_str().to_string(),
            Target::Entity(id) => id.to_string(),
        }
    }
}

/// A message in a partition's inbox (or a timer's message, delivered when due).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// The recipient.
    pub target: Target,
    /// What it says.
    pub body: MessageBody,
}

/// The contents of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// A history event for an orchestration instance (ExecutionStarted, TaskCompleted,
    /// TimerFired, EventRaised, sub-orchestration results, entity responses, lock grants,
    /// ExecutionTerminated / Suspended / Resumed).
    Event {
        /// The execution it is for (`None`: whatever execution is current).
        execution_id: Option<ExecutionId>,
        /// The event.
        event: HistoryEvent,
    },
    /// A whole new execution: replaces the instance's history (continue-as-new, restart,
    /// a start over a finished instance). `carried` events are delivered right after.
    NewExecution {
        /// The ExecutionStarted event.
        started: HistoryEvent,
        /// Events carried over from the previous execution.
        carried: Vec<HistoryEvent>,
    },
    /// An entity operation (signal or call).
    EntityOperation(EntityOperationMsg),
    /// A critical section asks for this entity's lock.
    LockRequest(LockRequestMsg),
    /// Terminate the instance (and, if `recursive`, its running sub-orchestrations).
    Terminate {
        /// Why.
        reason: Option<String>,
        /// Whether sub-orchestrations are terminated too.
        recursive: bool,
    },
    /// Suspend the instance: new events wait until it is resumed.
    Suspend {
        /// Why.
        reason: Option<String>,
    },
    /// Resume a suspended instance.
    Resume {
        /// Why.
        reason: Option<String>,
    },
    /// Rewind a failed instance to its last successful step.
    Rewind {
        /// Why.
        reason: Option<String>,
    },
    /// A critical section releases this entity's lock.
    Unlock {
        /// The critical section.
        critical_section_id: String,
        /// The holder.
        holder: InstanceId,
    },
}

/// Who called an entity operation and how to answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityCaller {
    /// The calling orchestration.
    pub instance_id: InstanceId,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// The sequence number of its EntityOperationCalled.
    pub request_id: i64,
}

/// An entity operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityOperationMsg {
    /// Operation name.
    pub operation: String,
    /// Input.
    pub input: Option<Payload>,
    /// The caller, for a call (None for a signal).
    pub caller: Option<EntityCaller>,
    /// The critical section this operation runs in, if its caller holds the lock.
    pub critical_section_id: Option<String>,
    /// The instance that sent it, if an orchestration.
    pub sender: Option<InstanceId>,
}

/// A lock request travelling along the sorted lock set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequestMsg {
    /// The critical section.
    pub critical_section_id: String,
    /// The orchestration asking.
    pub holder: InstanceId,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// The sorted lock set.
    pub lock_set: Vec<EntityId>,
    /// Index in `lock_set` of the entity this request is for.
    pub position: u32,
}

/// An activity task in a partition's work queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityTask {
    /// The orchestration that scheduled it.
    pub instance_id: InstanceId,
    /// Its execution.
    pub execution_id: ExecutionId,
    /// The TaskScheduled sequence number.
    pub seq: i64,
    /// Activity name.
    pub name: String,
    /// Version.
    pub version: Option<String>,
    /// Input.
    pub input: Option<Payload>,
    /// Attempts started so far (1 on the first run).
    pub attempt: u32,
    /// The lease: another worker may run it after this time.
    pub lease_until: Timestamp,
}

/// The lock of an entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityLock {
    /// The critical section.
    pub critical_section_id: String,
    /// The orchestration holding it.
    pub holder: InstanceId,
}

/// The durable record of an entity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// The state (None: no state).
    pub state: Option<Payload>,
    /// Last state change.
    pub last_modified: Timestamp,
    /// The lock, if held.
    pub lock: Option<EntityLock>,
}

/// A partition lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Incremented by every acquisition.
    pub epoch: u64,
    /// The owning node.
    pub owner: String,
    /// The lease expires at this time unless renewed.
    pub expires_at: Timestamp,
}

/// A node's membership heartbeat: live nodes are those whose record is fresh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's name (unique among live nodes; the lease owner).
    pub name: String,
    /// Unique per process start: tells a restarted node from its crashed predecessor.
    pub incarnation: u64,
    /// The address peers dial for the cluster transport (empty: none).
    pub cluster_address: String,
    /// The HTTP address of the node's management API (empty: unknown).
    pub http_address: String,
    /// The node's software version.
    pub version: String,
    /// When this process joined.
    pub started_at: Timestamp,
    /// The last heartbeat.
    pub last_seen: Timestamp,
    /// Heartbeats written by this process (a live process keeps raising it).
    pub beats: u64,
    /// The node is leaving (handing its partitions off): it is no desired owner any more.
    pub leaving: bool,
}

/// An episode committed in stages whose effects (messages, timers, tasks, new instance
/// records) are still being written: chunks `next..chunks` of attempt `attempt` remain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedMarker {
    /// The staging attempt whose chunks the episode published (unique per node process).
    pub attempt: (u64, u64),
    /// How many effect chunks the attempt staged.
    pub chunks: u64,
    /// The first chunk not yet written out.
    pub next: u64,
}
