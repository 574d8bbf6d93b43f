//! Batched intake of client requests: entity signals and orchestration starts queue in
//! bounded channels; one task per kind writes everything queued in one transaction, commits,
//! and answers every request (a start is checked against its id-reuse policy inside the
//! batch). Under load a commit carries hundreds of requests instead of one.

use std::sync::Arc;

use perdure_core::management::{ManagementResult, StartRequest};
use perdure_core::{InstanceId, Timestamp};
use tokio::sync::{mpsc, oneshot};

use std::sync::atomic::Ordering;

use super::management::{refuse_existing, start_in_tx};
use crate::runtime::Shared;
use crate::runtime::outbox::Outbox;
use crate::state::instances;
use crate::state::records::{MessageBody, Target};
use crate::store::StoreError;

/// Requests written per transaction at most.
const MAX_BATCH: usize = 2048;

/// Batches in flight per kind of request.
const WORKERS: usize = 4;

type SharedRx<T> = Arc<tokio::sync::Mutex<mpsc::Receiver<T>>>;

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
        // Several workers per kind, so that one batch is prepared while another commits.
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let srx = Arc::new(tokio::sync::Mutex::new(srx));
        for _ in 0..WORKERS {
            tokio::spawn(run(shared.clone(), rx.clone()));
            tokio::spawn(run_starts(shared.clone(), srx.clone()));
        }
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

/// Takes the next batch from a shared receiver (0: closed).
async fn next_batch<T>(rx: &SharedRx<T>, batch: &mut Vec<T>) -> usize {
    rx.lock().await.recv_many(batch, MAX_BATCH).await
}

async fn run(shared: Arc<Shared>, rx: SharedRx<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while next_batch(&rx, &mut batch).await > 0 {
        let reqs: Arc<Vec<(Target, Option<Timestamp>, MessageBody)>> = Arc::new(
            batch
                .iter()
                .map(|r| (r.target.clone(), r.due, r.body.clone()))
                .collect(),
        );
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
        for req in batch.drain(..) {
            let _ = req.done.send(r.clone());
        }
    }
}

async fn run_starts(shared: Arc<Shared>, rx: SharedRx<StartRequestMsg>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while next_batch(&rx, &mut batch).await > 0 {
        let reqs: Arc<Vec<(InstanceId, StartRequest)>> = Arc::new(
            batch
                .iter()
                .map(|r| (r.id.clone(), r.req.clone()))
                .collect(),
        );
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
                for (req, r) in batch.drain(..).zip(results) {
                    let _ = req.done.send(Ok(r));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for req in batch.drain(..) {
                    let _ = req.done.send(Err(e.clone()));
                }
            }
        }
    }
}
