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

use std::future::Future;
use std::sync::Arc;

use perdure_core::management::{ManagementResult, StartRequest};
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
    let (dones, reqs) = split_batch(batch, |r| (r.done, (r.target, r.due, r.body)));
    let sh = shared.clone();
    let r = crate::store::transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let (sh, reqs) = (sh.clone(), reqs.clone());
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
        Err(e) => Err(Arc::new(e)),
    };
    for done in dones {
        let _ = done.send(r.clone());
    }
}

async fn run_starts(shared: Arc<Shared>, batch: Vec<StartRequestMsg>) {
    let (dones, reqs) = split_batch(batch, |r| (r.done, (r.id, r.req)));
    let sh = shared.clone();
    let r = crate::store::transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let (sh, reqs) = (sh.clone(), reqs.clone());
        Box::pin(async move {
            let mut out = Outbox::default();
            let mut results = Vec::with_capacity(reqs.len());
            let now = sh.clock.now();
            for (id, req) in reqs.iter() {
                let old = instances::load(tx, id).await?;
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
        Err(e) => {
            let e = Arc::new(e);
            for done in dones {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}
