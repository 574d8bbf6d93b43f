//! The layer above the store contract: instance records and their indexes, history,
//! per-partition inboxes, timers and activity queues, entity records and partition leases.
//!
//! Written once over [`Transaction`](crate::store::Transaction), so it runs on every backend.
//! Every function takes the caller's transaction: the runtime composes one episode's writes
//! into one commit. The key layout is documented in `docs/storage.md`.

use std::borrow::Cow;

use perdure_core::codec;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{KeyRange, StoreError, Transaction};

/// The state layer's conformance cases (test support: `test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod entities;
pub mod history;
pub mod instances;
pub mod keys;
pub mod leases;
pub mod members;
pub mod purge;
pub mod queues;
pub mod records;
pub mod shards;
pub mod staged;
#[cfg(test)]
mod tests;
pub mod traces;

use keys::Key;

/// Values longer than this are split into chunks (under the store's 100 kB value limit).
pub const CHUNK_BYTES: usize = 90_000;

const INLINE: u8 = 0;
const CHUNKED: u8 = 1;

/// The top-level keyspaces (first key element). See `docs/storage.md`.
pub mod space {
    /// Store metadata.
    pub const META: &str = "m";
    /// Partition leases.
    pub const LEASE: &str = "l";
    /// Instance records.
    pub const INSTANCE: &str = "i";
    /// Index by runtime status.
    pub const BY_STATUS: &str = "xs";
    /// Index by creation time.
    pub const BY_CREATED: &str = "xc";
    /// Index by orchestration name.
    pub const BY_NAME: &str = "xn";
    /// History events.
    pub const HISTORY: &str = "h";
    /// Partition inboxes.
    pub const INBOX: &str = "q";
    /// Timers.
    pub const TIMER: &str = "t";
    /// Activity tasks.
    pub const TASK: &str = "a";
    /// Per-instance index of the inbox messages and timers addressed to an instance.
    pub const MESSAGES_OF: &str = "y";
    /// Entity records.
    pub const ENTITY: &str = "e";
    /// Chunks of large values.
    pub const CHUNK: &str = "c";
    /// Cluster membership: one heartbeat record per node name.
    pub const NODE: &str = "nd";
    /// Episodes committed in stages: their markers and effect chunks, per partition.
    pub const STAGED: &str = "s";
    /// The trace context of an instance's start (`traces`).
    pub const TRACE: &str = "tr";
}

/// The stable partition of an instance id or entity id string (`@name@key`); defined in
/// `perdure-core` so that clients route requests the way nodes place instances.
pub use perdure_core::ids::partition_of;

fn chunk_key(key: &[u8], i: u64) -> Vec<u8> {
    Key::new().str(space::CHUNK).raw(key).uint(i).into_bytes()
}

/// The range holding the chunks of every value whose key starts with `key_prefix`.
pub fn chunk_range(key_prefix: &[u8]) -> KeyRange {
    KeyRange::prefix(Key::new().str(space::CHUNK).raw(key_prefix).as_bytes())
}

/// The range holding the chunks of every value whose key is in `begin..end` (when no such
/// key is a prefix of `end`): a chunk key is its value's key behind the chunk space's tag,
/// so it sorts with that key.
pub fn chunk_span(begin: &[u8], end: &[u8]) -> KeyRange {
    let at = |k: &[u8]| Key::new().str(space::CHUNK).raw(k).into_bytes();
    KeyRange::new(at(begin), at(end))
}

/// Encodes `value` and writes it at `key`, split into chunks if it is large.
pub fn put<T: Serialize + ?Sized>(
    tx: &mut dyn Transaction,
    key: &[u8],
    value: &T,
) -> Result<(), StoreError> {
    let bytes = codec::encode(value).map_err(|e| StoreError::corrupt(key, e))?;
    put_bytes(tx, key, &bytes)
}

/// Writes raw bytes at `key`, split into chunks if they are large.
pub fn put_bytes(tx: &mut dyn Transaction, key: &[u8], bytes: &[u8]) -> Result<(), StoreError> {
    if bytes.len() < CHUNK_BYTES {
        let mut v = Vec::with_capacity(bytes.len() + 1);
        v.push(INLINE);
        v.extend_from_slice(bytes);
        return tx.set(key, &v);
    }
    let mut n = 0u64;
    for (i, part) in bytes.chunks(CHUNK_BYTES).enumerate() {
        tx.set(&chunk_key(key, i as u64), part)?;
        n += 1;
    }
    let mut v = vec![CHUNKED];
    v.extend_from_slice(&n.to_be_bytes());
    tx.set(key, &v)
}

/// Reassembles a value read at `key` (its chunks are read if needed) and decodes it.
pub async fn decode_value<T: DeserializeOwned>(
    tx: &mut dyn Transaction,
    key: &[u8],
    raw: &[u8],
) -> Result<T, StoreError> {
    let bytes = value_bytes(tx, key, raw).await?;
    codec::decode(&bytes).map_err(|e| StoreError::corrupt(key, e))
}

/// Reassembles the bytes [`put_bytes`] wrote at `key`, given what was read there (its
/// chunks are read if needed).
pub async fn value_bytes<'a>(
    tx: &mut dyn Transaction,
    key: &[u8],
    raw: &'a [u8],
) -> Result<Cow<'a, [u8]>, StoreError> {
    let corrupt = |k: &[u8]| StoreError::corrupt(k, codec::CodecError::Empty);
    let (&kind, rest) = raw.split_first().ok_or_else(|| corrupt(key))?;
    match kind {
        INLINE => Ok(Cow::Borrowed(rest)),
        CHUNKED => {
            let n: [u8; 8] = rest.try_into().map_err(|_| corrupt(key))?;
            let n = u64::from_be_bytes(n);
            let mut bytes = Vec::new();
            for i in 0..n {
                let ck = chunk_key(key, i);
                let part = tx.get(&ck).await?.ok_or_else(|| corrupt(&ck))?;
                bytes.extend_from_slice(&part);
            }
            Ok(Cow::Owned(bytes))
        }
        _ => Err(corrupt(key)),
    }
}

/// Reads and decodes the value at `key`.
pub async fn get<T: DeserializeOwned>(
    tx: &mut dyn Transaction,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match tx.get(key).await? {
        None => Ok(None),
        Some(raw) => Ok(Some(decode_value(tx, key, &raw).await?)),
    }
}

/// Clears the value at `key` and its chunks.
pub fn clear(tx: &mut dyn Transaction, key: &[u8]) {
    tx.clear(key);
    tx.clear_range(&chunk_range(key));
}

/// Clears the value at `key`, whose stored bytes `raw` the caller read in this transaction:
/// its chunks only if it was stored in chunks (a range clear saved for every small value).
/// Sound for values that never shrink from chunked to inline ([`put_bytes`] leaves the old
/// chunks of such a value behind): inbox messages and timers are written once, and an
/// activity task's record only grows (its attempt count and lease).
pub fn clear_read(tx: &mut dyn Transaction, key: &[u8], raw: &[u8]) {
    if raw.first() == Some(&INLINE) {
        tx.clear(key);
    } else {
        clear(tx, key);
    }
}

/// Clears every value under `prefix` and their chunks.
pub fn clear_prefix(tx: &mut dyn Transaction, prefix: &[u8]) {
    tx.clear_range(&KeyRange::prefix(prefix));
    tx.clear_range(&chunk_range(prefix));
}

/// Reads the store's partition count, writing `default` at first use.
pub async fn init_partitions(tx: &mut dyn Transaction, default: u32) -> Result<u32, StoreError> {
    let key = Key::new().str(space::META).str("partitions").into_bytes();
    if let Some(p) = get::<u32>(tx, &key).await? {
        return Ok(p);
    }
    put(tx, &key, &default)?;
    Ok(default)
}

#[cfg(test)]
mod chunk_tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{RetryOptions, transact};

    #[test]
    fn partition_hash_is_stable() {
        assert_eq!(partition_of("hello", 64), partition_of("hello", 64));
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(partition_of("a", 1 << 16), 0xec8c);
    }

    #[tokio::test]
    async fn large_values_are_chunked_and_reassembled() {
        let store = MemoryStore::new();
        let big: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
        let b2 = big.clone();
        transact(&store, &RetryOptions::default(), move |tx| {
            let b = b2.clone();
            Box::pin(async move { put(tx, b"k1", &b) })
        })
        .await
        .unwrap();
        let back: Vec<u8> = transact(&store, &RetryOptions::default(), |tx| {
            Box::pin(async move { Ok(get::<Vec<u8>>(tx, b"k1").await?.unwrap_or_default()) })
        })
        .await
        .unwrap();
        assert_eq!(back, big);
        transact(&store, &RetryOptions::default(), |tx| {
            Box::pin(async move {
                clear(tx, b"k1");
                Ok(())
            })
        })
        .await
        .unwrap();
        let left = transact(&store, &RetryOptions::default(), |tx| {
            Box::pin(async move {
                tx.get_range(&KeyRange::new(vec![0u8], vec![0xFFu8]), Default::default())
                    .await
            })
        })
        .await
        .unwrap();
        assert!(left.is_empty());
    }
}
