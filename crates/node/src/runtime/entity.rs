//! Entities, each run by its entity actor (see `target_actor`): operations are batched per commit (one transaction per
//! batch: the new state, the responses to callers, the signals sent and the removal of the
//! consumed messages), and the lock protocol of critical sections.
//!
//! Locks: an orchestration's lock request travels from entity to entity in the sorted order
//! of its lock set; each entity grants it when free and forwards it to the next one, the last
//! one answers the orchestration with EntityLockGranted. A locked entity only processes
//! messages from the holder; the others wait, in order, until the holder unlocks it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use tracing::Instrument;

use perdure_core::{EntityId, EventKind, HistoryEvent, InstanceId, Timestamp};

use super::Shared;
use super::executor::{EntityOp, EntitySend};
use super::instance::{Effect, pending_record, write_effects};
use super::outbox::Outbox;
use super::partition::Keyed;
use crate::state::entities;
use crate::state::records::{
    EntityCaller, EntityLock, EntityRecord, LockRequestMsg, MessageBody, Target,
};
use crate::store::{StoreError, Transaction, transact};

/// Operations executed per batch at most.
const MAX_BATCH: usize = 10_000;

/// Bytes of operation inputs one batch takes at most (the first operation always runs).
/// A batch the store still finds over its limits is run again in smaller batches (see
/// `target_actor`); only an operation over them alone fails.
const BATCH_INPUT_BYTES: usize = crate::store::MAX_TRANSACTION_BYTES * 4 / 10;

/// An entity held in memory by its entity actor.
pub struct EntitySlot {
    pub(crate) record: EntityRecord,
}

/// One entity batch's transaction, prepared.
#[derive(Debug)]
pub(crate) struct EntityPlan {
    pub(crate) id: EntityId,
    pub(crate) consumed: Vec<Keyed>,
    pub(crate) record: EntityRecord,
    pub(crate) effects: Vec<Effect>,
    pub(crate) operations: usize,
}

fn from_holder(lock: &EntityLock, body: &MessageBody) -> bool {
    match body {
        MessageBody::EntityOperation(op) => op.sender.as_ref() == Some(&lock.holder),
        MessageBody::Unlock {
            critical_section_id,
            holder,
        } => *holder == lock.holder && *critical_section_id == lock.critical_section_id,
        MessageBody::LockRequest(r) => {
            r.holder == lock.holder && r.critical_section_id == lock.critical_section_id
        }
        _ => true,
    }
}

/// Prepares the next batch of an entity from its pending messages (activating it: loading
/// its record, on first use).
pub(crate) async fn prepare(
    shared: &Shared,
    slot: &mut Option<EntitySlot>,
    id: EntityId,
    msgs: VecDeque<Keyed>,
    max_ops: Option<usize>,
) -> Result<(Option<EntityPlan>, VecDeque<Keyed>), StoreError> {
    let max_ops = max_ops.map_or(MAX_BATCH, |n| n.clamp(1, MAX_BATCH));
    let now = shared.clock.now();
    let slot = match slot {
        Some(s) => s,
        None => {
            let eid = id.clone();
            let record = transact(shared.store.as_ref(), &shared.retry, move |tx| {
                let eid = eid.clone();
                Box::pin(async move { entities::load(tx, &eid).await })
            })
            .await?
            .unwrap_or_default();
            slot.insert(EntitySlot { record })
        }
    };
    // Instrumented, not entered: an `async` operation may suspend the batch.
    let span = tracing::info_span!(
        parent: None,
        "entity_batch",
        otel.name = tracing::field::Empty,
        entity = %id,
        partition = tracing::field::Empty,
        messages = msgs.len(),
    );
    if shared.opts.traces {
        span.record("otel.name", format!("entity_batch {}", id.name()));
        span.record(
            "partition",
            crate::state::partition_of(&id.to_string(), shared.partitions),
        );
    }
    plan(shared, slot, id, msgs, max_ops, now)
        .instrument(span)
        .await
}

/// The batch of an active entity from its pending messages.
async fn plan(
    shared: &Shared,
    slot: &mut EntitySlot,
    id: EntityId,
    msgs: VecDeque<Keyed>,
    max_ops: usize,
    now: Timestamp,
) -> Result<(Option<EntityPlan>, VecDeque<Keyed>), StoreError> {
    let mut rec = slot.record.clone();
    let mut consumed: Vec<Keyed> = Vec::new();
    let mut effects: Vec<Effect> = Vec::new();
    let mut run: Vec<(EntityOp, Option<EntityCaller>)> = Vec::new();
    let mut deferred: VecDeque<Keyed> = VecDeque::new();
    let mut rest = msgs;
    let mut operations = 0usize;
    let mut input_bytes = 0usize;
    while let Some((k, m)) = rest.pop_front() {
        if operations + run.len() >= max_ops {
            rest.push_front((k, m));
            break;
        }
        if let Some(lock) = &rec.lock
            && !from_holder(lock, &m.body)
        {
            deferred.push_back((k, m));
            continue;
        }
        match &m.body {
            MessageBody::EntityOperation(op) => {
                // Bounded by bytes too (the first operation always runs): what operations
                // write (state, results, signals) grows with what they take.
                let n = op.input.as_ref().map_or(0, |p| p.len()).saturating_add(256);
                if operations + run.len() > 0 && input_bytes.saturating_add(n) > BATCH_INPUT_BYTES {
                    rest.push_front((k, m));
                    break;
                }
                input_bytes = input_bytes.saturating_add(n);
                run.push((
                    EntityOp {
                        operation: op.operation.clone(),
                        input: op.input.clone(),
                        request_id: k.iter().map(|b| format!("{b:02x}")).collect(),
                    },
                    op.caller.clone(),
                ));
            }
            MessageBody::LockRequest(req) => {
                operations += flush(shared, &id, &mut rec, &mut run, &mut effects, now).await?;
                if rec.lock.is_none() {
                    rec.lock = Some(EntityLock {
                        critical_section_id: req.critical_section_id.clone(),
                        holder: req.holder.clone(),
                    });
                    effects.push(forward_lock(req, now));
                }
            }
            MessageBody::Unlock {
                critical_section_id,
                holder,
            } => {
                operations += flush(shared, &id, &mut rec, &mut run, &mut effects, now).await?;
                if rec.lock.as_ref().is_some_and(|l| {
                    l.holder == *holder && l.critical_section_id == *critical_section_id
                }) {
                    rec.lock = None;
                    // Waiting messages run now, in their order, before the rest.
                    consumed.push((k, m));
                    while let Some(d) = deferred.pop_back() {
                        rest.push_front(d);
                    }
                    continue;
                }
            }
            _ => {
                tracing::debug!(entity = %id, "message for an orchestration sent to an entity dropped");
            }
        }
        consumed.push((k, m));
    }
    operations += flush(shared, &id, &mut rec, &mut run, &mut effects, now).await?;
    while let Some(d) = deferred.pop_back() {
        rest.push_front(d);
    }
    if consumed.is_empty() {
        return Ok((None, rest));
    }
    if operations > 0 {
        rec.last_modified = now;
    }
    Ok((
        Some(EntityPlan {
            id,
            consumed,
            record: rec,
            effects,
            operations,
        }),
        rest,
    ))
}

fn forward_lock(req: &LockRequestMsg, now: Timestamp) -> Effect {
    let next = req.position as usize + 1;
    match req.lock_set.get(next) {
        Some(e) => Effect::Send(
            Target::Entity(e.clone()),
            MessageBody::LockRequest(LockRequestMsg {
                position: req.position + 1,
                ..req.clone()
            }),
        ),
        None => Effect::Send(
            Target::Instance(req.holder.clone()),
            MessageBody::Event {
                execution_id: Some(req.execution_id.clone()),
                event: HistoryEvent::new(
                    now,
                    EventKind::EntityLockGranted {
                        critical_section_id: req.critical_section_id.clone(),
                    },
                ),
            },
        ),
    }
}

/// Runs the collected operations as one batch; returns how many ran. An error means the
/// batch could not run (its worker went away with the node stopping): nothing is decided,
/// the messages run again later.
async fn flush(
    shared: &Shared,
    id: &EntityId,
    rec: &mut EntityRecord,
    run: &mut Vec<(EntityOp, Option<EntityCaller>)>,
    effects: &mut Vec<Effect>,
    now: Timestamp,
) -> Result<usize, StoreError> {
    if run.is_empty() {
        return Ok(0);
    }
    let (ops, callers): (Vec<EntityOp>, Vec<Option<EntityCaller>>) =
        std::mem::take(run).into_iter().unzip();
    let n = ops.len();
    let out = shared
        .exec
        .run_entity_batch(id, rec.state.take(), ops, now)
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
    rec.state = out.state;
    for (res, caller) in out.results.into_iter().zip(callers) {
        let Some(c) = caller else { continue };
        let kind = match res {
            Ok(result) => EventKind::EntityOperationCompleted {
                task_scheduled_id: c.request_id,
                result,
            },
            Err(failure) => EventKind::EntityOperationFailed {
                task_scheduled_id: c.request_id,
                failure,
            },
        };
        effects.push(Effect::Send(
            Target::Instance(c.instance_id),
            MessageBody::Event {
                execution_id: Some(c.execution_id),
                event: HistoryEvent::new(now, kind),
            },
        ));
    }
    for s in out.sends {
        match s {
            EntitySend::Signal {
                entity,
                operation,
                input,
                scheduled_time,
            } => {
                let body =
                    MessageBody::EntityOperation(crate::state::records::EntityOperationMsg {
                        operation,
                        input,
                        caller: None,
                        critical_section_id: None,
                        sender: None,
                    });
                match scheduled_time {
                    Some(t) if t > now => {
                        effects.push(Effect::SendAt(Target::Entity(entity), t, body))
                    }
                    _ => effects.push(Effect::Send(Target::Entity(entity), body)),
                }
            }
            EntitySend::StartOrchestration {
                name,
                version,
                instance_id,
                input,
                scheduled_start,
            } => effects.push(start_effect(
                shared,
                &instance_id,
                &name,
                version,
                input,
                scheduled_start,
                now,
            )),
        }
    }
    Ok(n)
}

/// The effect that starts an orchestration: its Pending record and its ExecutionStarted
/// (delivered at `scheduled_start` when that is in the future), both only when no live
/// instance has the id.
pub(crate) fn start_effect(
    shared: &Shared,
    instance_id: &InstanceId,
    name: &str,
    version: Option<String>,
    input: Option<perdure_core::Payload>,
    scheduled_start: Option<Timestamp>,
    now: Timestamp,
) -> Effect {
    let execution_id = shared.new_execution_id();
    let started = HistoryEvent::new(
        now,
        EventKind::ExecutionStarted {
            name: name.to_string(),
            version: version.clone(),
            input: input.clone(),
            execution_id: execution_id.clone(),
            parent: None,
            scheduled_start,
        },
    );
    let body = MessageBody::NewExecution {
        started,
        carried: Vec::new(),
    };
    Effect::StartIfAbsent(
        Box::new(pending_record(
            instance_id,
            name,
            version,
            execution_id,
            input,
            None,
            now,
        )),
        scheduled_start.filter(|t| *t > now),
        body,
    )
}

/// Writes a prepared batch into the transaction.
pub(crate) async fn write(
    tx: &mut dyn Transaction,
    shared: &Shared,
    plan: &EntityPlan,
) -> Result<Outbox, StoreError> {
    let mut out = Outbox::default();
    entities::save(tx, &plan.id, &plan.record)?;
    let p = shared.partition_of(&Target::Entity(plan.id.clone()));
    write_effects(tx, shared, p, &plan.effects, &mut out).await?;
    Ok(out)
}

/// Applies a committed batch to the in-memory state.
pub(crate) fn applied(shared: &Shared, slot: &mut Option<EntitySlot>, plan: EntityPlan) {
    let m = &shared.metrics;
    m.entity_batches.fetch_add(1, Ordering::Relaxed);
    m.entity_operations
        .fetch_add(plan.operations as u64, Ordering::Relaxed);
    if let Some(slot) = slot {
        slot.record = plan.record;
    }
}

/// A plan that drops a batch whose transaction was over the store's limits: its messages are
/// consumed, the entity keeps its previous state, and every caller gets a failure.
pub(crate) fn too_large_plan(
    shared: &Shared,
    slot: &Option<EntitySlot>,
    plan: EntityPlan,
    error: &StoreError,
) -> Option<EntityPlan> {
    let record = slot.as_ref().map(|s| s.record.clone()).unwrap_or_default();
    let now = shared.clock.now();
    let failure = perdure_core::FailureDetails::new(
        "TransactionTooLarge",
        format!("the entity batch could not be stored: {error}"),
    );
    let mut effects = Vec::new();
    for (_, m) in &plan.consumed {
        if let MessageBody::EntityOperation(op) = &m.body
            && let Some(c) = &op.caller
        {
            effects.push(Effect::Send(
                Target::Instance(c.instance_id.clone()),
                MessageBody::Event {
                    execution_id: Some(c.execution_id.clone()),
                    event: HistoryEvent::new(
                        now,
                        EventKind::EntityOperationFailed {
                            task_scheduled_id: c.request_id,
                            failure: failure.clone(),
                        },
                    ),
                },
            ));
        }
    }
    Some(EntityPlan {
        id: plan.id,
        consumed: plan.consumed,
        record,
        effects,
        operations: 0,
    })
}
