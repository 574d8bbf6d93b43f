//! Group commit for the embedded store: one thread commits queued transactions and then
//! syncs the journal once for the whole batch.
//!
//! fjall serializes commits under one lock anyway (its conflict check and journal append
//! happen while holding it), so one committer thread loses no parallelism; it saves the
//! async executor from blocking on that lock and on `fdatasync`, and it makes the batch
//! explicit: every transaction that arrived while the previous sync ran shares the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use fjall::{OptimisticTxDatabase, OptimisticWriteTx, PersistMode};
use tokio::sync::{oneshot, watch};

use super::fjall_error;
use crate::store::StoreError;

/// Most transactions committed before one sync; bounds the latency of the first in a batch.
const MAX_BATCH: usize = 4096;

/// A transaction handed to the committer, and where to send its outcome.
pub(super) struct CommitRequest {
    pub(super) tx: OptimisticWriteTx,
    pub(super) reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The journal sync failed: the outcome of the transactions in that batch is unknown.
#[derive(Debug, thiserror::Error)]
#[error("journal sync failed")]
pub(super) struct SyncFailed(#[source] Arc<fjall::Error>);

/// The committer thread is gone (it stopped after a fatal error, or the store is closing).
#[derive(Debug, thiserror::Error)]
#[error("the embedded store's committer has stopped")]
pub(super) struct CommitterStopped;

/// Handle to the committer thread. Dropping it stops the thread and waits for it.
pub(super) struct Committer {
    sender: Option<mpsc::Sender<CommitRequest>>,
    thread: Option<JoinHandle<()>>,
    /// Number of transactions applied (visible to readers), not necessarily synced.
    visible: Arc<AtomicU64>,
    /// Value of `visible` covered by the last successful sync.
    durable: watch::Receiver<u64>,
}

impl Committer {
    /// Starts the committer thread for `db`.
    pub(super) fn start(db: OptimisticTxDatabase) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let visible = Arc::new(AtomicU64::new(0));
        let (durable_tx, durable) = watch::channel(0);
        let thread_visible = visible.clone();
        let thread = std::thread::Builder::new()
            .name("perdure-store-commit".into())
            .spawn(move || run(&db, &receiver, &thread_visible, &durable_tx))?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            visible,
            durable,
        })
    }

    /// Commits `tx` and waits until it is synced to disk.
    pub(super) async fn commit(&self, tx: OptimisticWriteTx) -> Result<(), StoreError> {
        let (reply, outcome) = oneshot::channel();
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| StoreError::Fatal(Box::new(CommitterStopped)))?;
        sender
            .send(CommitRequest { tx, reply })
            .map_err(|_| StoreError::Fatal(Box::new(CommitterStopped)))?;
        match outcome.await {
            Ok(result) => result,
            // The thread died with our transaction in hand: we cannot know if it was applied.
            Err(_) => Err(StoreError::MaybeCommitted(Box::new(CommitterStopped))),
        }
    }

    /// Waits until everything visible now is synced. A read-only transaction calls this
    /// before it reports success, so it never acts on data a crash could still take back.
    pub(super) async fn wait_visible_durable(&self) -> Result<(), StoreError> {
        let target = self.visible.load(Ordering::Acquire);
        let mut durable = self.durable.clone();
        if *durable.borrow() >= target {
            return Ok(());
        }
        durable
            .wait_for(|synced| *synced >= target)
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Fatal(Box::new(CommitterStopped)))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has answered every request.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            // A panicked committer already answered nothing more; nothing to report here.
            let _ = thread.join();
        }
    }
}

fn run(
    db: &OptimisticTxDatabase,
    receiver: &mpsc::Receiver<CommitRequest>,
    visible: &AtomicU64,
    durable: &watch::Sender<u64>,
) {
    let mut batch = Vec::new();
    let mut outcomes = Vec::new();
    while let Ok(first) = receiver.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let mut applied = false;
        for CommitRequest { tx, reply } in batch.drain(..) {
            let outcome = match tx.commit() {
                Ok(Ok(())) => {
                    applied = true;
                    visible.fetch_add(1, Ordering::AcqRel);
                    Ok(())
                }
                Ok(Err(fjall::Conflict)) => Err(StoreError::Conflict),
                Err(e) => Err(fjall_error(e)),
            };
            outcomes.push((reply, outcome));
        }
        if applied {
            let target = visible.load(Ordering::Acquire);
            match db.persist(PersistMode::SyncData) {
                Ok(()) => {
                    durable.send_replace(target);
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for (_, outcome) in &mut outcomes {
                        if outcome.is_ok() {
                            *outcome =
                                Err(StoreError::MaybeCommitted(Box::new(SyncFailed(e.clone()))));
                        }
                    }
                }
            }
        }
        for (reply, outcome) in outcomes.drain(..) {
            // The committer may have given up waiting (its task was cancelled): that is fine.
            let _ = reply.send(outcome);
        }
    }
}
