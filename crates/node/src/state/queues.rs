//! Per-partition queues: the inbox (ordered messages, consumed exactly once by deleting them
//! in the consuming transaction), timers by due time, and the activity work queue.
//!
//! Inbox and timer keys are `(time, node id, local counter)`: unique without a shared
//! counter, so concurrent senders never conflict with each other.
//!
//! A message or timer addressed to an instance also writes an empty index key
//! `("y", instance id, <message key>)` in the same transaction; consuming the message clears
//! it, and purge finds every pending message of an instance by that prefix
//! ([`purge_messages`]).

use std::sync::atomic::{AtomicU64, Ordering};

use perdure_core::{ExecutionId, InstanceId, Timestamp};

use super::keys::{Elem, Key};
use super::records::{ActivityTask, InboxMessage, Target};
use super::{clear, decode_value, put, space};
use crate::store::{KeyRange, RangeOptions, StoreError, Transaction};

/// Makes unique message keys for one node process.
#[derive(Debug)]
pub struct MessageIds {
    node: u64,
    counter: AtomicU64,
}

impl MessageIds {
    /// A generator for a node; `node` should differ between processes and restarts.
    pub fn new(node: u64) -> Self {
        Self {
            node,
            counter: AtomicU64::new(0),
        }
    }

    /// A pair unique among every pair this generator and the others make (the generator's
    /// node and its next counter value): message keys, and the attempts of staged episodes.
    pub fn unique(&self) -> (u64, u64) {
        (self.node, self.counter.fetch_add(1, Ordering::Relaxed))
    }
}

/// The inbox prefix of a partition.
pub fn inbox_prefix(partition: u32) -> Key {
    Key::new().str(space::INBOX).uint(u64::from(partition))
}

/// The timer prefix of a partition.
pub fn timer_prefix(partition: u32) -> Key {
    Key::new().str(space::TIMER).uint(u64::from(partition))
}

/// The activity queue prefix of a partition.
pub fn task_prefix(partition: u32) -> Key {
    Key::new().str(space::TASK).uint(u64::from(partition))
}

/// Writes a message into a partition's inbox; returns its key.
pub fn send(
    tx: &mut dyn Transaction,
    ids: &MessageIds,
    partition: u32,
    now: Timestamp,
    msg: &InboxMessage,
) -> Result<Vec<u8>, StoreError> {
    let (node, n) = ids.unique();
    let key = inbox_prefix(partition)
        .uint(now.as_millis())
        .uint(node)
        .uint(n)
        .into_bytes();
    put(tx, &key, msg)?;
    index(tx, &key, msg)?;
    Ok(key)
}

/// Writes a timer: `msg` is delivered at `due`. Returns its key.
pub fn add_timer(
    tx: &mut dyn Transaction,
    ids: &MessageIds,
    partition: u32,
    due: Timestamp,
    msg: &InboxMessage,
) -> Result<Vec<u8>, StoreError> {
    let (node, n) = ids.unique();
    let key = timer_prefix(partition)
        .uint(due.as_millis())
        .uint(node)
        .uint(n)
        .into_bytes();
    put(tx, &key, msg)?;
    index(tx, &key, msg)?;
    Ok(key)
}

/// The prefix of the per-instance message index of `id`: one key per pending inbox message or
/// timer addressed to the instance, `("y", id, <message key bytes>)`.
pub fn messages_of_prefix(id: &InstanceId) -> Key {
    Key::new().str(space::MESSAGES_OF).str(id.as_str())
}

/// The index key of a message, if it is an inbox message or timer addressed to an instance.
fn index_key(key: &[u8], msg: &InboxMessage) -> Option<Vec<u8>> {
    let Target::Instance(id) = &msg.target else {
        return None;
    };
    let queued = key.starts_with(Key::new().str(space::INBOX).as_bytes())
        || key.starts_with(Key::new().str(space::TIMER).as_bytes());
    queued.then(|| messages_of_prefix(id).raw(key).into_bytes())
}

fn index(tx: &mut dyn Transaction, key: &[u8], msg: &InboxMessage) -> Result<(), StoreError> {
    match index_key(key, msg) {
        Some(k) => tx.set(&k, &[]),
        None => Ok(()),
    }
}

/// Removes a consumed message (inbox message, timer or activity task key) and its index
/// entry. The caller has read `key` in the same transaction.
pub fn remove(tx: &mut dyn Transaction, key: &[u8], msg: &InboxMessage) {
    clear(tx, key);
    if let Some(k) = index_key(key, msg) {
        tx.clear(&k);
    }
}

/// [`remove`], for a caller that has the stored bytes `raw` of `key` at hand (read in this
/// transaction): a small value's chunk range is not cleared.
pub fn remove_read(tx: &mut dyn Transaction, key: &[u8], msg: &InboxMessage, raw: &[u8]) {
    super::clear_read(tx, key, raw);
    if let Some(k) = index_key(key, msg) {
        tx.clear(&k);
    }
}

/// Removes up to `limit` pending inbox messages and timers addressed to `id`, with their index
/// entries (reading only the empty index entries, not the messages); returns whether more may remain (call again in a new transaction). Reading the
/// index range makes a concurrent send to the instance conflict with this transaction.
pub async fn purge_messages(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    limit: usize,
) -> Result<bool, StoreError> {
    let limit = limit.max(1);
    let pre = messages_of_prefix(id);
    let rows = tx
        .get_range(
            &KeyRange::prefix(pre.as_bytes()),
            RangeOptions::limit(limit),
        )
        .await?;
    let more = rows.len() >= limit;
    for (k, _) in rows {
        if let Some(msg_key) = k.get(pre.as_bytes().len()..) {
            clear(tx, msg_key);
        }
        tx.clear(&k);
    }
    Ok(more)
}

/// The due time in a timer key.
pub fn timer_due(key: &[u8]) -> Option<Timestamp> {
    match Key::decode(key).ok()?.get(2) {
        Some(Elem::UInt(v)) => Some(Timestamp::from_millis(*v)),
        _ => None,
    }
}

/// Reads up to `limit` messages from a range, in key order.
async fn read(
    tx: &mut dyn Transaction,
    range: KeyRange,
    limit: usize,
) -> Result<Vec<(Vec<u8>, InboxMessage)>, StoreError> {
    let rows = tx.get_range(&range, RangeOptions::limit(limit)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let m = decode_value(tx, &k, &v).await?;
        out.push((k, m));
    }
    Ok(out)
}

/// The range of keys under `prefix` that sort after `after` (exclusive), or all of them.
fn page_range(prefix: &[u8], after: Option<&[u8]>) -> KeyRange {
    let begin = match after {
        Some(a) => {
            let mut b = a.to_vec();
            b.push(0);
            b
        }
        None => prefix.to_vec(),
    };
    KeyRange::new(begin, crate::store::prefix_end(prefix))
}

/// Up to `limit` inbox messages of a partition after `after` (exclusive; `None`: from the
/// start), oldest first.
pub async fn read_inbox(
    tx: &mut dyn Transaction,
    partition: u32,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, InboxMessage)>, StoreError> {
    read(
        tx,
        page_range(inbox_prefix(partition).as_bytes(), after),
        limit,
    )
    .await
}

/// Up to `limit` timers of a partition after `after` (exclusive; `None`: from the start),
/// earliest first.
pub async fn read_timers(
    tx: &mut dyn Transaction,
    partition: u32,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, InboxMessage)>, StoreError> {
    read(
        tx,
        page_range(timer_prefix(partition).as_bytes(), after),
        limit,
    )
    .await
}

/// Consumes a key that has no index entry (an activity task) if it is still there; returns
/// whether it was. Reading it makes two consumers conflict, so exactly one commits. Inbox
/// messages and timers are removed with [`remove`], which also clears their index entry.
pub async fn consume(tx: &mut dyn Transaction, key: &[u8]) -> Result<bool, StoreError> {
    match tx.get(key).await? {
        None => Ok(false),
        Some(raw) => {
            super::clear_read(tx, key, &raw);
            Ok(true)
        }
    }
}

/// The key of an activity task.
pub fn task_key(partition: u32, id: &InstanceId, execution: &ExecutionId, seq: i64) -> Vec<u8> {
    task_prefix(partition)
        .str(id.as_str())
        .str(&execution.0)
        .int(seq)
        .into_bytes()
}

/// Queues (or updates) an activity task.
pub fn put_task(
    tx: &mut dyn Transaction,
    partition: u32,
    task: &ActivityTask,
) -> Result<Vec<u8>, StoreError> {
    let key = task_key(partition, &task.instance_id, &task.execution_id, task.seq);
    put(tx, &key, task)?;
    Ok(key)
}

/// Reads a task.
pub async fn get_task(
    tx: &mut dyn Transaction,
    key: &[u8],
) -> Result<Option<ActivityTask>, StoreError> {
    super::get(tx, key).await
}

/// Every task of a partition (for recovery), up to `limit`, after `after` if given.
pub async fn read_tasks(
    tx: &mut dyn Transaction,
    partition: u32,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, ActivityTask)>, StoreError> {
    let range = page_range(task_prefix(partition).as_bytes(), after);
    let rows = tx.get_range(&range, RangeOptions::limit(limit)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let t = decode_value(tx, &k, &v).await?;
        out.push((k, t));
    }
    Ok(out)
}

/// Removes up to `limit` activity tasks of an instance in a partition (with their chunks);
/// returns whether more may remain (call again in a new transaction).
pub async fn purge_tasks(
    tx: &mut dyn Transaction,
    partition: u32,
    id: &InstanceId,
    limit: usize,
) -> Result<bool, StoreError> {
    let limit = limit.max(1);
    let range = KeyRange::prefix(task_prefix(partition).str(id.as_str()).as_bytes());
    let rows = tx.get_range(&range, RangeOptions::limit(limit)).await?;
    let more = rows.len() >= limit;
    for (k, _) in rows {
        clear(tx, &k);
    }
    Ok(more)
}

/// What [`redeliver`] found at a task's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redelivery {
    /// The task is gone: its result was recorded (or its instance purged).
    Gone,
    /// Its lease runs until this time: the attempt holding it may still report.
    Leased(Timestamp),
    /// The lease had expired: the task with its attempt count raised and a new lease, now
    /// written back, to run again.
    Again(ActivityTask),
}

/// Starts another attempt of a task whose lease (visibility timeout) has expired at `now`:
/// raises its attempt count and leases it until `now + lease`. Reading the task makes two
/// concurrent redeliveries conflict, so one lease expiry gives exactly one new attempt.
pub async fn redeliver(
    tx: &mut dyn Transaction,
    partition: u32,
    key: &[u8],
    now: Timestamp,
    lease: std::time::Duration,
) -> Result<Redelivery, StoreError> {
    let Some(mut task) = get_task(tx, key).await? else {
        return Ok(Redelivery::Gone);
    };
    if task.lease_until > now {
        return Ok(Redelivery::Leased(task.lease_until));
    }
    task.attempt += 1;
    task.lease_until = now.add(lease);
    put_task(tx, partition, &task)?;
    Ok(Redelivery::Again(task))
}
