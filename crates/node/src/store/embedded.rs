//! The embedded backend, Perdure's default: fjall 3's optimistic transactions on local disk.
//!
//! - Serializable: fjall records every key and range a transaction reads and aborts its
//!   commit if a transaction that committed after its snapshot wrote any of them
//!   ([`StoreError::Conflict`]). Reads see the transaction's own uncommitted writes.
//! - Durable: fjall does not sync on commit. A commit is acknowledged only after the
//!   journal has been synced with `fdatasync`, and concurrent commits share one sync
//!   (group commit, see `committer`).
//! - Exclusive: one process owns a data directory; a second opener gets
//!   [`StoreError::Locked`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use perdure_node::store::{Store, embedded::EmbeddedStore};
//! let dir = tempfile::tempdir().unwrap();
//! let store = EmbeddedStore::open(dir.path()).unwrap();
//! let mut tx = store.begin().await.unwrap();
//! tx.set(b"greeting", b"hello").unwrap();
//! tx.commit().await.unwrap(); // returns once synced to disk
//! # });
//! ```

mod committer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use fjall::{
    KeyspaceCreateOptions, OptimisticTxDatabase, OptimisticTxKeyspace, OptimisticWriteTx,
    Readable,
};

use self::committer::Committer;
use super::{KeyRange, KeyValue, RangeOptions, Store, StoreError, Transaction, check_write};

/// The one keyspace (fjall's column family) that holds every Perdure key.
const KEYSPACE: &str = "perdure";
/// Block cache size.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The data directory cannot be used: it cannot be created, written, or opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot use data directory {path}: {source}")]
pub struct DataDirError {
    /// The directory.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// The embedded store. Clones share one database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    // Field order is drop order: the committer thread stops before the database closes.
    committer: Committer,
    keyspace: OptimisticTxKeyspace,
    db: OptimisticTxDatabase,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in the directory `path`.
    ///
    /// Errors: [`StoreError::Locked`] if another process (or another open store in this
    /// process) owns the directory; [`StoreError::Fatal`] with a [`DataDirError`] source if
    /// the directory cannot be created or written; [`StoreError::Fatal`] if the stored data
    /// cannot be recovered.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let dir_error = |source| {
            StoreError::Fatal(Box::new(DataDirError {
                path: path.to_path_buf(),
                source,
            }))
        };
        std::fs::create_dir_all(path).map_err(dir_error)?;
        // Fail early and clearly on a read-only or foreign-owned directory.
        let probe = path.join(".perdure-write-probe");
        std::fs::write(&probe, b"").map_err(dir_error)?;
        std::fs::remove_file(&probe).map_err(dir_error)?;

        let db = OptimisticTxDatabase::builder(path)
            .cache_size(CACHE_BYTES)
            // We sync the journal ourselves, once per batch of commits.
            .manual_journal_persist(true)
            .open()
            .map_err(|e| open_error(path, e))?;
        let keyspace = db
            .keyspace(KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(|e| open_error(path, e))?;
        let committer = Committer::start(db.clone()).map_err(|e| StoreError::Fatal(Box::new(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                committer,
                keyspace,
                db,
            }),
        })
    }
}

fn open_error(path: &Path, e: fjall::Error) -> StoreError {
    match e {
        fjall::Error::Locked => StoreError::Locked {
            path: path.display().to_string(),
        },
        fjall::Error::Io(source) => StoreError::Fatal(Box::new(DataDirError {
            path: path.to_path_buf(),
            source,
        })),
        other => fjall_error(other),
    }
}

/// Classifies a fjall error met while running or committing a transaction.
/// An I/O failure, a poisoned database (after a failed sync) or corrupt blocks on disk:
/// retrying does not help, and the process should stop and recover.
fn fjall_error(e: fjall::Error) -> StoreError {
    StoreError::Fatal(Box::new(e))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError> {
        let tx = self.inner.db.write_tx().map_err(fjall_error)?;
        Ok(Box::new(EmbeddedTransaction {
            tx,
            inner: self.inner.clone(),
            tx_bytes: 0,
            wrote: false,
            deferred: None,
        }))
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }
}

struct EmbeddedTransaction {
    tx: OptimisticWriteTx,
    inner: Arc<Inner>,
    tx_bytes: usize,
    wrote: bool,
    /// An error met in an infallible method (`clear_range`), reported by the next read or
    /// by `commit`, so the transaction can never commit without it.
    deferred: Option<StoreError>,
}

impl EmbeddedTransaction {
    fn check_deferred(&mut self) -> Result<(), StoreError> {
        match self.deferred.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Keys of `range` as this transaction sees them. Reading them also registers the
    /// range as read, so a concurrent insert into the range makes this transaction conflict.
    fn keys_in(&self, range: &KeyRange) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = Vec::new();
        for guard in self
            .tx
            .range(&self.inner.keyspace, range.begin.as_slice()..range.end.as_slice())
        {
            keys.push(guard.key().map_err(fjall_error)?.to_vec());
        }
        Ok(keys)
    }
}

#[async_trait]
impl Transaction for EmbeddedTransaction {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_deferred()?;
        let value = self
            .tx
            .get(&self.inner.keyspace, key)
            .map_err(fjall_error)?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn get_range(
        &mut self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.check_deferred()?;
        if range.begin >= range.end {
            return Ok(Vec::new());
        }
        let limit = opts.limit.unwrap_or(usize::MAX);
        let iter = self
            .tx
            .range(&self.inner.keyspace, range.begin.as_slice()..range.end.as_slice());
        let mut out = Vec::new();
        let mut push = |guard: fjall::Guard| -> Result<(), StoreError> {
            let (k, v) = guard.into_inner().map_err(fjall_error)?;
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        };
        if opts.reverse {
            for guard in iter.rev().take(limit) {
                push(guard)?;
            }
        } else {
            for guard in iter.take(limit) {
                push(guard)?;
            }
        }
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_write(key, value, &mut self.tx_bytes)?;
        self.tx.insert(&self.inner.keyspace, key, value);
        self.wrote = true;
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) {
        self.tx.remove(&self.inner.keyspace, key);
        self.wrote = true;
    }

    fn clear_range(&mut self, range: &KeyRange) {
        if range.begin >= range.end {
            return;
        }
        // fjall has no range tombstones in transactions: clear each key the transaction
        // sees in the range.
        match self.keys_in(range) {
            Ok(keys) => {
                for key in keys {
                    self.tx.remove(&self.inner.keyspace, key);
                    self.wrote = true;
                }
            }
            Err(e) => {
                self.deferred.get_or_insert(e);
            }
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.check_deferred()?;
        let EmbeddedTransaction {
            tx, inner, wrote, ..
        } = *self;
        if wrote {
            inner.committer.commit(tx).await
        } else {
            drop(tx);
            inner.committer.wait_visible_durable().await
        }
    }
}
