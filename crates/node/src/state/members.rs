//! Cluster membership records: one heartbeat record per node name under the `n` keyspace.
//! A node is live while `last_seen + ttl` is in the future (by the reader's clock).

use perdure_core::Timestamp;

use super::keys::Key;
use super::records::NodeRecord;
use super::{decode_value, get, put, space};
use crate::store::{KeyRange, RangeOptions, StoreError, Transaction};

/// The key of a node's heartbeat record.
pub fn node_key(name: &str) -> Vec<u8> {
    Key::new().str(space::NODE).str(name).into_bytes()
}

/// Reads one node's record.
pub async fn read(tx: &mut dyn Transaction, name: &str) -> Result<Option<NodeRecord>, StoreError> {
    get(tx, &node_key(name)).await
}

/// Writes a node's record.
pub fn write(tx: &mut dyn Transaction, rec: &NodeRecord) -> Result<(), StoreError> {
    put(tx, &node_key(&rec.name), rec)
}

/// Removes a node's record if it still belongs to `incarnation` (a graceful leave).
pub async fn remove(
    tx: &mut dyn Transaction,
    name: &str,
    incarnation: u64,
) -> Result<(), StoreError> {
    if let Some(r) = read(tx, name).await?
        && r.incarnation == incarnation
    {
        super::clear(tx, &node_key(name));
    }
    Ok(())
}

/// Every node record, in name order (live or not).
pub async fn list(tx: &mut dyn Transaction) -> Result<Vec<NodeRecord>, StoreError> {
    let prefix = Key::new().str(space::NODE).into_bytes();
    let rows = tx
        .get_range(&KeyRange::prefix(&prefix), RangeOptions::limit(100_000))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        out.push(decode_value(tx, &k, &v).await?);
    }
    Ok(out)
}

/// Whether a record is fresh at `now` for a heartbeat lifetime `ttl`.
pub fn is_fresh(rec: &NodeRecord, now: Timestamp, ttl: std::time::Duration) -> bool {
    rec.last_seen.add(ttl) > now
}
