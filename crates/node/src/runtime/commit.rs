//! The transaction of one episode (or entity batch): it checks the partition's lease, checks
//! that every consumed message is still there, removes them, and writes the plan (history,
//! record, indexes, the messages it sends) — all or nothing.

use std::sync::Arc;

use super::Shared;
use super::entity::{self, EntityPlan};
use super::instance::{self, InstancePlan, Writes};
use super::outbox::Outbox;
use super::partition::Keyed;
use super::staged;
use crate::state::{leases, queues};
use crate::store::{LimitKind, StoreError, transact};

/// One prepared transaction.
pub(crate) enum Plan {
    Instance(Box<InstancePlan>),
    Entity(EntityPlan),
}

impl Plan {
    /// The inbox messages the transaction consumes.
    pub(crate) fn consumed(&self) -> &[Keyed] {
        match self {
            Self::Instance(p) => &p.consumed,
            Self::Entity(p) => &p.consumed,
        }
    }

    /// Takes the consumed messages out of the plan.
    pub(crate) fn into_consumed(self) -> Vec<Keyed> {
        match self {
            Self::Instance(p) => p.consumed,
            Self::Entity(p) => p.consumed,
        }
    }
}

/// The outcome of a commit attempt.
pub(crate) enum Committed {
    /// Committed; deliver the outbox.
    Done(Outbox),
    /// A consumed message was already gone, or the instance record changed since the plan
    /// was prepared: nothing was written.
    Stale,
    /// The plan starts an execution that another start replaced meanwhile: its message was
    /// removed, nothing else was written.
    Superseded,
    /// A staged episode (see `staged`) was published, but writing out its effects failed
    /// with this error: the partition's recovery finishes them.
    Unfinished(StoreError),
    /// Nothing of this plan was written, but an earlier episode's write-out failed with this
    /// error (its outcome perhaps unknown): the partition restarts, and its recovery
    /// finishes that write-out.
    Restart(StoreError),
}

/// Commits a plan under the partition's lease epoch: in one transaction, or in stages when
/// the episode is large (see `staged`).
pub(crate) async fn commit(
    shared: &Arc<Shared>,
    partition: u32,
    epoch: u64,
    plan: Arc<Plan>,
) -> Result<Committed, StoreError> {
    let large = |p: &Plan| matches!(p, Plan::Instance(ip) if staged::stageable(ip));
    if matches!(plan.as_ref(), Plan::Instance(ip) if staged::wanted(shared, ip)) {
        return staged::commit(shared, partition, epoch, plan).await;
    }
    match commit_with(shared, partition, epoch, plan.clone(), Writes::Whole).await {
        Err(StoreError::LimitExceeded {
            kind: LimitKind::Transaction,
            ..
        }) if large(&plan) => staged::commit(shared, partition, epoch, plan).await,
        r => r,
    }
}

/// Commits a plan in one transaction, with its history and effects written as `writes` says.
pub(crate) async fn commit_with(
    shared: &Arc<Shared>,
    partition: u32,
    epoch: u64,
    plan: Arc<Plan>,
    writes: Writes,
) -> Result<Committed, StoreError> {
    let sh = shared.clone();
    transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let (sh, plan) = (sh.clone(), plan.clone());
        Box::pin(async move {
            // The keys read here are the owner's own (lease, consumed messages, record):
            // the node's cache usually knows them, and the commit checks them anyway.
            tx.cached_reads();
            leases::check(tx, partition, epoch).await?;
            let consumed = plan.consumed();
            let mut raws = Vec::with_capacity(consumed.len());
            for (k, _) in consumed {
                match tx.get(k).await? {
                    Some(raw) => raws.push(raw),
                    None => return Ok(Committed::Stale),
                }
            }
            // An instance record changed outside the episode (a start replacing the
            // execution, suspend, resume, rewind) makes the plan stale: nothing is written,
            // and the actor reloads the record and runs the messages again.
            let old = match plan.as_ref() {
                Plan::Instance(p) => match instance::check_base(tx, p).await? {
                    Some(old) => old,
                    // No reload can revive a replaced execution: its start is dropped.
                    None if matches!(p.base, instance::Base::Execution(..)) => {
                        for ((k, m), raw) in consumed.iter().zip(&raws) {
                            queues::remove_read(tx, k, m, raw);
                        }
                        return Ok(Committed::Superseded);
                    }
                    None => return Ok(Committed::Stale),
                },
                Plan::Entity(_) => None,
            };
            for ((k, m), raw) in consumed.iter().zip(&raws) {
                queues::remove_read(tx, k, m, raw);
            }
            let out = match plan.as_ref() {
                Plan::Instance(p) => instance::write(tx, &sh, partition, p, old, writes).await?,
                Plan::Entity(p) => entity::write(tx, &sh, p).await?,
            };
            Ok(Committed::Done(out))
        })
    })
    .await
}

/// Which of these messages are still in the store.
pub(crate) async fn still_stored(shared: &Shared, msgs: &[Keyed]) -> Result<Vec<bool>, StoreError> {
    let keys: Vec<Vec<u8>> = msgs.iter().map(|(k, _)| k.clone()).collect();
    transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let keys = keys.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for k in &keys {
                out.push(tx.get(k).await?.is_some());
            }
            Ok(out)
        })
    })
    .await
}
