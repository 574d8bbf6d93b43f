//! History events and orchestrator actions between Perdure and the protocol, for the
//! orchestrator work items of gRPC workers.
//!
//! Perdure's history events carry the DTFx names and numbering, so they map one to one:
//! `eventId` is the action's sequence number for action events and -1 for the others; a
//! completion names its action by `taskScheduledId` / `timerId`. Entity calls: the protocol
//! matches a response to its call by a request id, which Perdure's history does not keep;
//! the node uses the call's event id as the request id, in the EntityOperationCalled event
//! and in the response events alike (the SDKs take the request id from the recorded call
//! event when they replay, so the worker's own request id need not be kept).

use perdure_core::{
    EntityId, EventKind, FailureDetails, HistoryEvent, InstanceId, OrchestrationStatus,
    OrchestratorAction, Payload, Timestamp,
};

use super::convert::{
    failure_to_proto, payload_from_proto, payload_to_proto, status_to_proto, timestamp_from_proto,
    timestamp_to_proto,
};
use super::proto;
use super::proto::history_event::EventType as E;

fn text(p: &Option<Payload>) -> Option<String> {
    p.as_ref().map(payload_to_proto)
}

/// A protocol event number; Perdure's sequence numbers are `i64`, the protocol's `int32`
/// (a history beyond 2^31 actions is far over the store's limits).
fn id32(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn instance(id: &InstanceId, execution_id: Option<&str>) -> proto::OrchestrationInstance {
    proto::OrchestrationInstance {
        instance_id: id.as_str().to_string(),
        execution_id: execution_id.map(str::to_string),
    }
}

/// The protocol's form of one history event of instance `id`.
pub(crate) fn event_to_proto(id: &InstanceId, e: &HistoryEvent) -> proto::HistoryEvent {
    let t = match &e.kind {
        EventKind::OrchestratorStarted => {
            E::OrchestratorStarted(proto::OrchestratorStartedEvent {})
        }
        EventKind::OrchestratorCompleted => {
            E::OrchestratorCompleted(proto::OrchestratorCompletedEvent {})
        }
        EventKind::ExecutionStarted {
            name,
            version,
            input,
            execution_id,
            parent,
            scheduled_start,
        } => E::ExecutionStarted(proto::ExecutionStartedEvent {
            name: name.clone(),
            version: version.clone(),
            input: text(input),
            orchestration_instance: Some(instance(id, Some(&execution_id.0))),
            parent_instance: parent.as_ref().map(|p| proto::ParentInstanceInfo {
                task_scheduled_id: id32(p.task_scheduled_id),
                name: Some(p.name.clone()),
                version: None,
                orchestration_instance: Some(instance(&p.instance_id, Some(&p.execution_id.0))),
            }),
            scheduled_start_timestamp: scheduled_start.map(timestamp_to_proto),
            ..Default::default()
        }),
        EventKind::ExecutionCompleted {
            status,
            result,
            failure,
        } => E::ExecutionCompleted(proto::ExecutionCompletedEvent {
            orchestration_status: status_to_proto(*status) as i32,
            result: text(result),
            failure_details: failure.as_ref().map(failure_to_proto),
        }),
        EventKind::ExecutionTerminated { reason } => {
            E::ExecutionTerminated(proto::ExecutionTerminatedEvent {
                input: reason.as_ref().map(|r| json_string(r)),
                recurse: false,
            })
        }
        EventKind::ExecutionSuspended { reason } => {
            E::ExecutionSuspended(proto::ExecutionSuspendedEvent {
                input: reason.as_ref().map(|r| json_string(r)),
            })
        }
        EventKind::ExecutionResumed { reason } => {
            E::ExecutionResumed(proto::ExecutionResumedEvent {
                input: reason.as_ref().map(|r| json_string(r)),
            })
        }
        EventKind::ContinueAsNew { input } => {
            E::ContinueAsNew(proto::ContinueAsNewEvent { input: text(input) })
        }
        EventKind::TaskScheduled {
            name,
            version,
            input,
        } => E::TaskScheduled(proto::TaskScheduledEvent {
            name: name.clone(),
            version: version.clone(),
            input: text(input),
            ..Default::default()
        }),
        EventKind::TaskCompleted {
            task_scheduled_id,
            result,
        } => E::TaskCompleted(proto::TaskCompletedEvent {
            task_scheduled_id: id32(*task_scheduled_id),
            result: text(result),
        }),
        EventKind::TaskFailed {
            task_scheduled_id,
            failure,
        } => E::TaskFailed(proto::TaskFailedEvent {
            task_scheduled_id: id32(*task_scheduled_id),
            failure_details: Some(failure_to_proto(failure)),
        }),
        EventKind::TimerCreated { fire_at } => E::TimerCreated(proto::TimerCreatedEvent {
            fire_at: Some(timestamp_to_proto(*fire_at)),
        }),
        EventKind::TimerFired { timer_id, fire_at } => E::TimerFired(proto::TimerFiredEvent {
            fire_at: Some(timestamp_to_proto(*fire_at)),
            timer_id: id32(*timer_id),
        }),
        EventKind::SubOrchestrationInstanceCreated {
            name,
            version,
            instance_id,
            input,
        } => E::SubOrchestrationInstanceCreated(proto::SubOrchestrationInstanceCreatedEvent {
            instance_id: instance_id.as_str().to_string(),
            name: name.clone(),
            version: version.clone(),
            input: text(input),
            ..Default::default()
        }),
        EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id,
            result,
        } => E::SubOrchestrationInstanceCompleted(proto::SubOrchestrationInstanceCompletedEvent {
            task_scheduled_id: id32(*task_scheduled_id),
            result: text(result),
        }),
        EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id,
            failure,
        } => E::SubOrchestrationInstanceFailed(proto::SubOrchestrationInstanceFailedEvent {
            task_scheduled_id: id32(*task_scheduled_id),
            failure_details: Some(failure_to_proto(failure)),
        }),
        EventKind::EventRaised { name, input } => E::EventRaised(proto::EventRaisedEvent {
            name: name.clone(),
            input: text(input),
        }),
        EventKind::EventSent {
            instance_id,
            name,
            input,
        } => E::EventSent(proto::EventSentEvent {
            instance_id: instance_id.as_str().to_string(),
            name: name.clone(),
            input: text(input),
        }),
        EventKind::EntityOperationSignaled {
            entity,
            operation,
            input,
            scheduled_time,
        } => E::EntityOperationSignaled(proto::EntityOperationSignaledEvent {
            request_id: e.event_id.to_string(),
            operation: operation.clone(),
            scheduled_time: scheduled_time.map(timestamp_to_proto),
            input: text(input),
            target_instance_id: Some(entity.to_string()),
        }),
        EventKind::EntityOperationCalled {
            entity,
            operation,
            input,
        } => E::EntityOperationCalled(proto::EntityOperationCalledEvent {
            request_id: e.event_id.to_string(),
            operation: operation.clone(),
            input: text(input),
            parent_instance_id: Some(id.as_str().to_string()),
            target_instance_id: Some(entity.to_string()),
            ..Default::default()
        }),
        EventKind::EntityOperationCompleted {
            task_scheduled_id,
            result,
        } => E::EntityOperationCompleted(proto::EntityOperationCompletedEvent {
            request_id: task_scheduled_id.to_string(),
            output: text(result),
        }),
        EventKind::EntityOperationFailed {
            task_scheduled_id,
            failure,
        } => E::EntityOperationFailed(proto::EntityOperationFailedEvent {
            request_id: task_scheduled_id.to_string(),
            failure_details: Some(failure_to_proto(failure)),
        }),
        EventKind::EntityLockRequested {
            critical_section_id,
            lock_set,
        } => E::EntityLockRequested(proto::EntityLockRequestedEvent {
            critical_section_id: critical_section_id.clone(),
            lock_set: lock_set.iter().map(ToString::to_string).collect(),
            position: 0,
            parent_instance_id: Some(id.as_str().to_string()),
        }),
        EventKind::EntityLockGranted {
            critical_section_id,
        } => E::EntityLockGranted(proto::EntityLockGrantedEvent {
            critical_section_id: critical_section_id.clone(),
        }),
        EventKind::EntityUnlockSent {
            critical_section_id,
            entity,
        } => E::EntityUnlockSent(proto::EntityUnlockSentEvent {
            critical_section_id: critical_section_id.clone(),
            parent_instance_id: Some(id.as_str().to_string()),
            target_instance_id: Some(entity.to_string()),
        }),
    };
    proto::HistoryEvent {
        event_id: id32(e.event_id),
        timestamp: Some(timestamp_to_proto(e.timestamp)),
        event_type: Some(t),
    }
}

/// A reason string as the protocol's JSON-text input field.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Failure details from the protocol (an absent one gets a generic type).
pub(crate) fn failure_from_proto(f: Option<proto::TaskFailureDetails>) -> FailureDetails {
    let Some(f) = f else {
        return FailureDetails::new("Failure", "the worker reported a failure without details");
    };
    let mut out = FailureDetails::new(f.error_type, f.error_message);
    out.details = f.stack_trace;
    // Bounded like every stored failure chain.
    let mut depth = 0usize;
    let mut inner = f.inner_failure;
    let mut chain = Vec::new();
    while let Some(i) = inner {
        if depth >= perdure_core::failure::MAX_FAILURE_DEPTH {
            break;
        }
        depth += 1;
        let i = *i;
        let mut d = FailureDetails::new(i.error_type, i.error_message);
        d.details = i.stack_trace;
        chain.push(d);
        inner = i.inner_failure;
    }
    let mut rest: Option<FailureDetails> = None;
    while let Some(mut d) = chain.pop() {
        if let Some(r) = rest.take() {
            d = d.with_inner(r);
        }
        rest = Some(d);
    }
    if let Some(r) = rest {
        out = out.with_inner(r);
    }
    out
}

/// What a worker's orchestrator response asks for, in Perdure's terms.
#[derive(Debug)]
pub(crate) enum Decided {
    /// An action for the runtime (its history event is derived from it).
    Action(OrchestratorAction),
    /// The execution completes, fails or continues as new.
    Complete(Completed),
}

/// How a worker ended the execution.
#[derive(Debug)]
pub(crate) enum Completed {
    /// Completed with an output.
    Output(Option<Payload>),
    /// Failed.
    Failed(FailureDetails),
    /// Continues as new with this input, carrying these events.
    ContinuedAsNew {
        /// The next execution's input.
        input: Option<Payload>,
        /// Events carried over (converted back to Perdure's).
        carried: Vec<HistoryEvent>,
    },
}

/// Why a worker's response cannot be taken: the orchestration fails with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadResponse(pub String);

fn bad(msg: impl Into<String>) -> BadResponse {
    BadResponse(msg.into())
}

fn payload(s: Option<String>, field: &str) -> Result<Option<Payload>, BadResponse> {
    payload_from_proto(s, field).map_err(|e| bad(e.message().to_string()))
}

fn time(t: Option<prost_types::Timestamp>, field: &str) -> Result<Timestamp, BadResponse> {
    let t = t.ok_or_else(|| bad(format!("{field} is missing")))?;
    timestamp_from_proto(&t, field).map_err(|e| bad(e.message().to_string()))
}

fn entity(s: Option<String>, field: &str) -> Result<EntityId, BadResponse> {
    let s = s.ok_or_else(|| bad(format!("{field} is missing")))?;
    EntityId::parse(&s).map_err(|e| {
        bad(format!(
            "{field} '{s}' is not an entity id (@name@key): {e}"
        ))
    })
}

/// One action of a worker's response.
pub(crate) fn action_from_proto(a: proto::OrchestratorAction) -> Result<Decided, BadResponse> {
    use proto::orchestrator_action::OrchestratorActionType as A;
    let id = i64::from(a.id);
    let Some(kind) = a.orchestrator_action_type else {
        return Err(bad(format!("action {id} has no type")));
    };
    let action = match kind {
        A::ScheduleTask(t) => OrchestratorAction::ScheduleTask {
            id,
            name: t.name,
            version: t.version,
            input: payload(t.input, "scheduleTask.input")?,
        },
        A::CreateSubOrchestration(c) => OrchestratorAction::CreateSubOrchestration {
            id,
            name: c.name,
            version: c.version,
            instance_id: InstanceId::new(c.instance_id.clone()).map_err(|e| {
                bad(format!(
                    "createSubOrchestration.instanceId '{}' is not an instance id: {e}",
                    c.instance_id
                ))
            })?,
            input: payload(c.input, "createSubOrchestration.input")?,
        },
        A::CreateTimer(t) => OrchestratorAction::CreateTimer {
            id,
            fire_at: time(t.fire_at, "createTimer.fireAt")?,
        },
        A::SendEvent(e) => {
            let target = e
                .instance
                .map(|i| i.instance_id)
                .ok_or_else(|| bad("sendEvent.instance is missing"))?;
            OrchestratorAction::SendEvent {
                id,
                instance_id: InstanceId::new(target.clone()).map_err(|err| {
                    bad(format!(
                        "sendEvent.instance '{target}' is not an instance id: {err}"
                    ))
                })?,
                name: e.name,
                input: payload(e.data, "sendEvent.data")?,
            }
        }
        A::CompleteOrchestration(c) => return complete_from_proto(c).map(Decided::Complete),
        A::TerminateOrchestration(t) => {
            return Err(bad(format!(
                "terminating another instance ('{}') from an orchestration is not supported by \
                 Perdure's gRPC protocol; terminate it from a client",
                t.instance_id
            )));
        }
        A::SendEntityMessage(m) => {
            use proto::send_entity_message_action::EntityMessageType as M;
            match m.entity_message_type {
                Some(M::EntityOperationSignaled(s)) => OrchestratorAction::SignalEntity {
                    id,
                    entity: entity(
                        s.target_instance_id,
                        "entityOperationSignaled.targetInstanceId",
                    )?,
                    operation: s.operation,
                    input: payload(s.input, "entityOperationSignaled.input")?,
                    scheduled_time: s
                        .scheduled_time
                        .map(|t| time(Some(t), "entityOperationSignaled.scheduledTime"))
                        .transpose()?,
                },
                Some(M::EntityOperationCalled(c)) => OrchestratorAction::CallEntity {
                    id,
                    entity: entity(
                        c.target_instance_id,
                        "entityOperationCalled.targetInstanceId",
                    )?,
                    operation: c.operation,
                    input: payload(c.input, "entityOperationCalled.input")?,
                },
                Some(M::EntityLockRequested(l)) => {
                    let mut entities = l
                        .lock_set
                        .into_iter()
                        .map(|e| entity(Some(e), "entityLockRequested.lockSet"))
                        .collect::<Result<Vec<_>, _>>()?;
                    entities.sort();
                    entities.dedup();
                    OrchestratorAction::LockEntities {
                        id,
                        critical_section_id: l.critical_section_id,
                        entities,
                    }
                }
                Some(M::EntityUnlockSent(u)) => OrchestratorAction::UnlockEntity {
                    id,
                    critical_section_id: u.critical_section_id,
                    entity: entity(u.target_instance_id, "entityUnlockSent.targetInstanceId")?,
                },
                None => return Err(bad(format!("sendEntityMessage action {id} has no message"))),
            }
        }
        A::RewindOrchestration(_) => {
            return Err(bad(
                "rewindOrchestration from a worker is not supported: Perdure rewinds on the \
                 RewindInstance call",
            ));
        }
    };
    Ok(Decided::Action(action))
}

fn complete_from_proto(c: proto::CompleteOrchestrationAction) -> Result<Completed, BadResponse> {
    use proto::OrchestrationStatus as S;
    let status = S::try_from(c.orchestration_status).map_err(|_| {
        bad(format!(
            "{} is not an orchestration status",
            c.orchestration_status
        ))
    })?;
    Ok(match status {
        S::Completed => Completed::Output(payload(c.result, "completeOrchestration.result")?),
        S::Failed | S::Terminated | S::Canceled => {
            Completed::Failed(failure_from_proto(c.failure_details))
        }
        S::ContinuedAsNew => Completed::ContinuedAsNew {
            input: payload(c.result, "completeOrchestration.result")?,
            carried: c
                .carryover_events
                .into_iter()
                .filter_map(carried_event)
                .collect(),
        },
        S::Running | S::Pending | S::Suspended => {
            return Err(bad(format!(
                "completeOrchestration with status {} does not end an execution",
                status.as_str_name()
            )));
        }
    })
}

/// A carried-over event (only raised events are carried; anything else is dropped).
fn carried_event(e: proto::HistoryEvent) -> Option<HistoryEvent> {
    let Some(E::EventRaised(r)) = e.event_type else {
        return None;
    };
    let input = payload(r.input, "carryoverEvents.eventRaised.input").ok()?;
    let at = e
        .timestamp
        .and_then(|t| timestamp_from_proto(&t, "carryoverEvents.timestamp").ok())
        .unwrap_or(Timestamp::from_millis(0));
    Some(HistoryEvent::new(
        at,
        EventKind::EventRaised {
            name: r.name,
            input,
        },
    ))
}

/// The terminal history event of a completion.
pub(crate) fn terminal_event(c: &Completed, now: Timestamp) -> HistoryEvent {
    let kind = match c {
        Completed::Output(output) => EventKind::ExecutionCompleted {
            status: OrchestrationStatus::Completed,
            result: output.clone(),
            failure: None,
        },
        Completed::Failed(f) => EventKind::ExecutionCompleted {
            status: OrchestrationStatus::Failed,
            result: None,
            failure: Some(f.clone()),
        },
        Completed::ContinuedAsNew { input, .. } => EventKind::ContinueAsNew {
            input: input.clone(),
        },
    };
    HistoryEvent::new(now, kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use perdure_core::ExecutionId;

    #[test]
    fn events_keep_their_numbers_and_payloads() {
        let id = InstanceId::new("i1").expect("id");
        let started = HistoryEvent::new(
            Timestamp::from_millis(1_500),
            EventKind::ExecutionStarted {
                name: "Hello".into(),
                version: None,
                input: Some(Payload::json(&"Tokyo").expect("json")),
                execution_id: ExecutionId("e1".into()),
                parent: None,
                scheduled_start: None,
            },
        );
        let p = event_to_proto(&id, &started);
        assert_eq!(p.event_id, -1);
        let Some(E::ExecutionStarted(s)) = p.event_type else {
            panic!("kind");
        };
        assert_eq!(s.input.as_deref(), Some("\"Tokyo\""));
        assert_eq!(
            s.orchestration_instance
                .and_then(|i| i.execution_id)
                .as_deref(),
            Some("e1")
        );
        let done = HistoryEvent {
            event_id: -1,
            timestamp: Timestamp::from_millis(2_000),
            kind: EventKind::TaskCompleted {
                task_scheduled_id: 7,
                result: None,
            },
        };
        let Some(E::TaskCompleted(c)) = event_to_proto(&id, &done).event_type else {
            panic!("kind");
        };
        assert_eq!(c.task_scheduled_id, 7);
    }

    #[test]
    fn actions_map_to_perdure_actions_and_bad_ones_are_refused() {
        use proto::orchestrator_action::OrchestratorActionType as A;
        let a = proto::OrchestratorAction {
            id: 3,
            orchestrator_action_type: Some(A::ScheduleTask(proto::ScheduleTaskAction {
                name: "Say".into(),
                input: Some("\"x\"".into()),
                ..Default::default()
            })),
        };
        let Ok(Decided::Action(OrchestratorAction::ScheduleTask { id, name, .. })) =
            action_from_proto(a)
        else {
            panic!("schedule");
        };
        assert_eq!((id, name.as_str()), (3, "Say"));
        let not_json = proto::OrchestratorAction {
            id: 4,
            orchestrator_action_type: Some(A::ScheduleTask(proto::ScheduleTaskAction {
                name: "Say".into(),
                input: Some("not json".into()),
                ..Default::default()
            })),
        };
        assert!(action_from_proto(not_json).is_err());
        let untyped = proto::OrchestratorAction {
            id: 5,
            orchestrator_action_type: None,
        };
        assert!(action_from_proto(untyped).is_err());
        let done = proto::OrchestratorAction {
            id: 6,
            orchestrator_action_type: Some(A::CompleteOrchestration(
                proto::CompleteOrchestrationAction {
                    orchestration_status: proto::OrchestrationStatus::Failed as i32,
                    failure_details: Some(proto::TaskFailureDetails {
                        error_type: "ValueError".into(),
                        error_message: "boom".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
        };
        let Ok(Decided::Complete(Completed::Failed(f))) = action_from_proto(done) else {
            panic!("failed");
        };
        assert_eq!(
            (f.error_type.as_str(), f.message.as_str()),
            ("ValueError", "boom")
        );
    }
}
