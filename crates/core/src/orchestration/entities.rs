//! Entity operations from an orchestration: signals, calls and critical sections.
//!
//! Critical sections follow Durable Functions' rules; a violation is a [`LockError`] value
//! returned to the orchestrator, never a panic:
//! - critical sections cannot be nested ([`LockError::NestedCriticalSection`]);
//! - inside one, only locked entities may be called ([`LockError::NotLocked`]), and not twice
//!   in parallel ([`LockError::ParallelCall`]);
//! - inside one, no sub-orchestration may be started
//!   ([`LockError::SubOrchestrationInCriticalSection`]);
//! - inside one, only entities that are *not* locked may be signalled
//!   ([`LockError::SignalToLockedEntity`]; a locked entity is called, not signalled).
//!
//! "Inside" starts when the lock is requested. Locks are released when the
//! [`CriticalSection`] is released or dropped, and at the latest when the orchestration
//! completes.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::orchestration::state::{
    Completion, OrchestrationState, Shared, SlotKey, TaskInfo, lock,
};
use crate::orchestration::task::{convert_result, encode_payload};
use crate::orchestration::{DurableTask, OrchestrationContext, TaskError, TaskKind};
use crate::{EntityId, OrchestratorAction, Timestamp};

/// A broken critical-section rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// `lock_entities` was called while a critical section is active.
    #[error("critical sections cannot be nested")]
    NestedCriticalSection,
    /// `lock_entities` was called with no entities.
    #[error("a critical section needs at least one entity")]
    EmptyLockSet,
    /// An entity that is not locked was called inside a critical section.
    #[error("entity {entity} is not locked by the current critical section")]
    NotLocked {
        /// The entity called.
        entity: EntityId,
    },
    /// A locked entity was called while another call to it is in flight.
    #[error("entity {entity} is already being called in this critical section")]
    ParallelCall {
        /// The entity called.
        entity: EntityId,
    },
    /// A locked entity was signalled inside its critical section.
    #[error("entity {entity} is locked by this critical section; call it instead of signalling")]
    SignalToLockedEntity {
        /// The entity signalled.
        entity: EntityId,
    },
    /// A sub-orchestration was started inside a critical section.
    #[error("sub-orchestrations cannot be started inside a critical section")]
    SubOrchestrationInCriticalSection,
}

/// The lock status of an orchestration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LockState {
    None,
    /// Requested (maybe granted) and not released.
    Active {
        critical_section_id: String,
        entities: Vec<EntityId>,
    },
}

impl LockState {
    fn locked(&self) -> Option<&[EntityId]> {
        match self {
            Self::None => None,
            Self::Active { entities, .. } => Some(entities),
        }
    }
}

/// Emits UnlockEntity actions for the active critical section with this id (any id when
/// `None`) and leaves the critical section.
pub(crate) fn release_locks(st: &mut OrchestrationState, only: Option<&str>) {
    let LockState::Active {
        critical_section_id,
        entities,
    } = &st.lock
    else {
        return;
    };
    if only.is_some_and(|id| id != critical_section_id) {
        return;
    }
    let cs = critical_section_id.clone();
    let entities = entities.clone();
    st.lock = LockState::None;
    st.calls_in_flight.clear();
    for entity in entities {
        let cs = cs.clone();
        st.schedule(
            |id| OrchestratorAction::UnlockEntity {
                id,
                critical_section_id: cs,
                entity,
            },
            None,
        );
    }
}

/// A held critical section: the locked entities may be called, one call at a time each.
/// Release it with [`CriticalSection::release`] or by dropping it.
#[must_use = "dropping a critical section releases its locks"]
pub struct CriticalSection {
    shared: Shared,
    id: String,
    entities: Vec<EntityId>,
    released: bool,
}

impl std::fmt::Debug for CriticalSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriticalSection")
            .field("id", &self.id)
            .field("entities", &self.entities)
            .finish()
    }
}

impl CriticalSection {
    /// The critical section id (deterministic).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The locked entities, sorted.
    pub fn entities(&self) -> &[EntityId] {
        &self.entities
    }

    /// Releases the locks (one UnlockEntity action per entity).
    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        if !self.released {
            self.released = true;
            release_locks(&mut lock(&self.shared), Some(&self.id));
        }
    }
}

impl Drop for CriticalSection {
    fn drop(&mut self) {
        self.release_now();
    }
}

fn convert_lock(
    c: Completion,
    info: &TaskInfo,
    shared: &Shared,
) -> Result<CriticalSection, TaskError> {
    let _ = c;
    let entities = match &lock(shared).lock {
        LockState::Active {
            critical_section_id,
            entities,
        } if *critical_section_id == info.name => entities.clone(),
        _ => Vec::new(),
    };
    Ok(CriticalSection {
        shared: shared.clone(),
        id: info.name.clone(),
        entities,
        released: false,
    })
}

impl OrchestrationContext {
    /// Signals an entity operation (one-way).
    pub fn signal_entity(
        &self,
        entity: &EntityId,
        operation: &str,
        input: impl Serialize,
    ) -> Result<(), TaskError> {
        self.signal_entity_at(entity, operation, input, None)
    }

    /// Signals an entity operation to be delivered no earlier than `scheduled_time`.
    pub fn signal_entity_at(
        &self,
        entity: &EntityId,
        operation: &str,
        input: impl Serialize,
        scheduled_time: Option<Timestamp>,
    ) -> Result<(), TaskError> {
        let input = encode_payload(&input).map_err(|message| TaskError::Encode {
            kind: TaskKind::EntityCall,
            name: format!("{entity}.{operation}"),
            message,
        })?;
        let mut st = lock(&self.shared);
        if st.lock.locked().is_some_and(|l| l.contains(entity)) {
            return Err(LockError::SignalToLockedEntity {
                entity: entity.clone(),
            }
            .into());
        }
        st.schedule(
            |id| OrchestratorAction::SignalEntity {
                id,
                entity: entity.clone(),
                operation: operation.to_string(),
                input,
                scheduled_time,
            },
            None,
        );
        Ok(())
    }

    /// Calls an entity operation and waits for its result.
    pub fn call_entity<O: DeserializeOwned>(
        &self,
        entity: &EntityId,
        operation: &str,
        input: impl Serialize,
    ) -> DurableTask<Result<O, TaskError>> {
        let name = format!("{entity}.{operation}");
        let input = match encode_payload(&input) {
            Ok(p) => p,
            Err(message) => {
                return self.ready(Err(TaskError::Encode {
                    kind: TaskKind::EntityCall,
                    name,
                    message,
                }));
            }
        };
        let mut st = lock(&self.shared);
        if let Some(locked) = st.lock.locked() {
            if !locked.contains(entity) {
                drop(st);
                return self.ready(Err(LockError::NotLocked {
                    entity: entity.clone(),
                }
                .into()));
            }
            if !st.calls_in_flight.insert(entity.clone()) {
                drop(st);
                return self.ready(Err(LockError::ParallelCall {
                    entity: entity.clone(),
                }
                .into()));
            }
        }
        let seq = st.schedule(
            |id| OrchestratorAction::CallEntity {
                id,
                entity: entity.clone(),
                operation: operation.to_string(),
                input,
            },
            Some((TaskKind::EntityCall, name, Some(entity.clone()))),
        );
        drop(st);
        DurableTask::pending(self.shared.clone(), SlotKey::Task(seq), convert_result::<O>)
    }

    /// Locks a set of entities (a critical section); resolves when all locks are granted.
    /// Entities are sorted and deduplicated (a fixed order avoids deadlocks between
    /// orchestrations).
    pub fn lock_entities(
        &self,
        entities: &[EntityId],
    ) -> DurableTask<Result<CriticalSection, TaskError>> {
        let mut set: Vec<EntityId> = entities.to_vec();
        set.sort();
        set.dedup();
        let mut st = lock(&self.shared);
        let error = if st.lock != LockState::None {
            Some(LockError::NestedCriticalSection)
        } else if set.is_empty() {
            Some(LockError::EmptyLockSet)
        } else {
            None
        };
        if let Some(e) = error {
            drop(st);
            return DurableTask::ready(self.shared.clone(), Err(e.into()), convert_lock);
        }
        let critical_section_id = st.new_guid();
        st.lock = LockState::Active {
            critical_section_id: critical_section_id.clone(),
            entities: set.clone(),
        };
        let cs = critical_section_id.clone();
        let seq = st.schedule(
            |id| OrchestratorAction::LockEntities {
                id,
                critical_section_id: cs,
                entities: set,
            },
            Some((TaskKind::Lock, critical_section_id.clone(), None)),
        );
        st.lock_requests.insert(critical_section_id, seq);
        drop(st);
        DurableTask::pending(self.shared.clone(), SlotKey::Task(seq), convert_lock)
    }

    /// Whether a critical section is active (requested and not released).
    pub fn is_in_critical_section(&self) -> bool {
        lock(&self.shared).lock != LockState::None
    }

    pub(crate) fn check_sub_orchestration_allowed(&self) -> Result<(), LockError> {
        if lock(&self.shared).lock != LockState::None {
            return Err(LockError::SubOrchestrationInCriticalSection);
        }
        Ok(())
    }
}
