//! Partition leases and fencing: every transaction that changes a partition's state reads the
//! partition's lease record and fails with [`StoreError::Fenced`] if the writer's epoch is
//! no longer the current one.

use perdure_core::Timestamp;

use super::keys::Key;
use super::records::LeaseRecord;
use super::{get, put, space};
use crate::store::{StoreError, Transaction};

/// The key of a partition's lease record.
pub fn lease_key(partition: u32) -> Vec<u8> {
    Key::new()
        .str(space::LEASE)
        .uint(u64::from(partition))
        .into_bytes()
}

/// The key of the time a partition's current owner acquired it (kept beside the lease
/// record, whose encoding stays as it was).
pub fn since_key(partition: u32) -> Vec<u8> {
    Key::new()
        .str(space::LEASE)
        .uint(u64::from(partition))
        .str("since")
        .into_bytes()
}

/// Reads a partition's lease.
pub async fn read(
    tx: &mut dyn Transaction,
    partition: u32,
) -> Result<Option<LeaseRecord>, StoreError> {
    get(tx, &lease_key(partition)).await
}

/// Acquires a partition for `owner` (epoch + 1), unless another owner holds an unexpired lease.
/// Returns the new epoch, or `None` if the partition is held by someone else.
pub async fn acquire(
    tx: &mut dyn Transaction,
    partition: u32,
    owner: &str,
    now: Timestamp,
    duration: std::time::Duration,
) -> Result<Option<u64>, StoreError> {
    let current = read(tx, partition).await?;
    if let Some(l) = &current
        && l.owner != owner
        && l.expires_at > now
    {
        return Ok(None);
    }
    let epoch = current.map_or(1, |l| l.epoch + 1);
    put(
        tx,
        &lease_key(partition),
        &LeaseRecord {
            epoch,
            owner: owner.to_string(),
            expires_at: now.add(duration),
        },
    )?;
    put(tx, &since_key(partition), &now)?;
    Ok(Some(epoch))
}

/// Extends a held lease; fails with `Fenced` if the epoch changed.
pub async fn renew(
    tx: &mut dyn Transaction,
    partition: u32,
    epoch: u64,
    now: Timestamp,
    duration: std::time::Duration,
) -> Result<(), StoreError> {
    let mut l = check(tx, partition, epoch).await?;
    l.expires_at = now.add(duration);
    put(tx, &lease_key(partition), &l)
}

/// Gives up a held lease, so that another node acquires the partition at once instead of
/// waiting for the lease to expire. The record keeps its epoch (the next owner's is higher,
/// which fences anything still in flight under this one) and expires at time zero, so no
/// clock skew between nodes delays the next owner. Returns whether the lease was still held
/// at `epoch`; a deposed owner changes nothing.
pub async fn release(
    tx: &mut dyn Transaction,
    partition: u32,
    epoch: u64,
) -> Result<bool, StoreError> {
    match read(tx, partition).await? {
        Some(mut l) if l.epoch == epoch => {
            l.expires_at = Timestamp::from_millis(0);
            put(tx, &lease_key(partition), &l)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Checks that `epoch` is the partition's current epoch.
pub async fn check(
    tx: &mut dyn Transaction,
    partition: u32,
    epoch: u64,
) -> Result<LeaseRecord, StoreError> {
    match read(tx, partition).await? {
        Some(l) if l.epoch == epoch => Ok(l),
        other => Err(StoreError::Fenced {
            partition,
            held: epoch,
            current: other.map_or(0, |l| l.epoch),
        }),
    }
}

/// Every partition's lease and the time its owner acquired it, indexed by partition
/// (`None`: never acquired).
pub async fn read_all(
    tx: &mut dyn Transaction,
    partitions: u32,
) -> Result<Vec<Option<(LeaseRecord, Option<Timestamp>)>>, StoreError> {
    let prefix = Key::new().str(space::LEASE).into_bytes();
    let rows = tx
        .get_range(
            &crate::store::KeyRange::prefix(&prefix),
            crate::store::RangeOptions::limit(2 * partitions as usize + 1),
        )
        .await?;
    let mut out: Vec<Option<(LeaseRecord, Option<Timestamp>)>> = vec![None; partitions as usize];
    for (k, v) in rows {
        let Ok(elems) = Key::decode(&k) else {
            continue;
        };
        let Some(slot) = elems
            .get(1)
            .and_then(|e| e.as_uint(1).ok())
            .and_then(|p| out.get_mut(p as usize))
        else {
            continue;
        };
        if elems.len() == 2 {
            let rec: LeaseRecord = super::decode_value(tx, &k, &v).await?;
            *slot = Some((rec, None));
        } else if let Some((_, since)) = slot.as_mut() {
            // The `since` key sorts after its lease record.
            *since = Some(super::decode_value(tx, &k, &v).await?);
        }
    }
    Ok(out)
}
