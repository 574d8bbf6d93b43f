//! Control messages of an instance: terminate (optionally recursive), suspend, resume and
//! rewind.

use perdure_core::{
    EventKind, HistoryEvent, InstanceId, OrchestrationStatus, OrchestratorAction, Payload,
    Timestamp,
};

use super::{
    Effect, InstancePlan, InstanceSlot, episode_plan, failed_record, finish_plan, load_history,
};
use crate::runtime::Shared;
use crate::runtime::executor::EpisodeResult;
use crate::runtime::partition::Keyed;
use crate::state::records::{MessageBody, Target};
use crate::store::StoreError;

pub(super) async fn control_message(
    shared: &Shared,
    slot: &mut InstanceSlot,
    id: &InstanceId,
    mut consumed: Vec<Keyed>,
    (k, m): Keyed,
    now: Timestamp,
) -> Result<InstancePlan, StoreError> {
    let body = m.body.clone();
    consumed.push((k, m));
    let Some(rec) = slot.record.clone() else {
        return Ok(InstancePlan::drop_only(id.clone(), consumed));
    };
    let live = !rec.status.is_terminal();
    let mut new = rec.clone();
    new.updated_at = now;
    let seq = rec.history_len;
    let (event, finished) = match body {
        MessageBody::Terminate { reason, recursive } if live => {
            new.status = OrchestrationStatus::Terminated;
            new.output = reason.as_ref().and_then(|r| Payload::json(r).ok());
            slot.session = None;
            let mut plan = finish_plan(
                shared,
                id.clone(),
                consumed,
                seq,
                new,
                vec![HistoryEvent::new(
                    now,
                    EventKind::ExecutionTerminated {
                        reason: reason.clone(),
                    },
                )],
                false,
            );
            if recursive {
                for child in running_children(&load_history(shared, id, rec.history_len).await?) {
                    plan.effects.push(Effect::Send(
                        Target::Instance(child),
                        MessageBody::Terminate {
                            reason: reason.clone(),
                            recursive: true,
                        },
                    ));
                }
            }
            return Ok(plan);
        }
        // Suspend and resume set the stored status at once (see `control_as`), and that
        // status is the truth: the message only records its history event and never sets
        // the status itself. (A suspend message applied after a later resume had been
        // written at once would otherwise suspend the instance again.) The plan commits
        // only on the record it was prepared from, so a cached record that a later suspend
        // or resume changed is reloaded first.
        MessageBody::Suspend { reason }
            if matches!(
                rec.status,
                OrchestrationStatus::Running | OrchestrationStatus::Suspended
            ) =>
        {
            // The status stays what the latest suspend or resume set (`rec` is the stored
            // record: the commit checks it): setting it here would undo a resume accepted
            // after this suspend.
            (EventKind::ExecutionSuspended { reason }, false)
        }
        MessageBody::Resume { reason }
            if matches!(
                rec.status,
                OrchestrationStatus::Suspended | OrchestrationStatus::Running
            ) =>
        {
            // As above: a suspend accepted after this resume holds.
            (EventKind::ExecutionResumed { reason }, false)
        }
        // Rewind sets the stored status Pending at once; a suspend (and a resume) accepted
        // before this message runs moves it on, and the rewind must still happen (the
        // rewound instance keeps the suspension). A record of another execution (a start
        // replaced it) has a history that does not end in the failure: dropped below.
        MessageBody::Rewind { reason }
            if matches!(
                rec.status,
                OrchestrationStatus::Failed
                    | OrchestrationStatus::Pending
                    | OrchestrationStatus::Suspended
                    | OrchestrationStatus::Running
            ) =>
        {
            let hist = load_history(shared, id, rec.history_len).await?;
            // Suspended or Running, the record may also be a later execution's (a start
            // replaced the failed one and ran): only a history that still ends in the
            // failure is rewound.
            let ends_failed = hist
                .iter()
                .rev()
                .find(|e| !matches!(e.kind, EventKind::OrchestratorCompleted))
                .is_some_and(|e| {
                    matches!(
                        e.kind,
                        EventKind::ExecutionCompleted {
                            status: OrchestrationStatus::Failed,
                            ..
                        }
                    )
                });
            if !ends_failed
                && !matches!(
                    rec.status,
                    OrchestrationStatus::Failed | OrchestrationStatus::Pending
                )
            {
                tracing::debug!(instance = %id, status = %rec.status.as_str(), "rewind of an execution no longer failed dropped");
                return Ok(InstancePlan::drop_only(id.clone(), consumed));
            }
            let rewound = match shared.exec.rewind(hist, reason, now) {
                Ok(h) => h,
                Err(f) => {
                    tracing::warn!(instance = %id, failure = %f, "rewind refused");
                    return Ok(InstancePlan::drop_only(id.clone(), consumed));
                }
            };
            new.status = if rec.status == OrchestrationStatus::Suspended {
                OrchestrationStatus::Suspended
            } else {
                OrchestrationStatus::Running
            };
            new.failure = None;
            new.output = None;
            slot.session = None;
            let mut session = match shared.exec.load_orchestration(id, rewound.clone()) {
                Ok(s) => s,
                Err(f) => {
                    let r = failed_record(&new, &f, now);
                    return Ok(finish_plan(
                        shared,
                        id.clone(),
                        consumed,
                        0,
                        r,
                        rewound,
                        true,
                    ));
                }
            };
            let span = super::episode_span(shared, id, &new, 0);
            span.record("rewind", true);
            let span = super::traced(
                shared,
                &mut slot.trace,
                id,
                &new.execution_id,
                new.parent.as_ref(),
                span,
            )
            .await;
            let result = super::run_episode(session.as_mut(), span, now, Vec::new())
                .await
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
            slot.session = Some(session);
            // The work the cut history leaves pending is issued again.
            let pending = crate::runtime::rewind::pending_work(&rewound);
            let mut redo = Vec::new();
            for (seq, name, version, input) in pending.tasks {
                redo.push(OrchestratorAction::ScheduleTask {
                    id: seq,
                    name,
                    version,
                    input,
                });
            }
            for (seq, fire_at) in pending.timers {
                redo.push(OrchestratorAction::CreateTimer { id: seq, fire_at });
            }
            for (seq, name, version, instance_id, input) in pending.children {
                redo.push(OrchestratorAction::CreateSubOrchestration {
                    id: seq,
                    name,
                    version,
                    instance_id,
                    input,
                });
            }
            for (seq, entity, operation, input) in pending.calls {
                redo.push(OrchestratorAction::CallEntity {
                    id: seq,
                    entity,
                    operation,
                    input,
                });
            }
            let mut history = rewound;
            history.extend(result.history.iter().cloned());
            let mut actions = redo;
            actions.extend(result.actions.iter().cloned());
            let result = EpisodeResult {
                history,
                actions,
                ..result
            };
            new.history_len = 0;
            return Ok(episode_plan(shared, id, new, consumed, result, true, now));
        }
        _ => return Ok(InstancePlan::drop_only(id.clone(), consumed)),
    };
    new.history_len = seq + 1;
    Ok(InstancePlan {
        id: id.clone(),
        consumed,
        base: super::Base::of(Some(&rec)),
        record: Some(new),
        cut_history: false,
        first_seq: seq,
        events: vec![HistoryEvent::new(now, event)],
        effects: Vec::new(),
        finished,
    })
}

/// Sub-orchestrations created and not yet finished, from a history.
fn running_children(history: &[HistoryEvent]) -> Vec<InstanceId> {
    let mut created = std::collections::BTreeMap::new();
    for e in history {
        match &e.kind {
            EventKind::SubOrchestrationInstanceCreated { instance_id, .. } => {
                created.insert(e.event_id, instance_id.clone());
            }
            EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id, ..
            }
            | EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id, ..
            } => {
                created.remove(task_scheduled_id);
            }
            _ => {}
        }
    }
    created.into_values().collect()
}
