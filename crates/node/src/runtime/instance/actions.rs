//! Orchestrator actions as writes: what each action of an episode sends, queues or creates.

use perdure_core::{
    EventKind, ExecutionId, HistoryEvent, InstanceId, OrchestrationStatus, OrchestratorAction,
    ParentInstance, Payload, Timestamp,
};

use super::Effect;
use crate::runtime::Shared;
use crate::state::records::{
    ActivityTask, EntityCaller, EntityOperationMsg, InstanceRecord, LockRequestMsg, MessageBody,
    Target,
};

pub(super) fn action_effects(
    shared: &Shared,
    rec: &InstanceRecord,
    action: OrchestratorAction,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) {
    let me = rec.instance_id.clone();
    let exec = rec.execution_id.clone();
    match action {
        OrchestratorAction::ScheduleTask {
            id,
            name,
            version,
            input,
        } => effects.push(Effect::Task(ActivityTask {
            instance_id: me,
            execution_id: exec,
            seq: id,
            name,
            version,
            input,
            attempt: 1,
            lease_until: now.add(shared.opts.activity_lease),
        })),
        OrchestratorAction::CreateTimer { id, fire_at } => effects.push(Effect::SendAt(
            Target::Instance(me),
            fire_at,
            MessageBody::Event {
                execution_id: Some(exec),
                event: HistoryEvent::new(
                    fire_at,
                    EventKind::TimerFired {
                        timer_id: id,
                        fire_at,
                    },
                ),
            },
        )),
        OrchestratorAction::CreateSubOrchestration {
            id,
            name,
            version,
            instance_id,
            input,
        } => {
            let execution_id = shared.new_execution_id();
            let parent = ParentInstance {
                name: rec.name.clone(),
                instance_id: me,
                execution_id: exec,
                task_scheduled_id: id,
            };
            effects.push(Effect::CreateInstance(pending_record(
                &instance_id,
                &name,
                version.clone(),
                execution_id.clone(),
                input.clone(),
                Some(parent.clone()),
                now,
            )));
            let started = HistoryEvent::new(
                now,
                EventKind::ExecutionStarted {
                    name,
                    version,
                    input,
                    execution_id,
                    parent: Some(parent),
                    scheduled_start: None,
                },
            );
            effects.push(Effect::Send(
                Target::Instance(instance_id),
                MessageBody::NewExecution {
                    started,
                    carried: Vec::new(),
                },
            ));
        }
        OrchestratorAction::SendEvent {
            instance_id,
            name,
            input,
            ..
        } => effects.push(Effect::Send(
            Target::Instance(instance_id),
            MessageBody::Event {
                execution_id: None,
                event: HistoryEvent::new(now, EventKind::EventRaised { name, input }),
            },
        )),
        OrchestratorAction::SignalEntity {
            entity,
            operation,
            input,
            scheduled_time,
            ..
        } => {
            let body = MessageBody::EntityOperation(EntityOperationMsg {
                operation,
                input,
                caller: None,
                critical_section_id: None,
                sender: Some(me),
            });
            match scheduled_time {
                Some(t) if t > now => effects.push(Effect::SendAt(Target::Entity(entity), t, body)),
                _ => effects.push(Effect::Send(Target::Entity(entity), body)),
            }
        }
        OrchestratorAction::CallEntity {
            id,
            entity,
            operation,
            input,
        } => effects.push(Effect::Send(
            Target::Entity(entity),
            MessageBody::EntityOperation(EntityOperationMsg {
                operation,
                input,
                caller: Some(EntityCaller {
                    instance_id: me.clone(),
                    execution_id: exec,
                    request_id: id,
                }),
                critical_section_id: None,
                sender: Some(me),
            }),
        )),
        OrchestratorAction::LockEntities {
            critical_section_id,
            entities,
            ..
        } => match entities.first() {
            Some(first) => effects.push(Effect::Send(
                Target::Entity(first.clone()),
                MessageBody::LockRequest(LockRequestMsg {
                    critical_section_id,
                    holder: me,
                    execution_id: exec,
                    lock_set: entities,
                    position: 0,
                }),
            )),
            None => effects.push(Effect::Send(
                Target::Instance(me),
                MessageBody::Event {
                    execution_id: Some(exec),
                    event: HistoryEvent::new(
                        now,
                        EventKind::EntityLockGranted {
                            critical_section_id,
                        },
                    ),
                },
            )),
        },
        OrchestratorAction::UnlockEntity {
            critical_section_id,
            entity,
            ..
        } => effects.push(Effect::Send(
            Target::Entity(entity),
            MessageBody::Unlock {
                critical_section_id,
                holder: me,
            },
        )),
    }
}

/// A record for an instance that has been asked to start.
pub(crate) fn pending_record(
    id: &InstanceId,
    name: &str,
    version: Option<String>,
    execution_id: ExecutionId,
    input: Option<Payload>,
    parent: Option<ParentInstance>,
    now: Timestamp,
) -> InstanceRecord {
    InstanceRecord {
        instance_id: id.clone(),
        name: name.to_string(),
        version,
        execution_id,
        status: OrchestrationStatus::Pending,
        input: input.clone(),
        output: None,
        custom_status: None,
        failure: None,
        created_at: now,
        updated_at: now,
        parent,
        history_len: 0,
        original_input: input,
    }
}
