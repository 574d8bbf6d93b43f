//! Orchestration instances, each run by its instance actor (see `target_actor`): activation (load the history, replay
//! once), episodes (new events in, history events and actions out), and the transaction that
//! commits an episode: history, instance record and indexes, every message it sends, and the
//! removal of the messages it consumed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use perdure_core::{
    EventKind, ExecutionId, FailureDetails, HistoryEvent, InstanceId, OrchestrationStatus,
    Timestamp,
};
use tracing::Instrument;

use super::Shared;
use super::executor::{EpisodeOutcome, EpisodeResult, EpisodeUnavailable, OrchestrationSession};
use super::outbox::Outbox;
use super::partition::Keyed;
use crate::state::records::{ActivityTask, InstanceRecord, MessageBody, Target};
use crate::state::{history, instances, traces};
use crate::store::{StoreError, Transaction, transact};
use crate::telemetry::{self, TraceParent, orchestration_span_id};

mod actions;
mod control;

use actions::action_effects;
pub(crate) use actions::pending_record;
use control::control_message;

/// An instance held in memory by its instance actor.
pub struct InstanceSlot {
    /// The record as last committed (None: no such instance).
    pub(crate) record: Option<InstanceRecord>,
    /// The live orchestrator (None: replay on next use).
    pub(crate) session: Option<Box<dyn OrchestrationSession>>,
    /// The parent of the orchestration spans, once read (only when spans are exported):
    /// `Some(None)` when the instance has no trace context.
    pub(crate) trace: Option<Option<TraceParent>>,
    /// When the current execution started, if it started in this slot (its orchestration
    /// span starts then; otherwise at the instance's creation).
    pub(crate) execution_started: Option<(perdure_core::ExecutionId, perdure_core::Timestamp)>,
}

/// Something an episode's transaction writes besides history and record (stored as such in
/// the chunks of an episode committed in stages, see `staged`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Effect {
    /// A message to a target's inbox.
    Send(Target, MessageBody),
    /// A message delivered at a time (a durable timer).
    SendAt(Target, Timestamp, MessageBody),
    /// An activity task.
    Task(ActivityTask),
    /// A new instance's record (a sub-orchestration); written unless a live one exists.
    CreateInstance(InstanceRecord),
    /// A start (an entity's): the new instance's Pending record and its start message
    /// (delivered at the time, if any), both written only when no live instance has the id:
    /// a start of a live instance is ignored whole, and leaves no message behind that could
    /// start an execution later (over a continue-as-new, say). Appended last: staged effect
    /// chunks on disk keep their encoding.
    StartIfAbsent(Box<InstanceRecord>, Option<Timestamp>, MessageBody),
}

/// What an episode expects the stored instance record to be when it commits. Starts with
/// `TerminateExisting`, suspend, resume and rewind change the record outside the instance's
/// episodes; an episode prepared from the record as it was before is stale and must not
/// overwrite the new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Base {
    /// The plan writes no record: anything may be stored.
    Any,
    /// The record the episode was prepared from, by its [`Stamp`] (None: no record).
    Record(Option<Stamp>),
    /// A new execution, by its id and the time of its `ExecutionStarted`: the record its
    /// start wrote (this execution), or the record of the execution that continued as new
    /// into this one; no record at all is accepted too.
    Execution(ExecutionId, Timestamp),
}

/// The fields of an instance record that every change moves: the record's version. The
/// execution id changes with a start, the status with suspend, resume, rewind and every
/// finish, the history length with every episode, the update time with every change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    execution_id: ExecutionId,
    status: OrchestrationStatus,
    history_len: u64,
    updated_at: Timestamp,
}

impl Stamp {
    pub(crate) fn of(r: &InstanceRecord) -> Self {
        Self {
            execution_id: r.execution_id.clone(),
            status: r.status,
            history_len: r.history_len,
            updated_at: r.updated_at,
        }
    }
}

impl Base {
    /// The base of an episode prepared from a slot's record.
    pub(crate) fn of(record: Option<&InstanceRecord>) -> Self {
        Self::Record(record.map(Stamp::of))
    }

    /// Whether a plan prepared on this base may overwrite `stored`.
    pub(crate) fn holds(&self, stored: Option<&InstanceRecord>) -> bool {
        match self {
            Self::Any => true,
            Self::Record(base) => base.as_ref() == stored.map(Stamp::of).as_ref(),
            // The execution's own record, unless it ended before it started (a terminated
            // scheduled start), or the continue-as-new this execution continues. The
            // continue-as-new episode writes its record and its continuation's start with
            // the same time, and nothing changes a continued-as-new record but its
            // continuation, a termination or a replacing start: any other start arriving
            // then (the timer of a scheduled start whose instance was replaced since) is
            // not the continuation and must not replace the chain. This rests on every
            // continue-as-new record being written by `episode_plan`.
            Self::Execution(e, started_at) => stored.is_none_or(|s| {
                (s.execution_id == *e && !s.status.is_terminal())
                    || (s.status == OrchestrationStatus::ContinuedAsNew
                        && s.updated_at == *started_at)
            }),
        }
    }
}

/// One episode's transaction, prepared.
#[derive(Debug)]
pub(crate) struct InstancePlan {
    pub(crate) id: InstanceId,
    pub(crate) consumed: Vec<Keyed>,
    /// What the stored record must be for the plan to commit (see [`Base`]).
    pub(crate) base: Base,
    /// The new record (None: the messages are only dropped).
    pub(crate) record: Option<InstanceRecord>,
    pub(crate) cut_history: bool,
    pub(crate) first_seq: u64,
    pub(crate) events: Vec<HistoryEvent>,
    pub(crate) effects: Vec<Effect>,
    pub(crate) finished: bool,
}

impl InstancePlan {
    fn drop_only(id: InstanceId, consumed: Vec<Keyed>) -> Self {
        Self {
            id,
            consumed,
            base: Base::Any,
            record: None,
            cut_history: false,
            first_seq: 0,
            events: Vec::new(),
            effects: Vec::new(),
            finished: false,
        }
    }
}

async fn load_record(
    shared: &Shared,
    id: &InstanceId,
) -> Result<Option<InstanceRecord>, StoreError> {
    let id = id.clone();
    transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let id = id.clone();
        Box::pin(async move { instances::load(tx, &id).await })
    })
    .await
}

/// Events read per transaction when a history is loaded (whole batches: a page may hold
/// more).
const HISTORY_PAGE: usize = 10_000;

/// Loads the first `len` events of an instance's history (the record's `history_len`), in
/// transactions of about [`HISTORY_PAGE`] events. Only the instance's actor changes its
/// history, and it is the one loading, so the pages form one history.
pub(super) async fn load_history(
    shared: &Shared,
    id: &InstanceId,
    len: u64,
) -> Result<Vec<HistoryEvent>, StoreError> {
    let cap = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(HISTORY_PAGE * 10);
    let mut out = Vec::with_capacity(cap);
    while (out.len() as u64) < len {
        let from = out.len() as u64;
        let id = id.clone();
        let page = transact(shared.store.as_ref(), &shared.retry, move |tx| {
            let id = id.clone();
            Box::pin(async move { history::load_page(tx, &id, from, len, HISTORY_PAGE).await })
        })
        .await?;
        if page.is_empty() {
            break;
        }
        out.extend(page);
    }
    Ok(out)
}

pub(super) fn failed_record(
    rec: &InstanceRecord,
    failure: &FailureDetails,
    now: Timestamp,
) -> InstanceRecord {
    let mut r = rec.clone();
    r.status = OrchestrationStatus::Failed;
    r.failure = Some(failure.clone());
    r.updated_at = now;
    r
}

/// Prepares the next episode of an instance from its pending messages. Returns the plan (if
/// there is anything to commit) and the messages left for later, in order.
pub(crate) async fn prepare(
    shared: &Shared,
    slot: &mut Option<InstanceSlot>,
    id: InstanceId,
    msgs: VecDeque<Keyed>,
) -> Result<(Option<InstancePlan>, VecDeque<Keyed>), StoreError> {
    let (mut plan, left) = prepare_plan(shared, slot, id, msgs).await?;
    // Every plan that writes the record was prepared from the slot's record, except a new
    // execution's (which sets its own base).
    if let Some(p) = plan.as_mut()
        && p.record.is_some()
        && p.base == Base::Any
    {
        p.base = Base::of(slot.as_ref().and_then(|s| s.record.as_ref()));
    }
    Ok((plan, left))
}

async fn prepare_plan(
    shared: &Shared,
    slot: &mut Option<InstanceSlot>,
    id: InstanceId,
    mut msgs: VecDeque<Keyed>,
) -> Result<(Option<InstancePlan>, VecDeque<Keyed>), StoreError> {
    let now = shared.clock.now();
    let slot = match slot {
        Some(s) => s,
        None => {
            // A start needs no read: the new execution brings everything (and the commit
            // reads the stored record it replaces, for the indexes).
            let starts_fresh = msgs
                .front()
                .is_some_and(|(_, m)| matches!(m.body, MessageBody::NewExecution { .. }));
            let record = if starts_fresh {
                None
            } else {
                load_record(shared, &id).await?
            };
            slot.insert(InstanceSlot {
                record,
                session: None,
                trace: None,
                execution_started: None,
            })
        }
    };

    // A new execution is processed alone. While the instance waits for its (next) execution
    // to start, that start goes before any event that arrived earlier.
    let waiting = slot.record.as_ref().is_none_or(|r| {
        matches!(
            r.status,
            OrchestrationStatus::Pending | OrchestrationStatus::ContinuedAsNew
        )
    });
    let is_new = |m: &Keyed| matches!(m.1.body, MessageBody::NewExecution { .. });
    let pos = if msgs.front().is_some_and(is_new) {
        Some(0)
    } else if waiting {
        msgs.iter().position(is_new)
    } else {
        None
    };
    if let Some(pos) = pos
        && let Some((k, m)) = msgs.remove(pos)
        && let MessageBody::NewExecution { started, carried } = m.body.clone()
    {
        let consumed = vec![(k, m)];
        let plan = new_execution(shared, slot, &id, consumed, started, carried, now).await?;
        return Ok((Some(plan), msgs));
    }

    let mut consumed: Vec<Keyed> = Vec::new();
    let mut batch: Vec<HistoryEvent> = Vec::new();
    // The events one episode takes are bounded by bytes too: results that arrive together
    // (a fan-out) over the transaction limit go into several episodes.
    let mut batch_bytes = 0usize;
    let mut skipped: VecDeque<Keyed> = VecDeque::new();
    let mut control: Option<Keyed> = None;
    while let Some((k, m)) = msgs.pop_front() {
        let live = slot.record.as_ref().filter(|r| !r.status.is_terminal());
        match &m.body {
            MessageBody::NewExecution { .. } => {
                msgs.push_front((k, m));
                break;
            }
            MessageBody::Event {
                execution_id,
                event,
            } => {
                let Some(rec) = live else {
                    tracing::debug!(instance = %id, event = event.name(), "event for a finished or unknown instance dropped");
                    consumed.push((k, m));
                    continue;
                };
                if execution_id
                    .as_ref()
                    .is_some_and(|e| *e != rec.execution_id)
                {
                    consumed.push((k, m));
                    continue;
                }
                if matches!(
                    rec.status,
                    OrchestrationStatus::Suspended
                        | OrchestrationStatus::Pending
                        | OrchestrationStatus::ContinuedAsNew
                ) {
                    skipped.push_back((k, m));
                    continue;
                }
                let bytes = event_bytes(event);
                if !batch.is_empty() && batch_bytes.saturating_add(bytes) > EPISODE_EVENT_BYTES {
                    msgs.push_front((k, m));
                    break;
                }
                batch_bytes = batch_bytes.saturating_add(bytes);
                batch.push(event.clone());
                consumed.push((k, m));
            }
            MessageBody::Terminate { .. }
            | MessageBody::Suspend { .. }
            | MessageBody::Resume { .. }
            | MessageBody::Rewind { .. } => {
                if batch.is_empty() {
                    control = Some((k, m));
                } else {
                    msgs.push_front((k, m));
                }
                break;
            }
            MessageBody::EntityOperation(_)
            | MessageBody::LockRequest(_)
            | MessageBody::Unlock { .. } => {
                consumed.push((k, m));
            }
        }
    }
    // Messages skipped while suspended keep their place before the rest.
    while let Some(m) = skipped.pop_back() {
        msgs.push_front(m);
    }

    if let Some((k, m)) = control {
        // A control message may end the execution: its orchestration span needs the context.
        let parent = slot.record.as_ref().and_then(|r| r.parent.clone());
        ensure_trace(shared, &mut slot.trace, &id, parent.as_ref()).await;
        let plan = control_message(shared, slot, &id, consumed, (k, m), now).await?;
        return Ok((Some(plan), msgs));
    }
    if batch.is_empty() {
        if consumed.is_empty() {
            return Ok((None, msgs));
        }
        return Ok((Some(InstancePlan::drop_only(id, consumed)), msgs));
    }
    let Some(rec) = slot.record.clone() else {
        return Ok((Some(InstancePlan::drop_only(id, consumed)), msgs));
    };
    ensure_trace(shared, &mut slot.trace, &id, rec.parent.as_ref()).await;
    if slot.session.is_none() {
        let hist = load_history(shared, &id, rec.history_len).await?;
        shared.metrics.replays.fetch_add(1, Ordering::Relaxed);
        match shared.exec.load_orchestration(&id, hist) {
            Ok(s) => slot.session = Some(s),
            Err(f) => {
                let r = failed_record(&rec, &f, now);
                let plan = finish_plan(
                    shared,
                    id,
                    consumed,
                    rec.history_len,
                    r,
                    vec![failed_event(&f, now)],
                    false,
                );
                return Ok((Some(plan), msgs));
            }
        }
    }
    let span = episode_span(shared, &id, &rec, batch.len());
    let span = traced(
        shared,
        &mut slot.trace,
        &id,
        &rec.execution_id,
        rec.parent.as_ref(),
        span,
    )
    .await;
    let Some(session) = slot.session.as_mut() else {
        return Ok((None, msgs));
    };
    let result = match run_episode(session.as_mut(), span, now, batch).await {
        Ok(r) => r,
        Err(e) => {
            slot.session = None;
            return Err(StoreError::Unavailable(Box::new(e)));
        }
    };
    let plan = episode_plan(shared, &id, rec, consumed, result, false, now);
    Ok((Some(plan), msgs))
}

/// Estimated bytes of the events one episode takes at most (the first event always goes):
/// the episode writes them into the history once, and its record, actions and messages
/// need the rest of the store's transaction limit.
pub(crate) const EPISODE_EVENT_BYTES: usize = crate::store::MAX_TRANSACTION_BYTES * 4 / 10;

/// The bytes an incoming event adds to an episode's transaction, estimated from its payload.
pub(crate) fn event_bytes(e: &HistoryEvent) -> usize {
    const OVERHEAD: usize = 256;
    let payload = match &e.kind {
        EventKind::TaskCompleted { result, .. }
        | EventKind::SubOrchestrationInstanceCompleted { result, .. }
        | EventKind::EntityOperationCompleted { result, .. } => result.as_ref().map(|p| p.len()),
        EventKind::EventRaised { input, .. } => input.as_ref().map(|p| p.len()),
        EventKind::TaskFailed { .. }
        | EventKind::SubOrchestrationInstanceFailed { .. }
        | EventKind::EntityOperationFailed { .. } => {
            perdure_core::codec::encode(e).ok().map(|b| b.len())
        }
        _ => None,
    };
    payload.unwrap_or(0).saturating_add(OVERHEAD)
}

fn failed_event(f: &FailureDetails, now: Timestamp) -> HistoryEvent {
    HistoryEvent::new(
        now,
        EventKind::ExecutionCompleted {
            status: OrchestrationStatus::Failed,
            result: None,
            failure: Some(f.clone()),
        },
    )
}

pub(super) fn finish_plan(
    shared: &Shared,
    id: InstanceId,
    consumed: Vec<Keyed>,
    first_seq: u64,
    mut record: InstanceRecord,
    events: Vec<HistoryEvent>,
    cut_history: bool,
) -> InstancePlan {
    let mut effects = Vec::new();
    record.history_len = first_seq + events.len() as u64;
    notify_parent(shared, &record, &mut effects);
    InstancePlan {
        id,
        consumed,
        base: Base::Any,
        record: Some(record),
        cut_history,
        first_seq,
        events,
        effects,
        finished: true,
    }
}

fn notify_parent(_shared: &Shared, record: &InstanceRecord, effects: &mut Vec<Effect>) {
    let Some(parent) = &record.parent else {
        return;
    };
    let kind = match record.status {
        OrchestrationStatus::Completed => EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id: parent.task_scheduled_id,
            result: record.output.clone(),
        },
        OrchestrationStatus::Failed => EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id: parent.task_scheduled_id,
            failure: record
                .failure
                .clone()
                .unwrap_or_else(|| FailureDetails::new("Failed", "sub-orchestration failed")),
        },
        OrchestrationStatus::Terminated => EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id: parent.task_scheduled_id,
            failure: FailureDetails::new(
                "Terminated",
                format!("sub-orchestration {} was terminated", record.instance_id),
            ),
        },
        _ => return,
    };
    effects.push(Effect::Send(
        Target::Instance(parent.instance_id.clone()),
        MessageBody::Event {
            execution_id: Some(parent.execution_id.clone()),
            event: HistoryEvent::new(record.updated_at, kind),
        },
    ));
}

/// The span of one episode (its OpenTelemetry parent is set by [`traced`]).
pub(super) fn episode_span(
    shared: &Shared,
    id: &InstanceId,
    rec: &InstanceRecord,
    events: usize,
) -> tracing::Span {
    // No contextual parent: the OpenTelemetry parent is set explicitly (`traced`).
    let span = tracing::info_span!(
        parent: None,
        "episode",
        otel.name = tracing::field::Empty,
        instance = %id,
        name = %rec.name,
        execution_id = %rec.execution_id,
        partition = shared.partition_of_instance(id),
        events,
        rewind = tracing::field::Empty,
    );
    if shared.opts.traces {
        span.record("otel.name", format!("episode {}", rec.name));
    }
    span
}

/// When spans are exported, reads the instance's trace context into `trace` unless it was
/// read already for this slot. A read that fails leaves it unread (tried again next time).
pub(super) async fn ensure_trace(
    shared: &Shared,
    trace: &mut Option<Option<TraceParent>>,
    id: &InstanceId,
    parent: Option<&perdure_core::ParentInstance>,
) {
    if !shared.opts.traces || trace.is_some() {
        return;
    }
    let (tid, parent) = (id.clone(), parent.cloned());
    let read = transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let (tid, parent) = (tid.clone(), parent.clone());
        Box::pin(async move { traces::resolve(tx, &tid, parent.as_ref()).await })
    })
    .await;
    match read {
        Ok(t) => *trace = Some(t),
        Err(e) => tracing::debug!(instance = %id, error = %e, "trace context not read"),
    }
}

/// When spans are exported, makes the execution's orchestration span the parent of `span`
/// (reading the instance's trace context once per slot, [`ensure_trace`]).
pub(super) async fn traced(
    shared: &Shared,
    trace: &mut Option<Option<TraceParent>>,
    id: &InstanceId,
    execution_id: &perdure_core::ExecutionId,
    parent: Option<&perdure_core::ParentInstance>,
    span: tracing::Span,
) -> tracing::Span {
    ensure_trace(shared, trace, id, parent).await;
    if let Some(Some(tp)) = trace {
        let own = orchestration_span_id(id.as_str(), execution_id.0.as_str());
        telemetry::set_parent(&span, &tp.with_span(own));
    }
    span
}

/// Exports the orchestration span of an execution that just ended (when spans are exported
/// and the instance has a trace context).
fn emit_ended(
    shared: &Shared,
    trace: Option<&TraceParent>,
    before: Option<&InstanceRecord>,
    rec: &InstanceRecord,
    started: perdure_core::Timestamp,
) {
    let ended = |r: &InstanceRecord| {
        r.status.is_terminal() || r.status == OrchestrationStatus::ContinuedAsNew
    };
    let (true, Some(parent)) = (shared.opts.traces, trace) else {
        return;
    };
    if !ended(rec) || before.is_some_and(|b| b.execution_id == rec.execution_id && ended(b)) {
        return;
    }
    let at = |t: perdure_core::Timestamp| {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.as_millis())
    };
    let attributes = vec![
        opentelemetry::KeyValue::new("perdure.instance_id", rec.instance_id.as_str().to_string()),
        opentelemetry::KeyValue::new("perdure.name", rec.name.clone()),
        opentelemetry::KeyValue::new("perdure.execution_id", rec.execution_id.0.clone()),
        opentelemetry::KeyValue::new(
            "perdure.partition",
            i64::from(shared.partition_of_instance(&rec.instance_id)),
        ),
        opentelemetry::KeyValue::new("perdure.status", rec.status.as_str()),
    ];
    telemetry::emit_orchestration(telemetry::OrchestrationSpan {
        parent: *parent,
        span_id: orchestration_span_id(rec.instance_id.as_str(), rec.execution_id.0.as_str()),
        name: &rec.name,
        attributes,
        start: at(started),
        end: at(rec.updated_at),
        error: rec.failure.as_ref().map(|f| f.message.clone()),
    });
}

/// Runs one episode inside `span`. An in-process episode runs while the future is made, so
/// that part is entered explicitly; an out-of-process one runs in the instrumented future.
pub(super) async fn run_episode(
    session: &mut dyn OrchestrationSession,
    span: tracing::Span,
    now: Timestamp,
    events: Vec<HistoryEvent>,
) -> Result<EpisodeResult, EpisodeUnavailable> {
    let fut = span.in_scope(|| session.execute(now, events));
    fut.instrument(span).await
}

/// A new execution's plan: its first episode. An error means the episode could not run
/// (nothing was decided; the caller retries the message later).
async fn new_execution(
    shared: &Shared,
    slot: &mut InstanceSlot,
    id: &InstanceId,
    consumed: Vec<Keyed>,
    started: HistoryEvent,
    carried: Vec<HistoryEvent>,
    now: Timestamp,
) -> Result<InstancePlan, StoreError> {
    let EventKind::ExecutionStarted {
        name,
        version,
        input,
        execution_id,
        parent,
        ..
    } = &started.kind
    else {
        return Ok(InstancePlan::drop_only(id.clone(), consumed));
    };
    // Its instance ended before it started (terminated while its start waited for its
    // scheduled time): the start is dropped.
    if slot
        .record
        .as_ref()
        .is_some_and(|r| r.execution_id == *execution_id && r.status.is_terminal())
    {
        tracing::debug!(instance = %id, "start of an execution that already ended dropped");
        return Ok(InstancePlan::drop_only(id.clone(), consumed));
    }
    let base = Base::Execution(execution_id.clone(), started.timestamp);
    let old = slot.record.clone();
    let rec = InstanceRecord {
        instance_id: id.clone(),
        name: name.clone(),
        version: version.clone(),
        execution_id: execution_id.clone(),
        status: OrchestrationStatus::Running,
        input: input.clone(),
        output: None,
        custom_status: None,
        failure: None,
        // A continue-as-new keeps the instance's creation time; any other start is new,
        // created when the start was accepted (the time of its ExecutionStarted event, as
        // DTFx's CreatedTime): the creation time its Pending record shows, whose index entry
        // then stays.
        created_at: old
            .as_ref()
            .filter(|r| r.status == OrchestrationStatus::ContinuedAsNew)
            .map_or(started.timestamp, |r| r.created_at),
        updated_at: now,
        parent: parent.clone(),
        history_len: 0,
        original_input: old
            .as_ref()
            .filter(|r| r.status == OrchestrationStatus::ContinuedAsNew)
            .map_or_else(|| input.clone(), |r| r.original_input.clone()),
    };
    slot.session = None;
    // A new execution may come with a new trace (a start that replaced the instance); read
    // before anything can end it.
    slot.trace = None;
    ensure_trace(shared, &mut slot.trace, id, rec.parent.as_ref()).await;
    slot.execution_started = Some((rec.execution_id.clone(), now));
    let mut session = match shared.exec.load_orchestration(id, Vec::new()) {
        Ok(s) => s,
        Err(f) => {
            let r = failed_record(&rec, &f, now);
            let mut plan = finish_plan(
                shared,
                id.clone(),
                consumed,
                0,
                r,
                vec![started, failed_event(&f, now)],
                true,
            );
            plan.base = base;
            return Ok(plan);
        }
    };
    let mut events = vec![started];
    events.extend(carried);
    let span = episode_span(shared, id, &rec, events.len());
    let span = traced(
        shared,
        &mut slot.trace,
        id,
        &rec.execution_id,
        rec.parent.as_ref(),
        span,
    )
    .await;
    let result = run_episode(session.as_mut(), span, now, events)
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
    slot.session = Some(session);
    let mut plan = episode_plan(shared, id, rec, consumed, result, true, now);
    plan.base = base;
    Ok(plan)
}

pub(super) fn episode_plan(
    shared: &Shared,
    id: &InstanceId,
    rec: InstanceRecord,
    consumed: Vec<Keyed>,
    result: EpisodeResult,
    cut_history: bool,
    now: Timestamp,
) -> InstancePlan {
    for line in &result.logs {
        tracing::info!(instance = %id, "{line}");
    }
    let mut new = rec.clone();
    new.updated_at = now;
    new.custom_status = result.custom_status.clone();
    let first_seq = if cut_history { 0 } else { rec.history_len };
    new.history_len = first_seq + result.history.len() as u64;
    let mut effects = Vec::new();
    for a in result.actions {
        action_effects(shared, &rec, a, now, &mut effects);
    }
    let mut finished = false;
    match result.outcome {
        EpisodeOutcome::Running => {
            if new.status == OrchestrationStatus::Pending {
                new.status = OrchestrationStatus::Running;
            }
        }
        EpisodeOutcome::Completed(Some(out)) if out.len() > shared.opts.max_payload_bytes.get() => {
            new.status = OrchestrationStatus::Failed;
            new.failure = Some(FailureDetails::new(
                "PayloadTooLarge",
                format!(
                    "the output is {} bytes; the limit is {} bytes",
                    out.len(),
                    shared.opts.max_payload_bytes
                ),
            ));
            finished = true;
        }
        EpisodeOutcome::Completed(out) => {
            new.status = OrchestrationStatus::Completed;
            new.output = out;
            finished = true;
        }
        EpisodeOutcome::Failed(f) => {
            new.status = OrchestrationStatus::Failed;
            new.failure = Some(f);
            finished = true;
        }
        EpisodeOutcome::ContinuedAsNew { input, carried } => {
            new.status = OrchestrationStatus::ContinuedAsNew;
            let started = HistoryEvent::new(
                now,
                EventKind::ExecutionStarted {
                    name: rec.name.clone(),
                    version: rec.version.clone(),
                    input,
                    execution_id: shared.new_execution_id(),
                    parent: rec.parent.clone(),
                    scheduled_start: None,
                },
            );
            effects.push(Effect::Send(
                Target::Instance(id.clone()),
                MessageBody::NewExecution { started, carried },
            ));
        }
    }
    if finished {
        notify_parent(shared, &new, &mut effects);
    }
    InstancePlan {
        id: id.clone(),
        consumed,
        base: Base::Any,
        record: Some(new),
        cut_history,
        first_seq,
        events: result.history,
        effects,
        finished,
    }
}

/// Reads the stored record a plan replaces and checks it against the plan's [`Base`]:
/// `Ok(None)` when the plan is stale (the record changed since the episode was prepared).
pub(crate) async fn check_base(
    tx: &mut dyn Transaction,
    plan: &InstancePlan,
) -> Result<Option<Option<InstanceRecord>>, StoreError> {
    if plan.record.is_none() {
        return Ok(Some(None));
    }
    let old = instances::load(tx, &plan.id).await?;
    Ok(plan.base.holds(old.as_ref()).then_some(old))
}

/// The record a new execution's episode stores instead of the one it prepared, if any, with
/// whether the actor must take it as its copy (`false`: the copy differs and its next
/// commit reloads).
/// - A suspend accepted while the execution was Pending holds: the execution is stored
///   suspended.
/// - A continuation prepared without the record it continues (its actor had not loaded it: a
///   cold slot after a restart, a move or a rerun) keeps the chain's creation time and
///   original input, as one prepared with it does.
fn as_stored(
    base: &Base,
    old: Option<&InstanceRecord>,
    rec: &InstanceRecord,
) -> Option<(InstanceRecord, bool)> {
    let (Base::Execution(e, _), Some(o)) = (base, old) else {
        return None;
    };
    if o.execution_id == *e
        && o.status == OrchestrationStatus::Suspended
        && rec.status == OrchestrationStatus::Running
    {
        let r = InstanceRecord {
            status: OrchestrationStatus::Suspended,
            ..rec.clone()
        };
        return Some((r, false));
    }
    if o.status == OrchestrationStatus::ContinuedAsNew
        && o.execution_id != *e
        && (o.created_at != rec.created_at || o.original_input != rec.original_input)
    {
        let r = InstanceRecord {
            created_at: o.created_at,
            original_input: o.original_input.clone(),
            ..rec.clone()
        };
        return Some((r, true));
    }
    None
}

/// How an episode's transaction writes its history events and effects.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Writes {
    /// All of them, in this transaction.
    Whole,
    /// Staged already (see `staged`): this transaction publishes the effect chunks of
    /// `attempt` (`chunks` of them; none: no marker), and the staged events, or, with
    /// `events`, writes the events itself.
    Publish {
        attempt: (u64, u64),
        chunks: u64,
        events: bool,
    },
}

/// Writes a prepared episode into the transaction (after the caller checked the lease and
/// the base, see [`check_base`], and consumed the messages); `old` is the stored record.
pub(crate) async fn write(
    tx: &mut dyn Transaction,
    shared: &Shared,
    partition: u32,
    plan: &InstancePlan,
    old: Option<InstanceRecord>,
    writes: Writes,
) -> Result<Outbox, StoreError> {
    let mut out = Outbox::default();
    if let Some(rec) = &plan.record {
        let adjusted_record;
        let adjusted = as_stored(&plan.base, old.as_ref(), rec);
        let rec = match adjusted {
            Some((r, take)) => {
                if take {
                    out.record = Some(Box::new(r.clone()));
                }
                adjusted_record = r;
                &adjusted_record
            }
            None => rec,
        };
        instances::save(tx, old.as_ref(), rec)?;
        if matches!(writes, Writes::Whole | Writes::Publish { events: true, .. }) {
            if plan.cut_history {
                history::cut(tx, &plan.id);
            }
            history::append(tx, &plan.id, plan.first_seq, &plan.events)?;
        }
        match writes {
            Writes::Whole => {}
            Writes::Publish {
                attempt, chunks, ..
            } => {
                // The events are in place: what follows them is an older execution's rest
                // (a cut history) or an unpublished attempt's.
                history::cut_from(tx, &plan.id, plan.first_seq + plan.events.len() as u64);
                crate::state::staged::clear_other_attempts(tx, partition, &plan.id, attempt);
                if chunks > 0 {
                    let m = crate::state::records::StagedMarker {
                        attempt,
                        chunks,
                        next: 0,
                    };
                    crate::state::staged::set_marker(tx, partition, &plan.id, &m)?;
                }
                return Ok(out);
            }
        }
    }
    write_effects(tx, shared, partition, &plan.effects, &mut out).await?;
    Ok(out)
}

/// Writes effects (messages, timers, tasks, new instance records) into the transaction.
pub(crate) async fn write_effects(
    tx: &mut dyn Transaction,
    shared: &Shared,
    partition: u32,
    effects: &[Effect],
    out: &mut Outbox,
) -> Result<(), StoreError> {
    for e in effects {
        match e {
            Effect::Send(t, body) => out.send(tx, shared, t.clone(), body.clone())?,
            Effect::SendAt(t, due, body) => {
                out.send_at(tx, shared, t.clone(), *due, body.clone())?
            }
            Effect::Task(task) => out.task(tx, partition, task.clone())?,
            Effect::CreateInstance(rec) => {
                create_instance(tx, rec).await?;
            }
            Effect::StartIfAbsent(rec, at, body) => {
                if !create_instance(tx, rec).await? {
                    tracing::debug!(instance = %rec.instance_id, "start of a live instance ignored");
                    continue;
                }
                let t = Target::Instance(rec.instance_id.clone());
                match at {
                    Some(due) => out.send_at(tx, shared, t, *due, body.clone())?,
                    None => out.send(tx, shared, t, body.clone())?,
                }
            }
        }
    }
    Ok(())
}

/// Writes a new instance's record unless a live instance has its id; whether it wrote it.
async fn create_instance(
    tx: &mut dyn Transaction,
    rec: &InstanceRecord,
) -> Result<bool, StoreError> {
    let old = instances::load(tx, &rec.instance_id).await?;
    if old.as_ref().is_some_and(|o| !o.status.is_terminal()) {
        return Ok(false);
    }
    instances::save(tx, old.as_ref(), rec)?;
    // A finished instance replaced: its trace is not the new one's.
    if old.is_some() {
        traces::clear(tx, &rec.instance_id);
    }
    Ok(true)
}

/// Applies a committed plan to the in-memory state.
pub(crate) fn applied(shared: &Shared, slot: &mut Option<InstanceSlot>, plan: InstancePlan) {
    shared.metrics.episodes.fetch_add(1, Ordering::Relaxed);
    if let Some(rec) = plan.record
        && let Some(slot) = slot
    {
        let started = slot
            .execution_started
            .as_ref()
            .filter(|(e, _)| *e == rec.execution_id)
            .map_or(rec.created_at, |(_, t)| *t);
        emit_ended(
            shared,
            slot.trace.as_ref().and_then(Option::as_ref),
            slot.record.as_ref(),
            &rec,
            started,
        );
        if plan.finished {
            slot.session = None;
            shared.metrics.completions.fetch_add(1, Ordering::Relaxed);
        }
        slot.record = Some(rec);
        if plan.finished {
            shared.notify_finished(&plan.id);
        }
    }
}

/// A plan that fails the instance because its episode's transaction was over the store's
/// limits (for example a huge output or too many actions): the same messages are consumed,
/// the instance fails with `TransactionTooLarge`, nothing else is written.
pub(crate) fn too_large_plan(
    shared: &Shared,
    slot: &mut Option<InstanceSlot>,
    plan: InstancePlan,
    error: &StoreError,
) -> InstancePlan {
    let now = shared.clock.now();
    let cached = slot.as_mut().and_then(|slot| {
        slot.session = None;
        slot.record.clone()
    });
    let f = FailureDetails::new(
        "TransactionTooLarge",
        format!("the episode could not be stored: {error}"),
    );
    // A new execution's episode replaces the history; otherwise the failure is appended.
    let (base, first_seq) = match (&plan.record, plan.cut_history, cached) {
        (Some(r), true, _) => (r.clone(), 0),
        (_, false, Some(c)) => {
            let n = c.history_len;
            (c, n)
        }
        (Some(r), false, None) => (r.clone(), plan.first_seq),
        (None, _, _) => return InstancePlan::drop_only(plan.id, plan.consumed),
    };
    let r = failed_record(&base, &f, now);
    let mut failed = finish_plan(
        shared,
        plan.id,
        plan.consumed,
        first_seq,
        r,
        vec![failed_event(&f, now)],
        plan.cut_history,
    );
    // Prepared from the same record as the plan it replaces.
    failed.base = plan.base;
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(execution: &str, status: OrchestrationStatus, at: u64) -> InstanceRecord {
        let mut r = pending_record(
            &InstanceId::new("i").unwrap(),
            "O",
            None,
            ExecutionId(execution.into()),
            None,
            None,
            Timestamp::from_millis(at),
        );
        r.status = status;
        r
    }

    #[test]
    fn a_continuation_prepared_without_its_record_keeps_the_chains_creation_and_input() {
        use OrchestrationStatus as S;
        let base = Base::Execution(ExecutionId("e2".into()), Timestamp::from_millis(9));
        let mut can = record("e1", S::ContinuedAsNew, 3);
        can.original_input = Some(perdure_core::Payload::json(&1).unwrap());
        can.updated_at = Timestamp::from_millis(9);
        // Prepared cold: created now, with its own input as the original.
        let mut next = record("e2", S::Running, 9);
        next.original_input = Some(perdure_core::Payload::json(&2).unwrap());
        let (stored, take) = as_stored(&base, Some(&can), &next).expect("adjusted");
        assert!(take, "the actor takes the record as written");
        assert_eq!(stored.created_at, can.created_at);
        assert_eq!(stored.original_input, can.original_input);
        assert_eq!(
            InstanceRecord {
                created_at: next.created_at,
                original_input: next.original_input.clone(),
                ..stored
            },
            next
        );
        // Prepared with the record: nothing to change.
        let warm = InstanceRecord {
            created_at: can.created_at,
            original_input: can.original_input.clone(),
            ..next.clone()
        };
        assert!(as_stored(&base, Some(&can), &warm).is_none());
        // Over its own Pending record, or none: nothing either.
        assert!(as_stored(&base, Some(&record("e2", S::Pending, 9)), &next).is_none());
        assert!(as_stored(&base, None, &next).is_none());
        // Suspended while Pending: stored suspended; the actor's copy differs, and reloads.
        let (suspended, take) =
            as_stored(&base, Some(&record("e2", S::Suspended, 9)), &next).expect("suspended");
        assert_eq!(suspended.status, S::Suspended);
        assert!(!take);
    }

    #[test]
    fn a_new_execution_commits_over_its_own_record_or_the_continue_as_new_it_continues() {
        use OrchestrationStatus as S;
        let start =
            |e: &str, at: u64| Base::Execution(ExecutionId(e.into()), Timestamp::from_millis(at));
        // No record (purged meanwhile): accepted.
        assert!(start("e1", 5).holds(None));
        // Its own record while it has not ended.
        assert!(start("e1", 5).holds(Some(&record("e1", S::Pending, 3))));
        assert!(start("e1", 5).holds(Some(&record("e1", S::Suspended, 3))));
        // Its own record, ended before it started (terminated while scheduled): not.
        assert!(!start("e1", 5).holds(Some(&record("e1", S::Terminated, 4))));
        // Another execution's live record: not (the start was replaced).
        assert!(!start("e1", 5).holds(Some(&record("e0", S::Running, 4))));
        // The continue-as-new this execution continues: written with its start's time.
        assert!(start("e2", 9).holds(Some(&record("e1", S::ContinuedAsNew, 9))));
        // Any other start over a continued-as-new record (a stale scheduled start's timer):
        // not, so it cannot replace the chain.
        assert!(!start("e0", 5).holds(Some(&record("e1", S::ContinuedAsNew, 9))));
        assert!(!start("e1", 9).holds(Some(&record("e1", S::Terminated, 9))));
    }
}
