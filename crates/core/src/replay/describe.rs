//! Descriptions of actions and events for non-determinism errors, and the match rule.

use crate::{EventKind, HistoryEvent, OrchestratorAction};

/// A short description of an action, e.g. `ScheduleTask(name="Charge")`.
pub fn describe_action(action: &OrchestratorAction) -> String {
    match action {
        OrchestratorAction::ScheduleTask { name, .. } => format!("ScheduleTask(name={name:?})"),
        OrchestratorAction::CreateTimer { fire_at, .. } => {
            format!("CreateTimer(fire_at={})", fire_at.as_millis())
        }
        OrchestratorAction::CreateSubOrchestration {
            name, instance_id, ..
        } => format!("CreateSubOrchestration(name={name:?}, instance_id={instance_id})"),
        OrchestratorAction::SendEvent {
            instance_id, name, ..
        } => format!("SendEvent(instance_id={instance_id}, name={name:?})"),
        OrchestratorAction::SignalEntity {
            entity, operation, ..
        } => format!("SignalEntity(entity={entity}, operation={operation:?})"),
        OrchestratorAction::CallEntity {
            entity, operation, ..
        } => format!("CallEntity(entity={entity}, operation={operation:?})"),
        OrchestratorAction::LockEntities { entities, .. } => {
            let list: Vec<String> = entities.iter().map(ToString::to_string).collect();
            format!("LockEntities([{}])", list.join(", "))
        }
        OrchestratorAction::UnlockEntity { entity, .. } => format!("UnlockEntity(entity={entity})"),
    }
}

/// A short description of a history event, e.g. `TaskScheduled(name="Charge")`.
pub fn describe_event(event: &HistoryEvent) -> String {
    match &event.kind {
        EventKind::TaskScheduled { name, .. } => format!("TaskScheduled(name={name:?})"),
        EventKind::TimerCreated { fire_at } => {
            format!("TimerCreated(fire_at={})", fire_at.as_millis())
        }
        EventKind::SubOrchestrationInstanceCreated {
            name, instance_id, ..
        } => format!("SubOrchestrationInstanceCreated(name={name:?}, instance_id={instance_id})"),
        EventKind::EventSent {
            instance_id, name, ..
        } => format!("EventSent(instance_id={instance_id}, name={name:?})"),
        EventKind::EntityOperationSignaled {
            entity, operation, ..
        } => format!("EntityOperationSignaled(entity={entity}, operation={operation:?})"),
        EventKind::EntityOperationCalled {
            entity, operation, ..
        } => format!("EntityOperationCalled(entity={entity}, operation={operation:?})"),
        EventKind::EntityLockRequested { lock_set, .. } => {
            let list: Vec<String> = lock_set.iter().map(ToString::to_string).collect();
            format!("EntityLockRequested([{}])", list.join(", "))
        }
        EventKind::EntityUnlockSent { entity, .. } => format!("EntityUnlockSent(entity={entity})"),
        EventKind::ExecutionCompleted { status, .. } => format!("ExecutionCompleted({status})"),
        other => other.name().to_string(),
    }
}

/// Whether a history event is the record of an action (it has a sequence number).
pub(crate) fn is_action_event(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::TaskScheduled { .. }
            | EventKind::TimerCreated { .. }
            | EventKind::SubOrchestrationInstanceCreated { .. }
            | EventKind::EventSent { .. }
            | EventKind::EntityOperationSignaled { .. }
            | EventKind::EntityOperationCalled { .. }
            | EventKind::EntityLockRequested { .. }
            | EventKind::EntityUnlockSent { .. }
    )
}

/// Whether the code's action matches the recorded event: same kind and same name / target.
/// Inputs, timer due times and generated ids are not compared (as in DTFx), so a change of
/// data is not a change of code.
pub(crate) fn action_matches(action: &OrchestratorAction, kind: &EventKind) -> bool {
    match (action, kind) {
        (
            OrchestratorAction::ScheduleTask { name: a, .. },
            EventKind::TaskScheduled { name: b, .. },
        ) => a == b,
        (OrchestratorAction::CreateTimer { .. }, EventKind::TimerCreated { .. }) => true,
        (
            OrchestratorAction::CreateSubOrchestration { name: a, .. },
            EventKind::SubOrchestrationInstanceCreated { name: b, .. },
        ) => a == b,
        (OrchestratorAction::SendEvent { name: a, .. }, EventKind::EventSent { name: b, .. }) => {
            a == b
        }
        (
            OrchestratorAction::SignalEntity {
                entity: e1,
                operation: o1,
                ..
            },
            EventKind::EntityOperationSignaled {
                entity: e2,
                operation: o2,
                ..
            },
        )
        | (
            OrchestratorAction::CallEntity {
                entity: e1,
                operation: o1,
                ..
            },
            EventKind::EntityOperationCalled {
                entity: e2,
                operation: o2,
                ..
            },
        ) => e1 == e2 && o1 == o2,
        (
            OrchestratorAction::LockEntities { entities, .. },
            EventKind::EntityLockRequested { lock_set, .. },
        ) => entities == lock_set,
        (
            OrchestratorAction::UnlockEntity { entity: a, .. },
            EventKind::EntityUnlockSent { entity: b, .. },
        ) => a == b,
        _ => false,
    }
}

/// The history event recording an action (`event_id` = the action's sequence number).
pub(crate) fn action_event(
    action: &OrchestratorAction,
    timestamp: crate::Timestamp,
) -> HistoryEvent {
    let kind = match action.clone() {
        OrchestratorAction::ScheduleTask {
            name,
            version,
            input,
            ..
        } => EventKind::TaskScheduled {
            name,
            version,
            input,
        },
        OrchestratorAction::CreateTimer { fire_at, .. } => EventKind::TimerCreated { fire_at },
        OrchestratorAction::CreateSubOrchestration {
            name,
            version,
            instance_id,
            input,
            ..
        } => EventKind::SubOrchestrationInstanceCreated {
            name,
            version,
            instance_id,
            input,
        },
        OrchestratorAction::SendEvent {
            instance_id,
            name,
            input,
            ..
        } => EventKind::EventSent {
            instance_id,
            name,
            input,
        },
        OrchestratorAction::SignalEntity {
            entity,
            operation,
            input,
            scheduled_time,
            ..
        } => EventKind::EntityOperationSignaled {
            entity,
            operation,
            input,
            scheduled_time,
        },
        OrchestratorAction::CallEntity {
            entity,
            operation,
            input,
            ..
        } => EventKind::EntityOperationCalled {
            entity,
            operation,
            input,
        },
        OrchestratorAction::LockEntities {
            critical_section_id,
            entities,
            ..
        } => EventKind::EntityLockRequested {
            critical_section_id,
            lock_set: entities,
        },
        OrchestratorAction::UnlockEntity {
            critical_section_id,
            entity,
            ..
        } => EventKind::EntityUnlockSent {
            critical_section_id,
            entity,
        },
    };
    HistoryEvent {
        event_id: action.id(),
        timestamp,
        kind,
    }
}

/// The action an action event records (inverse of [`action_event`]); `None` for other events.
pub(crate) fn event_action(event: &HistoryEvent) -> Option<OrchestratorAction> {
    let id = event.event_id;
    Some(match event.kind.clone() {
        EventKind::TaskScheduled {
            name,
            version,
            input,
        } => OrchestratorAction::ScheduleTask {
            id,
            name,
            version,
            input,
        },
        EventKind::TimerCreated { fire_at } => OrchestratorAction::CreateTimer { id, fire_at },
        EventKind::SubOrchestrationInstanceCreated {
            name,
            version,
            instance_id,
            input,
        } => OrchestratorAction::CreateSubOrchestration {
            id,
            name,
            version,
            instance_id,
            input,
        },
        EventKind::EventSent {
            instance_id,
            name,
            input,
        } => OrchestratorAction::SendEvent {
            id,
            instance_id,
            name,
            input,
        },
        EventKind::EntityOperationSignaled {
            entity,
            operation,
            input,
            scheduled_time,
        } => OrchestratorAction::SignalEntity {
            id,
            entity,
            operation,
            input,
            scheduled_time,
        },
        EventKind::EntityOperationCalled {
            entity,
            operation,
            input,
        } => OrchestratorAction::CallEntity {
            id,
            entity,
            operation,
            input,
        },
        EventKind::EntityLockRequested {
            critical_section_id,
            lock_set,
        } => OrchestratorAction::LockEntities {
            id,
            critical_section_id,
            entities: lock_set,
        },
        EventKind::EntityUnlockSent {
            critical_section_id,
            entity,
        } => OrchestratorAction::UnlockEntity {
            id,
            critical_section_id,
            entity,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EntityId, InstanceId, Payload, Timestamp};

    #[test]
    fn action_events_invert_and_match() {
        let e = EntityId::new("e", "k").unwrap();
        let p = Payload::json(&1).ok();
        let actions = vec![
            OrchestratorAction::ScheduleTask {
                id: 0,
                name: "A".into(),
                version: None,
                input: p.clone(),
            },
            OrchestratorAction::CreateTimer {
                id: 1,
                fire_at: Timestamp(5),
            },
            OrchestratorAction::CreateSubOrchestration {
                id: 2,
                name: "S".into(),
                version: None,
                instance_id: InstanceId::new("c").unwrap(),
                input: None,
            },
            OrchestratorAction::SendEvent {
                id: 3,
                instance_id: InstanceId::new("o").unwrap(),
                name: "N".into(),
                input: None,
            },
            OrchestratorAction::SignalEntity {
                id: 4,
                entity: e.clone(),
                operation: "op".into(),
                input: None,
                scheduled_time: None,
            },
            OrchestratorAction::CallEntity {
                id: 5,
                entity: e.clone(),
                operation: "op".into(),
                input: None,
            },
            OrchestratorAction::LockEntities {
                id: 6,
                critical_section_id: "cs".into(),
                entities: vec![e.clone()],
            },
            OrchestratorAction::UnlockEntity {
                id: 7,
                critical_section_id: "cs".into(),
                entity: e,
            },
        ];
        for a in &actions {
            let ev = action_event(a, Timestamp(9));
            assert_eq!(ev.event_id, a.id());
            assert!(is_action_event(&ev.kind));
            assert!(action_matches(a, &ev.kind), "{}", describe_action(a));
            assert_eq!(event_action(&ev).as_ref(), Some(a));
            assert!(!describe_event(&ev).is_empty());
        }
        // Different kinds never match.
        let timer = action_event(&actions[1], Timestamp(0));
        assert!(!action_matches(&actions[0], &timer.kind));
        // A different name does not match; a different input does.
        let other = OrchestratorAction::ScheduleTask {
            id: 0,
            name: "B".into(),
            version: None,
            input: None,
        };
        let recorded = action_event(&actions[0], Timestamp(0));
        assert!(!action_matches(&other, &recorded.kind));
        let same_name = OrchestratorAction::ScheduleTask {
            id: 0,
            name: "A".into(),
            version: None,
            input: None,
        };
        assert!(action_matches(&same_name, &recorded.kind));
    }
}
