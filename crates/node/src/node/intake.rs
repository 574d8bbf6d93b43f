//! Batched intake of client messages that need no read (entity signals): requests queue in a
//! bounded channel; one task writes everything queued in one transaction, commits, and
//! answers every request. Under load a commit carries hundreds of signals instead of one.

use std::sync::Arc;

use perdure_core::Timestamp;
use tokio::sync::{mpsc, oneshot};

use crate::runtime::Shared;
use crate::runtime::outbox::Outbox;
use crate::state::records::{MessageBody, Target};
use crate::store::StoreError;

/// Requests written per transaction at most.
const MAX_BATCH: usize = 2048;

struct Request {
    target: Target,
    due: Option<Timestamp>,
    body: MessageBody,
    done: oneshot::Sender<Result<(), Arc<StoreError>>>,
}

/// The sending side.
#[derive(Clone)]
pub(crate) struct Intake {
    tx: mpsc::Sender<Request>,
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
        tokio::spawn(run(shared, rx));
        Self { tx }
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

async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
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
