//! History events: the durable record of an orchestration execution, with DTFx names.
//!
//! `event_id` follows DTFx: for an event that records an orchestrator action (TaskScheduled,
//! TimerCreated, SubOrchestrationInstanceCreated, EventSent, EntityOperationSignaled,
//! EntityOperationCalled, EntityLockRequested, EntityUnlockSent) it is the action's sequence
//! number; completions refer to it (`task_scheduled_id`, `timer_id`); every other event has
//! `event_id == -1`.

use serde::{Deserialize, Serialize};

use crate::{
    EntityId, ExecutionId, FailureDetails, InstanceId, OrchestrationStatus, Payload, Timestamp,
};

/// One event of an orchestration's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// The action sequence number for action events, `-1` for the others.
    pub event_id: i64,
    /// When the event was recorded (set by the runtime).
    pub timestamp: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

impl HistoryEvent {
    /// An event with `event_id == -1`.
    pub fn new(timestamp: Timestamp, kind: EventKind) -> Self {
        Self {
            event_id: -1,
            timestamp,
            kind,
        }
    }

    /// The DTFx name of the event kind (`"TaskScheduled"`, ...).
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// The parent of a sub-orchestration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentInstance {
    /// The parent's orchestration name.
    pub name: String,
    /// The parent's instance id.
    pub instance_id: InstanceId,
    /// The parent's execution.
    pub execution_id: ExecutionId,
    /// The sequence number of the parent's SubOrchestrationInstanceCreated event.
    pub task_scheduled_id: i64,
}

/// The kinds of history events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Marks the start of an episode; its timestamp is the orchestrator's current time.
    OrchestratorStarted,
    /// Marks the end of an episode.
    OrchestratorCompleted,
    /// The first event of an execution.
    ExecutionStarted {
        /// The orchestration name.
        name: String,
        /// The orchestration version, if any.
        version: Option<String>,
        /// The input.
        input: Option<Payload>,
        /// This execution's id.
        execution_id: ExecutionId,
        /// The parent, for a sub-orchestration.
        parent: Option<ParentInstance>,
        /// A start time in the future, for a scheduled start.
        scheduled_start: Option<Timestamp>,
    },
    /// The execution finished (completed or failed).
    ExecutionCompleted {
        /// Completed or Failed.
        status: OrchestrationStatus,
        /// The output, when completed.
        result: Option<Payload>,
        /// The failure, when failed.
        failure: Option<FailureDetails>,
    },
    /// The execution was terminated.
    ExecutionTerminated {
        /// Why.
        reason: Option<String>,
    },
    /// The execution was suspended.
    ExecutionSuspended {
        /// Why.
        reason: Option<String>,
    },
    /// The execution was resumed.
    ExecutionResumed {
        /// Why.
        reason: Option<String>,
    },
    /// The execution ended by continuing as new; a new execution starts with this input.
    ContinueAsNew {
        /// The input of the next execution.
        input: Option<Payload>,
    },
    /// An activity was scheduled.
    TaskScheduled {
        /// Activity name.
        name: String,
        /// Activity version.
        version: Option<String>,
        /// Input.
        input: Option<Payload>,
    },
    /// An activity completed.
    TaskCompleted {
        /// The `event_id` of its TaskScheduled.
        task_scheduled_id: i64,
        /// Output.
        result: Option<Payload>,
    },
    /// An activity failed.
    TaskFailed {
        /// The `event_id` of its TaskScheduled.
        task_scheduled_id: i64,
        /// The failure.
        failure: FailureDetails,
    },
    /// A durable timer was created.
    TimerCreated {
        /// When it fires.
        fire_at: Timestamp,
    },
    /// A durable timer fired.
    TimerFired {
        /// The `event_id` of its TimerCreated.
        timer_id: i64,
        /// When it was due.
        fire_at: Timestamp,
    },
    /// A sub-orchestration was started.
    SubOrchestrationInstanceCreated {
        /// Orchestration name.
        name: String,
        /// Version.
        version: Option<String>,
        /// The child's instance id.
        instance_id: InstanceId,
        /// Input.
        input: Option<Payload>,
    },
    /// A sub-orchestration completed.
    SubOrchestrationInstanceCompleted {
        /// The `event_id` of its SubOrchestrationInstanceCreated.
        task_scheduled_id: i64,
        /// Output.
        result: Option<Payload>,
    },
    /// A sub-orchestration failed.
    SubOrchestrationInstanceFailed {
        /// The `event_id` of its SubOrchestrationInstanceCreated.
        task_scheduled_id: i64,
        /// The failure.
        failure: FailureDetails,
    },
    /// An external event arrived.
    EventRaised {
        /// Event name.
        name: String,
        /// Event data.
        input: Option<Payload>,
    },
    /// This orchestration sent an event to another instance.
    EventSent {
        /// Target instance.
        instance_id: InstanceId,
        /// Event name.
        name: String,
        /// Event data.
        input: Option<Payload>,
    },
    /// This orchestration signalled an entity (one-way).
    EntityOperationSignaled {
        /// Target entity.
        entity: EntityId,
        /// Operation name.
        operation: String,
        /// Operation input.
        input: Option<Payload>,
        /// Deliver no earlier than this time.
        scheduled_time: Option<Timestamp>,
    },
    /// This orchestration called an entity operation (request/response).
    EntityOperationCalled {
        /// Target entity.
        entity: EntityId,
        /// Operation name.
        operation: String,
        /// Operation input.
        input: Option<Payload>,
    },
    /// An entity operation called by this orchestration completed.
    EntityOperationCompleted {
        /// The `event_id` of its EntityOperationCalled.
        task_scheduled_id: i64,
        /// Operation result.
        result: Option<Payload>,
    },
    /// An entity operation called by this orchestration failed.
    EntityOperationFailed {
        /// The `event_id` of its EntityOperationCalled.
        task_scheduled_id: i64,
        /// The failure.
        failure: FailureDetails,
    },
    /// This orchestration asked for locks on a set of entities (a critical section).
    EntityLockRequested {
        /// Identifies the critical section (deterministic).
        critical_section_id: String,
        /// The entities to lock, sorted.
        lock_set: Vec<EntityId>,
    },
    /// All locks of a critical section were granted.
    EntityLockGranted {
        /// The critical section.
        critical_section_id: String,
    },
    /// This orchestration released its lock on an entity.
    EntityUnlockSent {
        /// The critical section.
        critical_section_id: String,
        /// The entity released.
        entity: EntityId,
    },
}

impl EventKind {
    /// The DTFx name of the event kind.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OrchestratorStarted => "OrchestratorStarted",
            Self::OrchestratorCompleted => "OrchestratorCompleted",
            Self::ExecutionStarted { .. } => "ExecutionStarted",
            Self::ExecutionCompleted { .. } => "ExecutionCompleted",
            Self::ExecutionTerminated { .. } => "ExecutionTerminated",
            Self::ExecutionSuspended { .. } => "ExecutionSuspended",
            Self::ExecutionResumed { .. } => "ExecutionResumed",
            Self::ContinueAsNew { .. } => "ContinueAsNew",
            Self::TaskScheduled { .. } => "TaskScheduled",
            Self::TaskCompleted { .. } => "TaskCompleted",
            Self::TaskFailed { .. } => "TaskFailed",
            Self::TimerCreated { .. } => "TimerCreated",
            Self::TimerFired { .. } => "TimerFired",
            Self::SubOrchestrationInstanceCreated { .. } => "SubOrchestrationInstanceCreated",
            Self::SubOrchestrationInstanceCompleted { .. } => "SubOrchestrationInstanceCompleted",
            Self::SubOrchestrationInstanceFailed { .. } => "SubOrchestrationInstanceFailed",
            Self::EventRaised { .. } => "EventRaised",
            Self::EventSent { .. } => "EventSent",
            Self::EntityOperationSignaled { .. } => "EntityOperationSignaled",
            Self::EntityOperationCalled { .. } => "EntityOperationCalled",
            Self::EntityOperationCompleted { .. } => "EntityOperationCompleted",
            Self::EntityOperationFailed { .. } => "EntityOperationFailed",
            Self::EntityLockRequested { .. } => "EntityLockRequested",
            Self::EntityLockGranted { .. } => "EntityLockGranted",
            Self::EntityUnlockSent { .. } => "EntityUnlockSent",
        }
    }
}
