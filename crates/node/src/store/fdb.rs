//! The FoundationDB backend (cargo feature `foundationdb`): the contract maps one to one
//! onto FoundationDB's transactions, which it was shaped after.
//!
//! Not tested on Perdure's own machines: no FoundationDB server or client library can be
//! installed there. CI compile-checks it and its tests (`cargo check -p perdure-node
//! --features foundationdb --all-targets`, with bundled headers), and the conformance suite
//! runs against it wherever `FDB_CLUSTER_FILE` points at a cluster.
//!
//! The FoundationDB client runs one network thread per process. [`boot_network`] starts it
//! (the store's `open` calls it); call [`stop_network`] before the process exits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use foundationdb::options::StreamingMode;
use foundationdb::{FdbError, RangeOption};
use futures::TryStreamExt;

use super::{
    KeyRange, KeyValue, RangeOptions, Store, StoreError, Transaction, check_prefixed_write,
};

/// FoundationDB's `not_committed` error: a read conflict.
const NOT_COMMITTED: i32 = 1020;

/// The process-wide FoundationDB network thread, started at most once.
static NETWORK: OnceLock<Result<Mutex<Option<foundationdb::api::NetworkAutoStop>>, FdbError>> =
    OnceLock::new();

/// Starts the FoundationDB client's network thread if it is not running. Idempotent.
pub fn boot_network() -> Result<(), StoreError> {
    let network = NETWORK.get_or_init(|| {
        let builder = foundationdb::api::FdbApiBuilder::default().build()?;
        // SAFETY: `boot` is unsafe because the network must be stopped before the process
        // exits; `stop_network` does that, and the guard lives in this static until then.
        #[allow(unsafe_code)]
        let guard = unsafe { builder.boot()? };
        Ok(Mutex::new(Some(guard)))
    });
    match network {
        Ok(_) => Ok(()),
        Err(e) => Err(StoreError::Fatal(Box::new(*e))),
    }
}

/// Stops the network thread started by [`boot_network`]. Call once, before exiting; no
/// FoundationDB call works afterwards, in this process.
pub fn stop_network() {
    if let Some(Ok(network)) = NETWORK.get() {
        let guard = match network.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        drop(guard);
    }
}

/// The FoundationDB store. Clones share the database handle.
#[derive(Clone)]
pub struct FdbStore {
    db: Arc<foundationdb::Database>,
    /// Prepended to every key: lets tests (and several task hubs) share one cluster. It
    /// counts towards FoundationDB's key and transaction limits, and so towards the limits
    /// every write is checked against here.
    prefix: Arc<[u8]>,
}

impl FdbStore {
    /// Opens the cluster named by `cluster_file` (`None`: FoundationDB's default lookup,
    /// `FDB_CLUSTER_FILE` then `/etc/foundationdb/fdb.cluster`), booting the network.
    pub fn open(cluster_file: Option<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with_prefix(cluster_file, Vec::new())
    }

    /// Like [`open`](Self::open), with every key stored under `prefix`.
    pub fn open_with_prefix(
        cluster_file: Option<PathBuf>,
        prefix: Vec<u8>,
    ) -> Result<Self, StoreError> {
        boot_network()?;
        let path = cluster_file.map(|p| p.to_string_lossy().into_owned());
        let db = foundationdb::Database::new(path.as_deref()).map_err(fdb_error)?;
        Ok(Self {
            db: Arc::new(db),
            prefix: prefix.into(),
        })
    }
}

fn fdb_error(e: FdbError) -> StoreError {
    if e.code() == NOT_COMMITTED {
        StoreError::Conflict
    } else if e.is_maybe_committed() {
        StoreError::MaybeCommitted(Box::new(e))
    } else if e.is_retryable() {
        // transaction_too_old, future_version, process_behind, ...: retry from the start.
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Fatal(Box::new(e))
    }
}

#[async_trait]
impl Store for FdbStore {
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError> {
        let tx = self.db.create_trx().map_err(fdb_error)?;
        Ok(Box::new(FdbTransaction {
            tx,
            prefix: self.prefix.clone(),
            tx_bytes: 0,
        }))
    }

    fn backend_name(&self) -> &'static str {
        "foundationdb"
    }

    fn key_prefix_len(&self) -> usize {
        self.prefix.len()
    }
}

struct FdbTransaction {
    tx: foundationdb::Transaction,
    prefix: Arc<[u8]>,
    tx_bytes: usize,
}

impl FdbTransaction {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }
}

#[async_trait]
impl Transaction for FdbTransaction {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self
            .tx
            .get(&self.key(key), false)
            .await
            .map_err(fdb_error)?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn get_range(
        &mut self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        if range.begin >= range.end || opts.limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut option = RangeOption::from((self.key(&range.begin), self.key(&range.end)));
        option.limit = opts.limit;
        option.reverse = opts.reverse;
        option.mode = StreamingMode::WantAll;
        let prefix_len = self.prefix.len();
        let values: Vec<_> = self
            .tx
            .get_ranges_keyvalues(option, false)
            .try_collect()
            .await
            .map_err(fdb_error)?;
        Ok(values
            .iter()
            .map(|kv| {
                let key = kv.key().get(prefix_len..).unwrap_or_default().to_vec();
                (key, kv.value().to_vec())
            })
            .collect())
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_prefixed_write(self.prefix.len(), key, value, &mut self.tx_bytes)?;
        self.tx.set(&self.key(key), value);
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) {
        self.tx.clear(&self.key(key));
    }

    fn clear_range(&mut self, range: &KeyRange) {
        if range.begin >= range.end {
            return;
        }
        self.tx
            .clear_range(&self.key(&range.begin), &self.key(&range.end));
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        match self.tx.commit().await {
            Ok(_) => Ok(()),
            Err(e) => Err(fdb_error(FdbError::from(e))),
        }
    }
}
