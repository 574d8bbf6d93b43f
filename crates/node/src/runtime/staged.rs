//! Episodes larger than one transaction (issue 16; docs/runtime.md, "Episodes larger than
//! one transaction").
//!
//! A fan-out of 100,000 activities writes ~100,000 history events and as many tasks: far
//! over the store's 10 MB transaction limit. Such an episode commits in three steps, every
//! transaction fenced by the partition's lease and bounded in size:
//! 1. **Stage.** Its history events are written at their sequence numbers, past the stored
//!    record's `history_len`, where no reader looks (histories are read up to that length);
//!    its effects go into chunks under a fresh attempt id. Each staging transaction also
//!    checks that the instance record is still the one the episode was prepared from.
//! 2. **Publish.** One transaction, like a whole episode's without the events and effects:
//!    lease, consumed messages, record base; it removes the consumed messages, writes the new
//!    record (whose `history_len` now covers the staged events) and a marker naming the
//!    attempt and its chunk count.
//! 3. **Write out.** Each chunk's effects are written in a transaction of their own that
//!    also removes the chunk and advances (last: removes) the marker.
//!
//! A crash before the publish leaves the instance as it was before the episode (the staged
//! keys are invisible, and removed or overwritten by the next attempt); after it, the
//! partition's next owner finishes the write-out from the marker before it reads the inbox,
//! and each chunk is written out exactly once because its removal commits with its writes.

use std::ops::Range;
use std::sync::Arc;

use perdure_core::{InstanceId, codec};
use serde::Serialize;

use super::Shared;
use super::commit::{Committed, Plan, commit_with};
use super::instance::{self, Base, Effect, InstancePlan, Writes};
use super::outbox::Outbox;
use crate::state::records::StagedMarker;
use crate::state::{history, leases, queues, staged};
use crate::store::{MAX_TRANSACTION_BYTES, StoreError, transact};

/// Encoded bytes of events or effects one staging transaction holds at most (writing out a
/// chunk of effects writes them again, with their index keys).
const STAGE_BYTES: usize = MAX_TRANSACTION_BYTES / 4;

/// Whether a plan could be staged: it writes a record and has more than one item to split.
pub(crate) fn stageable(p: &InstancePlan) -> bool {
    p.record.is_some() && p.events.len() + p.effects.len() > 1
}

/// Whether a plan is staged without first trying one transaction.
pub(crate) fn wanted(shared: &Shared, p: &InstancePlan) -> bool {
    stageable(p) && p.events.len() + p.effects.len() > shared.opts.staged_commit_items.get()
}

/// Splits items into runs of at most `max` items and [`STAGE_BYTES`] encoded bytes (an item
/// over the bytes alone is a run of its own).
fn runs<T: Serialize>(items: &[T], max: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0usize, 0usize);
    for (i, it) in items.iter().enumerate() {
        let b = codec::encode(it).map_or(0, |v| v.len()).saturating_add(64);
        if i > start && (i - start >= max || bytes.saturating_add(b) > STAGE_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes = bytes.saturating_add(b);
    }
    if start < items.len() {
        out.push(start..items.len());
    }
    out
}

/// What a staging transaction found.
enum Staged {
    /// Written.
    Done,
    /// The instance record is no longer the plan's base: nothing was written.
    Stale,
    /// The plan starts an execution another start replaced: its start message was removed
    /// (as the one-transaction commit does), nothing else was written.
    Superseded,
}

/// Commits a large instance plan in stages (see the module's documentation).
pub(crate) async fn commit(
    shared: &Arc<Shared>,
    partition: u32,
    epoch: u64,
    plan: Arc<Plan>,
) -> Result<Committed, StoreError> {
    let Plan::Instance(p) = plan.as_ref() else {
        return commit_with(shared, partition, epoch, plan, Writes::Whole).await;
    };
    // An earlier episode of the instance whose write-out did not finish (its chunk did not
    // decode at recovery) goes first: its effects come before this episode's, and the
    // publish below replaces the marker. A chunk that still does not decode fails this
    // commit with `Corrupt`, which quarantines the instance (its messages are kept).
    if let Some(m) = marker(shared, partition, &p.id).await? {
        let r = write_out(
            shared,
            partition,
            epoch,
            &p.id,
            m.attempt,
            m.next..m.chunks,
            true,
        );
        match r.await {
            Ok(()) => {}
            Err(e @ StoreError::Corrupt { .. }) => return Err(e),
            // What was written may not have been delivered: the recovery delivers it.
            Err(e) => return Ok(Committed::Restart(e)),
        }
    }
    // The events of a plan that replaces the history are staged past the stored history
    // only when nothing needs that history any more: a new execution (its record is the
    // Pending one its start wrote, whose history was cut, or a ContinuedAsNew one). A
    // rewind rewrites the history it rewinds, which a rerun must still find: its events
    // go into the publishing transaction, which fails over the transaction limit.
    let events_inline = p.cut_history && !matches!(p.base, Base::Execution(..));
    let max = shared.opts.staged_commit_items.get();
    let attempt = shared.ids.unique();
    let abandon = |outcome: Committed| async move {
        discard(shared, partition, epoch, &p.id, attempt).await;
        Ok(outcome)
    };
    let event_runs = if events_inline {
        Vec::new()
    } else {
        runs(&p.events, max)
    };
    for r in event_runs {
        let staged = stage(shared, partition, epoch, &plan, move |tx, p| {
            let first = p.first_seq + r.start as u64;
            history::append(tx, &p.id, first, &p.events[r.clone()])
        })
        .await?;
        match staged {
            Staged::Done => {}
            Staged::Stale => return abandon(Committed::Stale).await,
            Staged::Superseded => return abandon(Committed::Superseded).await,
        }
    }
    let chunks = runs(&p.effects, max);
    let n = chunks.len() as u64;
    for (i, r) in chunks.into_iter().enumerate() {
        let staged = stage(shared, partition, epoch, &plan, move |tx, p| {
            staged::put_chunk(
                tx,
                partition,
                &p.id,
                attempt,
                i as u64,
                &p.effects[r.clone()],
            )
        })
        .await?;
        match staged {
            Staged::Done => {}
            Staged::Stale => return abandon(Committed::Stale).await,
            Staged::Superseded => return abandon(Committed::Superseded).await,
        }
    }
    tracing::info!(instance = %p.id, events = p.events.len(), effects = p.effects.len(), chunks = n, "episode staged");
    let writes = Writes::Publish {
        attempt,
        chunks: n,
        events: events_inline,
    };
    // The record as written, when the actor must take it (see `instance::write`).
    let record = match commit_with(shared, partition, epoch, plan.clone(), writes).await {
        Ok(Committed::Done(out)) => out.record,
        // Perhaps published: the partition restarts, and its recovery finishes the
        // write-out if it was (or reruns the episode if not).
        Err(e @ StoreError::MaybeCommitted(_)) => return Ok(Committed::Unfinished(e)),
        Ok(other) => return abandon(other).await,
        Err(e) => {
            discard(shared, partition, epoch, &p.id, attempt).await;
            return Err(e);
        }
    };
    shared
        .metrics
        .staged_episodes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match write_out(shared, partition, epoch, &p.id, attempt, 0..n, true).await {
        Ok(()) => Ok(Committed::Done(Outbox {
            record,
            ..Outbox::default()
        })),
        Err(e) => Ok(Committed::Unfinished(e)),
    }
}

/// The instance's marker, if a write-out of one of its episodes is unfinished.
async fn marker(
    shared: &Arc<Shared>,
    partition: u32,
    id: &InstanceId,
) -> Result<Option<StagedMarker>, StoreError> {
    let id = id.clone();
    transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let id = id.clone();
        Box::pin(async move { staged::marker(tx, partition, &id).await })
    })
    .await
}

/// Removes the chunks of an attempt that will not be published (best effort: a later
/// publish of the instance, or its purge, removes them otherwise).
async fn discard(
    shared: &Arc<Shared>,
    partition: u32,
    epoch: u64,
    id: &InstanceId,
    attempt: (u64, u64),
) {
    let id2 = id.clone();
    let r = transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let id = id2.clone();
        Box::pin(async move {
            leases::check(tx, partition, epoch).await?;
            staged::clear_attempt(tx, partition, &id, attempt);
            Ok(())
        })
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(instance = %id, error = %e, "the chunks of an abandoned staging attempt stay until the instance's next publish or purge");
    }
}

/// One staging transaction: checks the lease and the instance record, then writes.
async fn stage<F>(
    shared: &Arc<Shared>,
    partition: u32,
    epoch: u64,
    plan: &Arc<Plan>,
    write: F,
) -> Result<Staged, StoreError>
where
    F: Fn(&mut dyn crate::store::Transaction, &InstancePlan) -> Result<(), StoreError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let plan = plan.clone();
    transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let (plan, write) = (plan.clone(), write.clone());
        Box::pin(async move {
            let Plan::Instance(p) = plan.as_ref() else {
                return Ok(Staged::Stale);
            };
            tx.cached_reads();
            leases::check(tx, partition, epoch).await?;
            if instance::check_base(tx, p).await?.is_some() {
                write(tx, p)?;
                return Ok(Staged::Done);
            }
            // As the one-transaction commit: no reload revives a replaced execution, so its
            // start is dropped (if it is still there).
            if !matches!(p.base, Base::Execution(..)) {
                return Ok(Staged::Stale);
            }
            for (k, _) in &p.consumed {
                if tx.get(k).await?.is_none() {
                    return Ok(Staged::Stale);
                }
            }
            for (k, m) in &p.consumed {
                queues::remove(tx, k, m);
            }
            Ok(Staged::Superseded)
        })
    })
    .await
}

/// Writes out chunks `range` of a published attempt, one transaction each, delivering what
/// each wrote once it committed. `live`: the partition is running (its tasks go to the
/// activity pool and its own messages to its actor); otherwise it is recovering, and its
/// scans that follow find them.
async fn write_out(
    shared: &Arc<Shared>,
    partition: u32,
    epoch: u64,
    id: &InstanceId,
    attempt: (u64, u64),
    range: Range<u64>,
    live: bool,
) -> Result<(), StoreError> {
    for i in range {
        let (sh, id2) = (shared.clone(), id.clone());
        let out = transact(shared.store.as_ref(), &shared.retry, move |tx| {
            let (sh, id) = (sh.clone(), id2.clone());
            Box::pin(async move {
                leases::check(tx, partition, epoch).await?;
                // Another run of the write-out (a recovery) may have done this chunk.
                let Some(m) = staged::marker(tx, partition, &id).await? else {
                    return Ok(None);
                };
                if m.attempt != attempt || m.next != i {
                    return Ok(None);
                }
                let chunk: Vec<Effect> = staged::get_chunk(tx, partition, &id, attempt, i)
                    .await?
                    .ok_or_else(|| {
                    StoreError::corrupt(id.as_str().as_bytes(), codec::CodecError::Empty)
                })?;
                let mut out = Outbox::default();
                instance::write_effects(tx, &sh, partition, &chunk, &mut out).await?;
                staged::clear_chunk(tx, partition, &id, attempt, i);
                if i + 1 >= m.chunks {
                    staged::clear_marker(tx, partition, &id);
                } else {
                    let next = StagedMarker { next: i + 1, ..m };
                    staged::set_marker(tx, partition, &id, &next)?;
                }
                Ok(Some(out))
            })
        })
        .await?;
        let Some(mut out) = out else {
            return Ok(());
        };
        if !live {
            out.tasks.clear();
            out.messages.retain(|(p, _, _)| *p != partition);
            out.timers.retain(|(p, _, _, _)| *p != partition);
        }
        shared.dispatch(out);
    }
    Ok(())
}

/// Up to `batch` episodes of the partition that were published and not written out (a
/// previous owner stopped half way), after the instance `after`.
pub(crate) async fn unfinished(
    shared: &Arc<Shared>,
    partition: u32,
    after: Option<Vec<u8>>,
    batch: usize,
) -> Result<Vec<staged::MarkerRow>, StoreError> {
    transact(shared.store.as_ref(), &shared.retry, move |tx| {
        let a = after.clone();
        Box::pin(async move { staged::read_markers(tx, partition, a.as_deref(), batch).await })
    })
    .await
}

/// Finishes the write-out of an episode found by [`unfinished`], while the partition
/// recovers (before its inbox, timers and tasks are read).
pub(crate) async fn finish(
    shared: &Arc<Shared>,
    partition: u32,
    epoch: u64,
    id: &InstanceId,
    m: &StagedMarker,
) -> Result<(), StoreError> {
    tracing::info!(instance = %id, chunks = m.chunks.saturating_sub(m.next), "finishing a staged episode's write-out");
    let r = write_out(
        shared,
        partition,
        epoch,
        id,
        m.attempt,
        m.next..m.chunks,
        false,
    );
    match r.await {
        // One rotten chunk costs its own instance's effects, not the partition.
        Err(e @ StoreError::Corrupt { .. }) => {
            tracing::error!(instance = %id, error = %e, "a staged episode's chunk does not decode; its write-out is skipped until the partition is acquired again");
            Ok(())
        }
        r => r,
    }
}
