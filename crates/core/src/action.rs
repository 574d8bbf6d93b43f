//! Orchestrator actions: what an episode asks the runtime to do.
//!
//! The replay engine returns these; the runtime performs them, in the same store transaction
//! that appends the episode's history events.

use serde::{Deserialize, Serialize};

use crate::{EntityId, InstanceId, Payload, Timestamp};

/// One thing an orchestrator asked for in an episode. `id` is the action's sequence number,
/// equal to the `event_id` of the history event that records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrchestratorAction {
    /// Run an activity; its result comes back as TaskCompleted / TaskFailed.
    ScheduleTask {
        /// Sequence number.
        id: i64,
        /// Activity name.
        name: String,
        /// Activity version.
        version: Option<String>,
        /// Input.
        input: Option<Payload>,
    },
    /// Fire a TimerFired event at `fire_at`.
    CreateTimer {
        /// Sequence number.
        id: i64,
        /// Due time.
        fire_at: Timestamp,
    },
    /// Start a sub-orchestration; its result comes back as
    /// SubOrchestrationInstanceCompleted / Failed.
    CreateSubOrchestration {
        /// Sequence number.
        id: i64,
        /// Orchestration name.
        name: String,
        /// Version.
        version: Option<String>,
        /// The child's instance id.
        instance_id: InstanceId,
        /// Input.
        input: Option<Payload>,
    },
    /// Raise an event on another instance (EventRaised there).
    SendEvent {
        /// Sequence number.
        id: i64,
        /// Target.
        instance_id: InstanceId,
        /// Event name.
        name: String,
        /// Event data.
        input: Option<Payload>,
    },
    /// Signal an entity (one-way).
    SignalEntity {
        /// Sequence number.
        id: i64,
        /// Target.
        entity: EntityId,
        /// Operation.
        operation: String,
        /// Input.
        input: Option<Payload>,
        /// Deliver no earlier than this.
        scheduled_time: Option<Timestamp>,
    },
    /// Call an entity operation; the response comes back as EntityOperationCompleted / Failed
    /// with `task_scheduled_id == id`.
    CallEntity {
        /// Sequence number.
        id: i64,
        /// Target.
        entity: EntityId,
        /// Operation.
        operation: String,
        /// Input.
        input: Option<Payload>,
    },
    /// Acquire locks on entities, in the given (sorted) order; EntityLockGranted comes back
    /// when all are held.
    LockEntities {
        /// Sequence number.
        id: i64,
        /// The critical section.
        critical_section_id: String,
        /// The entities, sorted and without duplicates.
        entities: Vec<EntityId>,
    },
    /// Release the lock of a critical section on one entity.
    UnlockEntity {
        /// Sequence number.
        id: i64,
        /// The critical section.
        critical_section_id: String,
        /// The entity.
        entity: EntityId,
    },
}

impl OrchestratorAction {
    /// The history event that records this action (its `event_id` is the action's sequence
    /// number), as the replay engine writes it.
    pub fn history_event(&self, timestamp: Timestamp) -> crate::HistoryEvent {
        crate::replay::describe::action_event(self, timestamp)
    }

    /// The action's sequence number.
    pub fn id(&self) -> i64 {
        match self {
            Self::ScheduleTask { id, .. }
            | Self::CreateTimer { id, .. }
            | Self::CreateSubOrchestration { id, .. }
            | Self::SendEvent { id, .. }
            | Self::SignalEntity { id, .. }
            | Self::CallEntity { id, .. }
            | Self::LockEntities { id, .. }
            | Self::UnlockEntity { id, .. } => *id,
        }
    }
}
