//! Batched intake of client requests: entity signals and orchestration starts queue in
//! bounded channels; one collector task per kind takes everything queued as one batch and
//! hands it to a task that writes it in one transaction, commits, and answers every request
//! (a start is checked against its id-reuse policy inside the batch). Under load a commit
//! carries hundreds of requests instead of one.
//!
//! The collector does not wait for a batch's commit before taking the next batch: requests
//! that arrive while one batch is being synced are written and handed to the store at once,
//! so that they share the store's next group commit instead of waiting for a free worker
//! (with a fixed set of workers, the idle ones took the first arrivals one by one and the
//! rest waited a whole commit longer). At most [`MAX_IN_FLIGHT`] batches per kind are in
//! flight; while all are, requests queue and the next batch takes them all.
//!
//! A batch is split by bytes as well as by count: its requests are packed into transactions
//! of at most [`BATCH_BYTES`] (estimated from their payloads), written concurrently. A
//! request estimated over [`ITEM_BYTES`] alone is refused at once (`PayloadTooLarge`, HTTP
//! 413); a transaction the store still finds over its limits is split in halves and written
//! again, so only a request that is too large alone fails, and nothing else is affected.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use perdure_core::management::{ManagementError, ManagementResult, StartRequest};
use perdure_core::{InstanceId, Timestamp};
use tokio::sync::{Semaphore, mpsc, oneshot};

use std::sync::atomic::Ordering;

use super::management::{refuse_existing, start_in_tx};
use crate::runtime::Shared;
use crate::runtime::outbox::Outbox;
use crate::state::instances;
use crate::state::records::{MessageBody, Target};
use crate::store::StoreError;

/// Requests written per transaction at most.
const MAX_BATCH: usize = 2048;

/// Batches in flight (written, committing) per kind of request at most.
const MAX_IN_FLIGHT: usize = 8;

/// Estimated bytes of requests packed into one transaction at most: half the store's
/// transaction limit, headroom for keys, indexes and encoding.
pub(crate) const BATCH_BYTES: usize = crate::store::MAX_TRANSACTION_BYTES / 2;

/// Estimated bytes of one request at most (alone in its transaction).
pub(crate) const ITEM_BYTES: usize = crate::store::MAX_TRANSACTION_BYTES * 8 / 10;

/// Bytes a request is estimated to write besides its payloads (keys, ids, names, encoding).
const OVERHEAD_BYTES: usize = 1024;

/// The bytes a start writes, estimated: its input three times (the record's input and
/// original input, the ExecutionStarted message).
fn start_bytes(req: &StartRequest) -> usize {
    let input = req.input.as_ref().map_or(0, |p| p.len());
    input
        .saturating_mul(3)
        .saturating_add(req.name.len().saturating_mul(3))
        .saturating_add(OVERHEAD_BYTES)
}

/// The bytes a message writes, estimated.
fn message_bytes(body: &MessageBody) -> usize {
    let payload = match body {
        MessageBody::EntityOperation(m) => m
            .input
            .as_ref()
            .map_or(0, |p| p.len())
            .saturating_add(m.operation.len()),
        other => perdure_core::codec::encode(other).map_or(0, |b| b.len()),
    };
    payload.saturating_add(OVERHEAD_BYTES)
}

/// Packs requests into chunks of at most [`MAX_BATCH`] requests and [`BATCH_BYTES`]
/// estimated bytes, in order; returns the chunks and the requests too large alone (with
/// their size).
fn chunk_by_bytes<T>(batch: Vec<T>, bytes: impl Fn(&T) -> usize) -> (Vec<Vec<T>>, Vec<(T, usize)>) {
    let mut chunks = Vec::new();
    let mut too_large = Vec::new();
    let mut cur = Vec::new();
    let mut cur_bytes = 0usize;
    for item in batch {
        let n = bytes(&item);
        if n > ITEM_BYTES {
            too_large.push((item, n));
            continue;
        }
        if !cur.is_empty() && (cur_bytes.saturating_add(n) > BATCH_BYTES || cur.len() >= MAX_BATCH)
        {
            chunks.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
        cur_bytes = cur_bytes.saturating_add(n);
        cur.push(item);
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    (chunks, too_large)
}

/// Whether a transaction failed for being over the store's limits.
fn over_limits(e: &StoreError) -> bool {
    matches!(e, StoreError::LimitExceeded { .. })
}

/// The error for a request too large alone.
fn too_large(size: usize) -> StoreError {
    StoreError::LimitExceeded {
        kind: crate::store::LimitKind::Transaction,
        size,
        limit: ITEM_BYTES,
    }
}

struct Request {
    target: Target,
    due: Option<Timestamp>,
    body: MessageBody,
    done: oneshot::Sender<Result<(), Arc<StoreError>>>,
}

struct StartRequestMsg {
    id: InstanceId,
    req: StartRequest,
    done: oneshot::Sender<Result<ManagementResult<()>, Arc<StoreError>>>,
}

/// The sending side.
#[derive(Clone)]
pub(crate) struct Intake {
    tx: mpsc::Sender<Request>,
    starts: mpsc::Sender<StartRequestMsg>,
}

/// Why a message was not accepted.
pub(crate) enum IntakeError {
    /// The queue is full.
    Full,
    /// The node is stopping.
    Closed,
    /// The store failed.
    Store(Arc<StoreError>),
}

impl Intake {
    /// Starts the intake task.
    pub(crate) fn start(shared: Arc<Shared>, bound: usize) -> Self {
        let (tx, rx) = mpsc::channel(bound.max(1));
        let (starts, srx) = mpsc::channel(bound.max(1));
        let sh = shared.clone();
        tokio::spawn(collect(rx, move |batch| run(sh.clone(), batch)));
        tokio::spawn(collect(srx, move |batch| run_starts(shared.clone(), batch)));
        Self { tx, starts }
    }

    /// Queues a start and waits until it is durable (or refused by its reuse policy).
    pub(crate) async fn start_orchestration(
        &self,
        id: InstanceId,
        req: StartRequest,
    ) -> Result<ManagementResult<()>, IntakeError> {
        let (done, rx) = oneshot::channel();
        self.starts
            .try_send(StartRequestMsg { id, req, done })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => IntakeError::Full,
                mpsc::error::TrySendError::Closed(_) => IntakeError::Closed,
            })?;
        match rx.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(IntakeError::Store(e)),
            Err(_) => Err(IntakeError::Closed),
        }
    }

    /// Queues a message and waits until it is durable.
    pub(crate) async fn send(
        &self,
        target: Target,
        due: Option<Timestamp>,
        body: MessageBody,
    ) -> Result<(), IntakeError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .try_send(Request {
                target,
                due,
                body,
                done,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => IntakeError::Full,
                mpsc::error::TrySendError::Closed(_) => IntakeError::Closed,
            })?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(IntakeError::Store(e)),
            Err(_) => Err(IntakeError::Closed),
        }
    }
}

/// Takes everything queued as one batch and runs `write` on it in a task of its own, with at
/// most [`MAX_IN_FLIGHT`] batches in flight; ends when every sender is gone.
async fn collect<T, F, Fut>(mut rx: mpsc::Receiver<T>, write: F)
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Wait for a free slot before taking requests: while every batch is in flight,
        // requests queue and the next batch takes them all.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        // Let the tasks that are about to queue a request run first, then take what they
        // queued: fewer, larger transactions under load, no wait when idle.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let batch = write(batch);
        tokio::spawn(async move {
            batch.await;
            drop(slot);
        });
    }
}

/// Splits a batch into its requests' reply channels and their shared contents (the
/// transaction closure may run more than once, so the contents are behind an `Arc`).
fn split_batch<R, D, T>(batch: Vec<R>, split: impl Fn(R) -> (D, T)) -> (Vec<D>, Arc<Vec<T>>) {
    let (dones, reqs): (Vec<D>, Vec<T>) = batch.into_iter().map(split).unzip();
    (dones, Arc::new(reqs))
}

async fn run(shared: Arc<Shared>, batch: Vec<Request>) {
    let (chunks, refused) = chunk_by_bytes(batch, |r| message_bytes(&r.body));
    for (r, size) in refused {
        let _ = r.done.send(Err(Arc::new(too_large(size))));
    }
    futures::future::join_all(chunks.into_iter().map(|c| run_chunk(shared.clone(), c))).await;
}

/// Writes messages in one transaction; over the store's limits, in halves.
async fn run_chunk(shared: Arc<Shared>, batch: Vec<Request>) {
    let mut work = vec![batch];
    while let Some(batch) = work.pop() {
        let (dones, reqs) = split_batch(batch, |r| (r.done, (r.target, r.due, r.body)));
        let sh = shared.clone();
        let txreqs = reqs.clone();
        let r = crate::store::transact(shared.store.as_ref(), &shared.retry, move |tx| {
            let (sh, reqs) = (sh.clone(), txreqs.clone());
            Box::pin(async move {
                let mut out = Outbox::default();
                let now = sh.clock.now();
                for (target, due, body) in reqs.iter() {
                    match due {
                        Some(t) if *t > now => {
                            out.send_at(tx, &sh, target.clone(), *t, body.clone())?
                        }
                        _ => out.send(tx, &sh, target.clone(), body.clone())?,
                    }
                }
                Ok(out)
            })
        })
        .await;
        let r = match r {
            Ok(out) => {
                shared.dispatch(out);
                Ok(())
            }
            Err(e) if over_limits(&e) && dones.len() > 1 => {
                // Split and write each half again.
                let reqs = Arc::unwrap_or_clone(reqs);
                let mut all: Vec<Request> = dones
                    .into_iter()
                    .zip(reqs)
                    .map(|(done, (target, due, body))| Request {
                        target,
                        due,
                        body,
                        done,
                    })
                    .collect();
                let second = all.split_off(all.len() / 2);
                work.push(second);
                work.push(all);
                continue;
            }
            Err(e) => Err(Arc::new(e)),
        };
        for done in dones {
            let _ = done.send(r.clone());
        }
    }
}

async fn run_starts(shared: Arc<Shared>, batch: Vec<StartRequestMsg>) {
    let (chunks, refused) = chunk_by_bytes(batch, |r| start_bytes(&r.req));
    for (r, size) in refused {
        let _ = r.done.send(Ok(Err(ManagementError::PayloadTooLarge {
            size,
            limit: ITEM_BYTES,
        })));
    }
    futures::future::join_all(
        chunks
            .into_iter()
            .map(|c| run_starts_chunk(shared.clone(), c)),
    )
    .await;
}

/// Writes starts in one transaction; over the store's limits, in halves (a start alone
/// over them is refused with `PayloadTooLarge`).
async fn run_starts_chunk(shared: Arc<Shared>, batch: Vec<StartRequestMsg>) {
    let mut work = vec![batch];
    while let Some(batch) = work.pop() {
        let (dones, reqs) = split_batch(batch, |r| (r.done, (r.id, r.req)));
        let sh = shared.clone();
        let txreqs = reqs.clone();
        let r = crate::store::transact(shared.store.as_ref(), &shared.retry, move |tx| {
            let (sh, reqs) = (sh.clone(), txreqs.clone());
            Box::pin(async move {
                let mut out = Outbox::default();
                let mut results = Vec::with_capacity(reqs.len());
                let now = sh.clock.now();
                // Every record in one read (one round trip on PostgreSQL).
                let ids: Vec<&InstanceId> = reqs.iter().map(|(id, _)| id).collect();
                let olds = instances::load_many(tx, &ids).await?;
                let mut seen = BTreeSet::new();
                for ((id, req), old) in reqs.iter().zip(olds) {
                    // An id started earlier in this batch: read it again (its start is a
                    // write of this transaction, which the read sees).
                    let old = if seen.insert(id) {
                        old
                    } else {
                        instances::load(tx, id).await?
                    };
                    if let Some(refusal) = refuse_existing(id, req.reuse_policy, old.as_ref()) {
                        results.push(Err(refusal));
                        continue;
                    }
                    start_in_tx(tx, &sh, &mut out, old.as_ref(), id, req, now).await?;
                    results.push(Ok(()));
                }
                Ok((results, out))
            })
        })
        .await;
        match r {
            Ok((results, out)) => {
                let started = results.iter().filter(|r| r.is_ok()).count() as u64;
                shared.metrics.starts.fetch_add(started, Ordering::Relaxed);
                shared.dispatch(out);
                for (done, r) in dones.into_iter().zip(results) {
                    let _ = done.send(Ok(r));
                }
            }
            Err(e) if over_limits(&e) && dones.len() > 1 => {
                let reqs = Arc::unwrap_or_clone(reqs);
                let mut all: Vec<StartRequestMsg> = dones
                    .into_iter()
                    .zip(reqs)
                    .map(|(done, (id, req))| StartRequestMsg { id, req, done })
                    .collect();
                let second = all.split_off(all.len() / 2);
                work.push(second);
                work.push(all);
            }
            Err(StoreError::LimitExceeded { size, limit, .. }) => {
                for done in dones {
                    let _ = done.send(Ok(Err(ManagementError::PayloadTooLarge { size, limit })));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for done in dones {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}
