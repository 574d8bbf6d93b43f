//! Incremental purge of an instance: bounded work per transaction, resumable, and touching
//! only keys under the instance's own id (see `docs/storage.md`, "Purge").
//!
//! Each [`step`] runs in its own transaction, which has read the instance record (so a
//! concurrent writer of the record conflicts with it). It removes, in order, up to `limit`
//! pending messages and timers, then up to `limit` history events, then up to `limit`
//! activity tasks, stopping at the first kind that may have more; the step that finds none
//! left of any kind removes the record and its index entries. The record goes last, so a
//! purge that stops between steps is resumed by purging again.

use super::records::InstanceRecord;
use super::{history, instances, queues, staged};
use crate::store::{StoreError, Transaction};

/// What a purge [`step`] left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More remains: commit and run another step in a new transaction.
    More,
    /// The instance is gone (this step removed its record).
    Done,
}

/// Runs one purge step for the instance of `record` (read in this transaction), whose
/// activity tasks live in `partition`. Writes at most `limit` messages (with their index
/// entries), `limit` history events and `limit` tasks, each with its chunks, plus the record
/// and its three index entries.
pub async fn step(
    tx: &mut dyn Transaction,
    record: &InstanceRecord,
    partition: u32,
    limit: usize,
) -> Result<Progress, StoreError> {
    let id = &record.instance_id;
    if queues::purge_messages(tx, id, limit).await?
        || history::purge_batch(tx, id, limit).await?
        || queues::purge_tasks(tx, partition, id, limit).await?
    {
        return Ok(Progress::More);
    }
    // The chunks of staging attempts that never published; an unfinished write-out (its
    // marker) is left to finish, with its chunks.
    match staged::marker(tx, partition, id).await? {
        Some(m) => staged::clear_other_attempts(tx, partition, id, m.attempt),
        None => staged::clear_all_attempts(tx, partition, id),
    }
    instances::remove(tx, record);
    Ok(Progress::Done)
}
