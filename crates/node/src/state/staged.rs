//! Episodes too large for one transaction (see `runtime/staged.rs` and `docs/runtime.md`,
//! "Episodes larger than one transaction").
//!
//! An episode's effects are staged in chunks, `("s", partition, 1, instance id, attempt node,
//! attempt counter, chunk)`, which nothing reads until the episode's publishing transaction
//! writes the instance's marker `("s", partition, 0, instance id)` naming the attempt. The
//! chunks are then written out one transaction each, advancing the marker; the last removes
//! it. Chunks of an attempt that was never published are removed when a later attempt of
//! the same instance publishes.

use perdure_core::InstanceId;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::{Elem, Key};
use super::records::StagedMarker;
use super::{clear, decode_value, get, put, space};
use crate::store::{KeyRange, RangeOptions, StoreError, Transaction, prefix_end};

const MARKERS: u64 = 0;
const CHUNKS: u64 = 1;

fn marker_prefix(partition: u32) -> Key {
    Key::new()
        .str(space::STAGED)
        .uint(u64::from(partition))
        .uint(MARKERS)
}

fn marker_key(partition: u32, id: &InstanceId) -> Vec<u8> {
    marker_prefix(partition).str(id.as_str()).into_bytes()
}

fn chunks_of(partition: u32, id: &InstanceId) -> Key {
    Key::new()
        .str(space::STAGED)
        .uint(u64::from(partition))
        .uint(CHUNKS)
        .str(id.as_str())
}

fn attempt_prefix(partition: u32, id: &InstanceId, attempt: (u64, u64)) -> Key {
    chunks_of(partition, id).uint(attempt.0).uint(attempt.1)
}

/// Writes chunk `i` of a staging attempt.
pub fn put_chunk<T: Serialize + ?Sized>(
    tx: &mut dyn Transaction,
    partition: u32,
    id: &InstanceId,
    attempt: (u64, u64),
    i: u64,
    chunk: &T,
) -> Result<(), StoreError> {
    put(
        tx,
        attempt_prefix(partition, id, attempt).uint(i).as_bytes(),
        chunk,
    )
}

/// Reads chunk `i` of a staging attempt.
pub async fn get_chunk<T: DeserializeOwned>(
    tx: &mut dyn Transaction,
    partition: u32,
    id: &InstanceId,
    attempt: (u64, u64),
    i: u64,
) -> Result<Option<T>, StoreError> {
    get(
        tx,
        attempt_prefix(partition, id, attempt).uint(i).as_bytes(),
    )
    .await
}

/// Removes chunk `i` of a staging attempt.
pub fn clear_chunk(
    tx: &mut dyn Transaction,
    partition: u32,
    id: &InstanceId,
    attempt: (u64, u64),
    i: u64,
) {
    clear(
        tx,
        attempt_prefix(partition, id, attempt).uint(i).as_bytes(),
    );
}

/// Removes the chunks of one attempt (blind range clears).
pub fn clear_attempt(
    tx: &mut dyn Transaction,
    partition: u32,
    id: &InstanceId,
    attempt: (u64, u64),
) {
    super::clear_prefix(tx, attempt_prefix(partition, id, attempt).as_bytes());
}

/// Removes the chunks of every attempt of the instance (blind range clears).
pub fn clear_all_attempts(tx: &mut dyn Transaction, partition: u32, id: &InstanceId) {
    super::clear_prefix(tx, chunks_of(partition, id).as_bytes());
}

/// Removes the chunks of every attempt of the instance except `keep` (blind range clears).
pub fn clear_other_attempts(
    tx: &mut dyn Transaction,
    partition: u32,
    id: &InstanceId,
    keep: (u64, u64),
) {
    let all = chunks_of(partition, id);
    let mine = attempt_prefix(partition, id, keep);
    let before = KeyRange::new(all.as_bytes().to_vec(), mine.as_bytes().to_vec());
    let after = KeyRange::new(prefix_end(mine.as_bytes()), prefix_end(all.as_bytes()));
    for r in [before, after] {
        tx.clear_range(&super::chunk_span(&r.begin, &r.end));
        tx.clear_range(&r);
    }
}

/// The instance's marker, if an episode of it is being written out.
pub async fn marker(
    tx: &mut dyn Transaction,
    partition: u32,
    id: &InstanceId,
) -> Result<Option<StagedMarker>, StoreError> {
    get(tx, &marker_key(partition, id)).await
}

/// Writes the instance's marker.
pub fn set_marker(
    tx: &mut dyn Transaction,
    partition: u32,
    id: &InstanceId,
    m: &StagedMarker,
) -> Result<(), StoreError> {
    put(tx, &marker_key(partition, id), m)
}

/// Removes the instance's marker.
pub fn clear_marker(tx: &mut dyn Transaction, partition: u32, id: &InstanceId) {
    clear(tx, &marker_key(partition, id));
}

/// One marker row: its key, and the instance with its marker (`None`: it does not decode).
pub type MarkerRow = (Vec<u8>, Option<(InstanceId, StagedMarker)>);

/// Up to `limit` marker rows of a partition, after the key `after` (exclusive).
pub async fn read_markers(
    tx: &mut dyn Transaction,
    partition: u32,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<MarkerRow>, StoreError> {
    let pre = marker_prefix(partition);
    let begin = match after {
        Some(a) => {
            let mut b = a.to_vec();
            b.push(0);
            b
        }
        None => pre.as_bytes().to_vec(),
    };
    let range = KeyRange::new(begin, prefix_end(pre.as_bytes()));
    let rows = tx.get_range(&range, RangeOptions::limit(limit)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        // One marker that does not decode costs its own instance's write-out, not the
        // partition's recovery: it is logged and passed over.
        let id = match Key::decode(&k).ok().and_then(|e| e.get(3).cloned()) {
            Some(Elem::Str(s)) => InstanceId::new(s).ok(),
            _ => None,
        };
        let m = match decode_value::<StagedMarker>(tx, &k, &v).await {
            Ok(m) => Some(m),
            Err(StoreError::Corrupt { .. }) => None,
            Err(e) => return Err(e),
        };
        match (id, m) {
            (Some(id), Some(m)) => out.push((k, Some((id, m)))),
            _ => {
                tracing::error!(key = ?k, "a staged episode's marker does not decode; passed over");
                out.push((k, None));
            }
        }
    }
    Ok(out)
}
