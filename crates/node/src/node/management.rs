//! `ManagementApi` for [`NodeHandle`]: every operation is a short store transaction that
//! writes a message into the target partition's inbox (or reads records), then nudges the
//! partition actor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use perdure_core::management::{
    CleanEntityStorageResult, EntityPage, EntityQuery, EntityState, FunctionKind, IdReusePolicy,
    InstancePage, InstanceQuery, InstanceState, ManagementApi, ManagementError, ManagementResult,
    PurgeFilter, PurgeResult, StartRequest,
};
use perdure_core::{
    EntityId, EventKind, HistoryEvent, InstanceId, OrchestrationStatus, Payload, Timestamp,
};

use super::NodeHandle;
use super::intake::IntakeError;
use crate::runtime::Shared;
use crate::runtime::instance::pending_record;
use crate::runtime::outbox::Outbox;
use crate::state::records::{InstanceRecord, MessageBody, Target};
use crate::state::{history, instances, purge};
use crate::store::{StoreError, transact};

fn store_err(e: StoreError) -> ManagementError {
    if e.is_retryable() {
        ManagementError::Unavailable(e.to_string())
    } else {
        ManagementError::Internal(format!("{e}: {}", source_chain(&e)))
    }
}

pub(super) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// The outcome of a management transaction: a refusal or the messages to deliver.
type TxOut<T> = Result<(T, Outbox), ManagementError>;

impl NodeHandle {
    pub(super) fn check_payload(&self, p: Option<&Payload>) -> ManagementResult<()> {
        let limit = self.shared().opts.max_payload_bytes.get();
        match p {
            Some(p) if p.len() > limit => Err(ManagementError::PayloadTooLarge {
                size: p.len(),
                limit,
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn check_name(&self, kind: FunctionKind, name: &str) -> ManagementResult<()> {
        let exec = &self.shared().exec;
        if exec.knows(kind, name) {
            Ok(())
        } else {
            Err(ManagementError::UnknownName {
                kind,
                name: name.to_string(),
                registered: exec.names(kind),
            })
        }
    }

    pub(super) fn admit(&self, partition: u32) -> ManagementResult<()> {
        let sh = self.shared();
        let depth = sh
            .depth
            .get(partition as usize)
            .map_or(0, |d| d.load(Ordering::Relaxed));
        let bound = sh.opts.partition_queue_bound.get();
        if depth >= bound {
            return Err(ManagementError::Overloaded(format!(
                "partition {partition} has {depth} messages waiting (bound {bound}); retry later"
            )));
        }
        let act = sh.metrics.activity_queue_depth.load(Ordering::Relaxed);
        let abound = sh.opts.activity_queue_bound.get();
        if act >= abound as i64 {
            return Err(ManagementError::Overloaded(format!(
                "{act} activity tasks are waiting for a worker (bound {abound}); retry later"
            )));
        }
        Ok(())
    }

    /// Runs a transaction that may refuse (inner `Err`) or write messages, then delivers them.
    pub(super) async fn run<T, F>(&self, f: F) -> ManagementResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(
                &'t mut dyn crate::store::Transaction,
                Arc<Shared>,
            ) -> BoxFuture<'t, Result<TxOut<T>, StoreError>>
            + Send
            + Sync
            + 'static,
    {
        let sh = self.shared().clone();
        let f = Arc::new(f);
        let sh2 = sh.clone();
        let r = transact(sh.store.as_ref(), &sh.retry, move |tx| {
            let (f, sh) = (f.clone(), sh2.clone());
            Box::pin(async move { f(tx, sh).await })
        })
        .await
        .map_err(store_err)?;
        let (v, out) = r?;
        sh.dispatch(out);
        Ok(v)
    }

    pub(super) async fn read<T, F>(&self, f: F) -> ManagementResult<T>
    where
        T: Send + 'static,
        F: for<'t> Fn(
                &'t mut dyn crate::store::Transaction,
            ) -> BoxFuture<'t, Result<T, StoreError>>
            + Send
            + Sync
            + 'static,
    {
        let sh = self.shared();
        let f = Arc::new(f);
        transact(sh.store.as_ref(), &sh.retry, move |tx| {
            let f = f.clone();
            Box::pin(async move { f(tx).await })
        })
        .await
        .map_err(store_err)
    }

    async fn do_start(&self, req: StartRequest) -> ManagementResult<InstanceId> {
        self.check_name(FunctionKind::Orchestration, &req.name)?;
        self.check_payload(req.input.as_ref())?;
        let sh = self.shared().clone();
        let id = match req.instance_id.clone() {
            Some(id) => id,
            None => InstanceId::new(sh.new_instance_id())
                .map_err(|e| ManagementError::Internal(e.to_string()))?,
        };
        self.admit(sh.partition_of_instance(&id))?;
        // Starts queued meanwhile are written in one transaction (see `intake`).
        match self.intake().start_orchestration(id.clone(), req).await {
            Ok(r) => r?,
            Err(IntakeError::Full) => {
                return Err(ManagementError::Overloaded(
                    "the start queue is full; retry later".into(),
                ));
            }
            Err(IntakeError::Closed) => {
                return Err(ManagementError::Unavailable("the node is stopping".into()));
            }
            Err(IntakeError::Store(e)) => return Err(store_err_ref(&e)),
        }
        // Counted once per committed batch by the intake.
        Ok(id)
    }

    pub(super) async fn load_record(
        &self,
        id: &InstanceId,
    ) -> ManagementResult<Option<InstanceRecord>> {
        self.read_record(id, false).await
    }

    /// Reads an instance record; with `cached`, allowed to take it from the store's cache of
    /// recent values (checked before it is returned; see
    /// [`Transaction::cached_reads`](crate::store::Transaction::cached_reads)): a long poll
    /// reads the record its own node just wrote, without a snapshot of its own.
    async fn read_record(
        &self,
        id: &InstanceId,
        cached: bool,
    ) -> ManagementResult<Option<InstanceRecord>> {
        let id = id.clone();
        self.read(move |tx| {
            let id = id.clone();
            Box::pin(async move {
                if cached {
                    tx.cached_reads();
                }
                instances::load(tx, &id).await
            })
        })
        .await
    }

    /// Sends a control message to an instance whose status passes `allowed`.
    async fn control(
        &self,
        id: InstanceId,
        operation: &'static str,
        allowed: fn(OrchestrationStatus) -> bool,
        body: MessageBody,
    ) -> ManagementResult<()> {
        self.control_as(id, operation, allowed, body, None).await
    }

    /// Like [`control`](Self::control), and sets the stored status at once (suspend and
    /// resume answer in order, as Durable Functions queues them).
    async fn control_as(
        &self,
        id: InstanceId,
        operation: &'static str,
        allowed: fn(OrchestrationStatus) -> bool,
        body: MessageBody,
        status_now: Option<OrchestrationStatus>,
    ) -> ManagementResult<()> {
        let body = Arc::new(body);
        self.run(move |tx, sh| {
            let (id, body) = (id.clone(), body.clone());
            Box::pin(async move {
                let Some(rec) = instances::load(tx, &id).await? else {
                    return Ok(Err(ManagementError::NotFound(id.to_string())));
                };
                if !allowed(rec.status) {
                    return Ok(Err(ManagementError::InvalidState {
                        instance_id: id.clone(),
                        status: rec.status,
                        operation: operation.to_string(),
                    }));
                }
                if let Some(st) = status_now {
                    let mut new = rec.clone();
                    new.status = st;
                    new.updated_at = sh.clock.now();
                    instances::save(tx, Some(&rec), &new)?;
                }
                let mut out = Outbox::default();
                out.send(tx, &sh, Target::Instance(id.clone()), (*body).clone())?;
                Ok(Ok(((), out)))
            })
        })
        .await
    }

    /// Purges one instance, incrementally: each transaction is one [`purge::step`] of at
    /// most [`PURGE_BATCH`] messages, history events and activity tasks; the last one
    /// removes the record. Every step re-reads the record, so a purge that stops half-way is
    /// resumed by purging again.
    async fn purge_one(&self, id: InstanceId, require_terminal: bool) -> ManagementResult<bool> {
        let mut first = true;
        loop {
            let rid = id.clone();
            let step = self
                .run(move |tx, sh| {
                    let id = rid.clone();
                    Box::pin(async move {
                        let Some(rec) = instances::load(tx, &id).await? else {
                            return Ok(Err(ManagementError::NotFound(id.to_string())));
                        };
                        if require_terminal && !rec.status.is_terminal() {
                            return Ok(Err(ManagementError::InvalidState {
                                instance_id: id.clone(),
                                status: rec.status,
                                operation: "purge".into(),
                            }));
                        }
                        let partition = sh.partition_of_instance(&id);
                        let progress = purge::step(tx, &rec, partition, PURGE_BATCH).await?;
                        Ok(Ok((progress == purge::Progress::Done, Outbox::default())))
                    })
                })
                .await;
            match step {
                Ok(true) => break,
                Ok(false) => first = false,
                // Purged concurrently by someone else after our first step.
                Err(ManagementError::NotFound(_)) if !first => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let sh = self.shared();
        sh.route(
            sh.partition_of_instance(&id),
            crate::runtime::PartitionMsg::Forget(id),
        );
        Ok(true)
    }
}

/// Most pending messages, history events and activity tasks (each) one purge transaction
/// removes.
pub(super) const PURGE_BATCH: usize = 500;

/// Applies the id-reuse policy to an existing record: the refusal, if any.
pub(super) fn refuse_existing(
    id: &InstanceId,
    policy: IdReusePolicy,
    old: Option<&InstanceRecord>,
) -> Option<ManagementError> {
    let o = old?;
    let live = !o.status.is_terminal();
    let refuse = match policy {
        IdReusePolicy::RejectExisting => true,
        IdReusePolicy::ReplaceFinished => live,
        IdReusePolicy::TerminateExisting => false,
    };
    refuse.then(|| ManagementError::AlreadyExists {
        instance_id: id.clone(),
        status: o.status,
    })
}

/// A store error as a management error.
pub(super) fn store_err_ref(e: &StoreError) -> ManagementError {
    if e.is_retryable() {
        ManagementError::Unavailable(e.to_string())
    } else {
        ManagementError::Internal(format!("{e}: {}", source_chain(e)))
    }
}

/// Writes an instance's Pending record and its start message.
pub(super) async fn start_in_tx(
    tx: &mut dyn crate::store::Transaction,
    sh: &Shared,
    out: &mut Outbox,
    old: Option<&InstanceRecord>,
    id: &InstanceId,
    req: &StartRequest,
    now: Timestamp,
) -> Result<(), StoreError> {
    let execution_id = sh.new_execution_id();
    let rec = pending_record(
        id,
        &req.name,
        req.version.clone(),
        execution_id.clone(),
        req.input.clone(),
        None,
        now,
    );
    instances::save(tx, old, &rec)?;
    // The new execution's history starts when the partition processes the start. History is
    // only ever written together with the instance record and purged with it, so an id
    // without a record has none: a fresh start skips the clear (a range scan at commit).
    if old.is_some() {
        history::cut(tx, id);
    }
    // The trace the instance's spans join (stored only when spans are exported); a replaced
    // instance's is not inherited.
    match req
        .trace_parent
        .as_deref()
        .filter(|_| sh.opts.traces)
        .and_then(crate::telemetry::TraceParent::parse)
    {
        Some(tp) => crate::state::traces::save(tx, id, &tp)?,
        None if old.is_some() => crate::state::traces::clear(tx, id),
        None => {}
    }
    let started = HistoryEvent::new(
        now,
        EventKind::ExecutionStarted {
            name: req.name.clone(),
            version: req.version.clone(),
            input: req.input.clone(),
            execution_id,
            parent: None,
            scheduled_start: req.scheduled_start,
        },
    );
    let body = MessageBody::NewExecution {
        started,
        carried: Vec::new(),
    };
    match req.scheduled_start {
        Some(t) if t > now => out.send_at(tx, sh, Target::Instance(id.clone()), t, body),
        _ => out.send(tx, sh, Target::Instance(id.clone()), body),
    }
}

/// The error for a continuation token that the query did not hand out (garbled, or from a
/// listing with other filters): answering the first page again would loop a client forever.
pub(super) fn bad_continuation(t: &str) -> ManagementError {
    ManagementError::BadRequest(format!(
        "malformed continuation token {t:?}: send back the token of the previous page unchanged, \
         with the same filters"
    ))
}

impl ManagementApi for NodeHandle {
    fn start(&self, req: StartRequest) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        Box::pin(self.do_start(req))
    }

    fn get_instance(
        &self,
        id: InstanceId,
        with_payloads: bool,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        Box::pin(async move {
            Ok(self
                .load_record(&id)
                .await?
                .map(|r| r.to_state(with_payloads)))
        })
    }

    fn get_history(
        &self,
        id: InstanceId,
    ) -> BoxFuture<'_, ManagementResult<Option<Vec<HistoryEvent>>>> {
        Box::pin(async move {
            self.read(move |tx| {
                let id = id.clone();
                Box::pin(async move {
                    let Some(rec) = instances::load(tx, &id).await? else {
                        return Ok(None);
                    };
                    Ok(Some(history::load(tx, &id, rec.history_len).await?))
                })
            })
            .await
        })
    }

    fn wait_for_completion(
        &self,
        id: InstanceId,
        timeout: Duration,
    ) -> BoxFuture<'_, ManagementResult<Option<InstanceState>>> {
        Box::pin(async move {
            let sh = self.shared().clone();
            // A caller may pass any duration (`Duration::MAX`: no limit): past what an
            // `Instant` holds, the wait has no deadline.
            let deadline = tokio::time::Instant::now().checked_add(timeout);
            // The first read takes a snapshot (the instance has just been started: a check
            // of a cached read would queue behind its first episode's commit); a read after
            // a wake usually finds the record this node just wrote in its cache.
            let mut woken = false;
            loop {
                // Register before reading, so a completion in between is not missed.
                let rx = sh.add_waiter(&id);
                let record = self.read_record(&id, woken).await?;
                let Some(r) = record else {
                    sh.prune_waiters(&id);
                    return Ok(None);
                };
                if r.status.is_terminal() {
                    return Ok(Some(r.to_state(true)));
                }
                // Only this node's own partitions notify waiters: for an instance another
                // node runs, look at the store again every heartbeat (a fallback; with the
                // cluster transport the wait runs on the owner).
                let p = sh.partition_of_instance(&id);
                let recheck = if sh.holds(p) {
                    None
                } else {
                    tokio::time::Instant::now().checked_add(sh.opts.cluster.heartbeat_interval)
                };
                let until = match (deadline, recheck) {
                    (Some(d), Some(r)) => Some(d.min(r)),
                    (d, None) => d,
                    (None, r) => r,
                };
                let timed_out = match until {
                    Some(u) => tokio::time::timeout_at(u, rx).await.is_err(),
                    None => {
                        let _ = rx.await;
                        false
                    }
                };
                // Woken by this node's own commit: the record is in its cache. (A recheck of
                // an instance another node runs would find only an old copy there.)
                woken = !timed_out && sh.holds(p);
                if timed_out {
                    if deadline.is_none_or(|d| until.is_some_and(|u| u < d)) {
                        sh.prune_waiters(&id);
                        continue;
                    }
                    sh.prune_waiters(&id);
                    return Ok(self.load_record(&id).await?.map(|r| r.to_state(true)));
                }
            }
        })
    }

    fn query_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<InstancePage>> {
        Box::pin(async move {
            if !instances::valid_continuation(&query) {
                return Err(bad_continuation(
                    query.continuation.as_deref().unwrap_or_default(),
                ));
            }
            let fetch = query.fetch_payloads;
            let (recs, continuation) = self
                .read(move |tx| {
                    let q = query.clone();
                    Box::pin(async move { instances::query(tx, &q).await })
                })
                .await?;
            Ok(InstancePage {
                instances: recs.iter().map(|r| r.to_state(fetch)).collect(),
                continuation,
            })
        })
    }

    fn count_instances(
        &self,
        query: InstanceQuery,
    ) -> BoxFuture<'_, ManagementResult<BTreeMap<OrchestrationStatus, u64>>> {
        Box::pin(async move {
            self.read(move |tx| {
                let q = query.clone();
                Box::pin(async move { instances::count(tx, &q).await })
            })
            .await
        })
    }

    fn raise_event(
        &self,
        id: InstanceId,
        name: String,
        data: Option<Payload>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(async move {
            self.check_payload(data.as_ref())?;
            self.admit(self.shared().partition_of_instance(&id))?;
            let body = MessageBody::Event {
                execution_id: None,
                event: HistoryEvent::new(
                    self.shared().clock.now(),
                    EventKind::EventRaised { name, input: data },
                ),
            };
            self.control(id, "raise an event", |s| !s.is_terminal(), body)
                .await
        })
    }

    fn terminate(
        &self,
        id: InstanceId,
        reason: Option<String>,
        recursive: bool,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(self.control(
            id,
            "terminate",
            |s| !s.is_terminal(),
            MessageBody::Terminate { reason, recursive },
        ))
    }

    fn suspend(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(self.control_as(
            id,
            "suspend",
            |s| {
                matches!(
                    s,
                    OrchestrationStatus::Running | OrchestrationStatus::Pending
                )
            },
            MessageBody::Suspend { reason },
            Some(OrchestrationStatus::Suspended),
        ))
    }

    fn resume(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(self.control_as(
            id,
            "resume",
            |s| s == OrchestrationStatus::Suspended,
            MessageBody::Resume { reason },
            Some(OrchestrationStatus::Running),
        ))
    }

    fn rewind(
        &self,
        id: InstanceId,
        reason: Option<String>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        Box::pin(async move {
            // The record turns Pending at once, so a wait that follows does not see the
            // failure being rewound.
            let body = Arc::new(MessageBody::Rewind { reason });
            self.run(move |tx, sh| {
                let (id, body) = (id.clone(), body.clone());
                Box::pin(async move {
                    let Some(rec) = instances::load(tx, &id).await? else {
                        return Ok(Err(ManagementError::NotFound(id.to_string())));
                    };
                    if rec.status != OrchestrationStatus::Failed {
                        return Ok(Err(ManagementError::InvalidState {
                            instance_id: id.clone(),
                            status: rec.status,
                            operation: "rewind".into(),
                        }));
                    }
                    let mut pending = rec.clone();
                    pending.status = OrchestrationStatus::Pending;
                    pending.updated_at = sh.clock.now();
                    instances::save(tx, Some(&rec), &pending)?;
                    let mut out = Outbox::default();
                    out.send(tx, &sh, Target::Instance(id.clone()), (*body).clone())?;
                    Ok(Ok(((), out)))
                })
            })
            .await
        })
    }

    fn restart(
        &self,
        id: InstanceId,
        new_instance_id: bool,
    ) -> BoxFuture<'_, ManagementResult<InstanceId>> {
        Box::pin(async move {
            let Some(rec) = self.load_record(&id).await? else {
                return Err(ManagementError::NotFound(id.to_string()));
            };
            let mut req = StartRequest::new(rec.name.clone());
            req.version = rec.version.clone();
            req.input = rec.original_input.clone();
            // The restarted instance's spans join the restart request's trace.
            req.trace_parent = crate::telemetry::current().map(|t| t.to_string());
            if new_instance_id {
                req.instance_id = None;
            } else {
                req.instance_id = Some(id);
                req.reuse_policy = IdReusePolicy::TerminateExisting;
            }
            self.do_start(req).await
        })
    }

    fn purge_instance(&self, id: InstanceId) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        Box::pin(async move {
            self.purge_one(id, true).await?;
            Ok(PurgeResult {
                deleted: 1,
                complete: true,
            })
        })
    }

    fn purge_instances(&self, filter: PurgeFilter) -> BoxFuture<'_, ManagementResult<PurgeResult>> {
        Box::pin(async move {
            let statuses = if filter.statuses.is_empty() {
                vec![
                    OrchestrationStatus::Completed,
                    OrchestrationStatus::Failed,
                    OrchestrationStatus::Terminated,
                ]
            } else {
                filter
                    .statuses
                    .iter()
                    .copied()
                    .filter(|s| s.is_terminal())
                    .collect()
            };
            if statuses.is_empty() {
                return Ok(PurgeResult {
                    deleted: 0,
                    complete: true,
                });
            }
            let q = InstanceQuery {
                created_from: filter.created_from,
                created_to: filter.created_to,
                statuses,
                page_size: 100,
                ..Default::default()
            };
            let page = self.query_instances(q).await?;
            let mut deleted = 0;
            for st in &page.instances {
                match self.purge_one(st.instance_id.clone(), true).await {
                    Ok(_) => deleted += 1,
                    Err(ManagementError::NotFound(_) | ManagementError::InvalidState { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(PurgeResult {
                deleted,
                complete: page.continuation.is_none(),
            })
        })
    }

    fn signal_entity(
        &self,
        entity: EntityId,
        operation: String,
        input: Option<Payload>,
        scheduled_time: Option<Timestamp>,
    ) -> BoxFuture<'_, ManagementResult<()>> {
        self.signal_entity_op(entity, operation, input, scheduled_time)
    }

    fn get_entity(&self, entity: EntityId) -> BoxFuture<'_, ManagementResult<Option<EntityState>>> {
        self.get_entity_op(entity)
    }

    fn query_entities(&self, query: EntityQuery) -> BoxFuture<'_, ManagementResult<EntityPage>> {
        self.query_entities_op(query)
    }

    fn clean_entity_storage(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
    ) -> BoxFuture<'_, ManagementResult<CleanEntityStorageResult>> {
        self.clean_entity_storage_op(remove_empty, release_orphaned_locks)
    }

    fn registered_names(&self, kind: FunctionKind) -> Vec<String> {
        self.shared().exec.names(kind)
    }
}
