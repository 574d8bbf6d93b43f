//! The store contract: serializable transactions over ordered byte keys, shaped after
//! FoundationDB, and the backends that implement it.
//!
//! Everything above this contract (history, inboxes, timers, queues, entity state, leases,
//! indexes) is written once and runs on every backend. Backends: [`memory`] (tests),
//! `embedded` (fjall, the default), `postgres`, and `foundationdb` (cargo feature).

use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;

/// The store contract's conformance suite (test support: `test-support` feature).
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod embedded;
#[cfg(feature = "foundationdb")]
pub mod fdb;
pub mod memory;
mod options;
pub mod postgres;

pub use options::{BackendNotBuilt, StoreOptions, open_store};

/// FoundationDB's key size limit, enforced on every backend.
pub const MAX_KEY_BYTES: usize = 10_000;
/// FoundationDB's value size limit, enforced on every backend.
pub const MAX_VALUE_BYTES: usize = 100_000;
/// FoundationDB's transaction size limit (keys and values written), enforced everywhere.
pub const MAX_TRANSACTION_BYTES: usize = 10_000_000;

/// A key-value pair returned by a range read.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A range of keys: `begin` inclusive, `end` exclusive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// First key (inclusive).
    pub begin: Vec<u8>,
    /// End key (exclusive).
    pub end: Vec<u8>,
}

impl KeyRange {
    /// A range from `begin` (inclusive) to `end` (exclusive).
    pub fn new(begin: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self {
            begin: begin.into(),
            end: end.into(),
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        Self {
            begin: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }

    /// The range as bounds over byte slices, to look it up in ordered maps keyed by any
    /// type that borrows as `[u8]`.
    pub fn bounds(&self) -> (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>) {
        (
            std::ops::Bound::Included(self.begin.as_slice()),
            std::ops::Bound::Excluded(self.end.as_slice()),
        )
    }

    /// Whether `key` is inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.begin.as_slice() && key < self.end.as_slice()
    }
}

/// The first key after every key that starts with `prefix` (FoundationDB's `strinc`).
/// An empty or all-`0xFF` prefix gives `[0xFF; n+1]`, past every valid key.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xFF; prefix.len() + 1]
}

/// Options of a range read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many pairs (None = all).
    pub limit: Option<usize>,
    /// Read from the end of the range backwards.
    pub reverse: bool,
}

impl RangeOptions {
    /// Forward, with a limit.
    pub fn limit(n: usize) -> Self {
        Self {
            limit: Some(n),
            reverse: false,
        }
    }

    /// Backward, with a limit.
    pub fn reverse_limit(n: usize) -> Self {
        Self {
            limit: Some(n),
            reverse: true,
        }
    }
}

/// Which size limit a write broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// A key over [`MAX_KEY_BYTES`].
    Key,
    /// A value over [`MAX_VALUE_BYTES`].
    Value,
    /// A transaction over [`MAX_TRANSACTION_BYTES`].
    Transaction,
}

/// A store error, classified. Backend errors are kept as sources, never turned into strings.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another transaction changed what this one read; retry it.
    #[error("transaction conflict")]
    Conflict,
    /// The commit's outcome is unknown (the connection dropped during commit).
    #[error("commit outcome unknown")]
    MaybeCommitted(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A key, value or transaction is over FoundationDB's limits.
    #[error("{kind:?} of {size} bytes is over the limit of {limit} bytes")]
    LimitExceeded {
        /// Which limit.
        kind: LimitKind,
        /// The size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A write with an empty key (no backend keyspace in Perdure has one).
    #[error("an empty key cannot be written")]
    EmptyKey,
    /// Stored bytes could not be decoded. Stops loudly: never retried.
    #[error("corrupt record at key {key}: {source}")]
    Corrupt {
        /// The key, printed escaped.
        key: String,
        /// Why.
        #[source]
        source: perdure_core::codec::CodecError,
    },
    /// The writer no longer owns the partition: its epoch is stale.
    #[error("partition {partition} is held at epoch {current}, writer holds epoch {held}")]
    Fenced {
        /// The partition.
        partition: u32,
        /// The epoch the writer holds.
        held: u64,
        /// The epoch in the store.
        current: u64,
    },
    /// The data directory is used by another process.
    #[error("data directory {path} is in use by another process")]
    Locked {
        /// The directory.
        path: String,
    },
    /// The backend is unreachable or failed transiently; retry with backoff.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A backend failure that retrying will not fix.
    #[error("store failure")]
    Fatal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether rerunning the transaction may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict | Self::Unavailable(_))
    }

    /// Whether the transaction may have committed although an error came back.
    pub fn is_maybe_committed(&self) -> bool {
        matches!(self, Self::MaybeCommitted(_))
    }

    /// A [`StoreError::Corrupt`] for `key`.
    pub fn corrupt(key: &[u8], source: perdure_core::codec::CodecError) -> Self {
        Self::Corrupt {
            key: escape_key(key),
            source,
        }
    }
}

/// Prints a key with non-printable bytes escaped, as FoundationDB does.
pub fn escape_key(key: &[u8]) -> String {
    key.iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

/// Checks a write against the size limits; `tx_bytes` is the running total of the
/// transaction's writes and is increased.
pub fn check_write(key: &[u8], value: &[u8], tx_bytes: &mut usize) -> Result<(), StoreError> {
    check_prefixed_write(0, key, value, tx_bytes)
}

/// [`check_write`] for a backend that stores every key under a prefix of `prefix_len` bytes
/// ([`Store::key_prefix_len`]): the prefix counts towards the key and transaction limits,
/// so a write is refused here, with [`StoreError::LimitExceeded`], rather than by the
/// server. The key limit reported is the one left for the caller's key.
///
/// ```
/// use perdure_node::store::{LimitKind, MAX_KEY_BYTES, StoreError, check_prefixed_write};
/// let mut tx_bytes = 0;
/// let prefix = 30;
/// assert!(check_prefixed_write(prefix, &vec![b'k'; MAX_KEY_BYTES - prefix], b"", &mut tx_bytes).is_ok());
/// assert_eq!(tx_bytes, MAX_KEY_BYTES, "the prefix counts towards the transaction");
/// let err = check_prefixed_write(prefix, &vec![b'k'; MAX_KEY_BYTES - prefix + 1], b"", &mut tx_bytes);
/// assert!(matches!(
///     err,
///     Err(StoreError::LimitExceeded { kind: LimitKind::Key, limit, .. }) if limit == MAX_KEY_BYTES - prefix
/// ));
/// ```
pub fn check_prefixed_write(
    prefix_len: usize,
    key: &[u8],
    value: &[u8],
    tx_bytes: &mut usize,
) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::EmptyKey);
    }
    let key_limit = MAX_KEY_BYTES.saturating_sub(prefix_len);
    if key.len() > key_limit {
        return Err(StoreError::LimitExceeded {
            kind: LimitKind::Key,
            size: key.len(),
            limit: key_limit,
        });
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::LimitExceeded {
            kind: LimitKind::Value,
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    *tx_bytes += prefix_len + key.len() + value.len();
    if *tx_bytes > MAX_TRANSACTION_BYTES {
        return Err(StoreError::LimitExceeded {
            kind: LimitKind::Transaction,
            size: *tx_bytes,
            limit: MAX_TRANSACTION_BYTES,
        });
    }
    Ok(())
}

/// A serializable transaction with read-your-writes. Dropping it without [`commit`] aborts it.
///
/// [`commit`]: Transaction::commit
#[async_trait]
pub trait Transaction: Send {
    /// Reads one key.
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads several keys: their values in the order of `keys`. A backend may read them in
    /// one round trip (PostgreSQL does); the default reads them one by one.
    async fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }
    /// Reads a range of keys in key order (or reversed), up to a limit.
    async fn get_range(
        &mut self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError>;
    /// Writes one key (checked against the size limits).
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes one key.
    fn clear(&mut self, key: &[u8]);
    /// Removes every key in a range.
    fn clear_range(&mut self, range: &KeyRange);
    /// Commits; returns only once the data is durable.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// Lets the reads that follow come from the backend's cache of recent values, where it
    /// has one (PostgreSQL's group commit). Such reads are guesses checked when the
    /// transaction commits (a wrong guess is a [`StoreError::Conflict`], retried), so only a
    /// transaction that commits, or whose error goes through [`validate_reads`], may call it:
    /// [`transact`] does both. The default does nothing (the reads stay consistent).
    ///
    /// [`validate_reads`]: Transaction::validate_reads
    fn cached_reads(&mut self) {}
    /// Checks that every read so far still holds (a [`StoreError::Conflict`] if not), so that
    /// an error decided from those reads may be reported. Without [`cached_reads`] the reads
    /// came from one consistent snapshot, and the default says yes at once.
    ///
    /// [`cached_reads`]: Transaction::cached_reads
    async fn validate_reads(self: Box<Self>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A transactional, ordered key-value store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Begins a serializable transaction.
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError>;
    /// The backend's name (`"embedded"`, `"postgres"`, ...).
    fn backend_name(&self) -> &'static str;
    /// Bytes the backend stores in front of every key (a FoundationDB store's prefix). They
    /// count towards [`MAX_KEY_BYTES`]: a caller's key may be at most
    /// `MAX_KEY_BYTES - key_prefix_len()` bytes long.
    fn key_prefix_len(&self) -> usize {
        0
    }
}

/// How [`transact`] retries.
#[derive(Clone, Debug)]
pub struct RetryOptions {
    /// Attempts before giving up with the last error.
    pub max_attempts: u32,
    /// Backoff after the first failure, doubled each time.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// Runs `f` in a transaction and commits, rerunning the whole closure on a retryable error
/// (conflict, unavailable) with exponential backoff. `f` must be idempotent: it may run
/// several times, and only the last run's writes commit.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use perdure_node::store::{memory::MemoryStore, transact, RetryOptions};
/// let store = MemoryStore::new();
/// transact(&store, &RetryOptions::default(), |tx| Box::pin(async move {
///     tx.set(b"k", b"v")?;
///     Ok(())
/// })).await.unwrap();
/// let v = transact(&store, &RetryOptions::default(), |tx| Box::pin(async move { tx.get(b"k").await })).await.unwrap();
/// assert_eq!(v.as_deref(), Some(&b"v"[..]));
/// # });
/// ```
pub async fn transact<T, F>(
    store: &dyn Store,
    opts: &RetryOptions,
    mut f: F,
) -> Result<T, StoreError>
where
    T: Send,
    F: for<'t> FnMut(&'t mut dyn Transaction) -> BoxFuture<'t, Result<T, StoreError>> + Send,
{
    let mut backoff = opts.initial_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result: Result<T, StoreError> = async {
            let mut tx = store.begin().await?;
            let value = match f(tx.as_mut()).await {
                Ok(v) => v,
                // An error decided from reads that no longer hold is a conflict (retried).
                Err(e) if !e.is_retryable() => {
                    tx.validate_reads().await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            tx.commit().await?;
            Ok(value)
        }
        .await;
        match result {
            Err(e) if e.is_retryable() && attempt < opts.max_attempts => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(opts.max_backoff);
            }
            other => return other,
        }
    }
}
