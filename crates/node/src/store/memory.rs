//! An in-memory backend for tests: one transaction at a time (trivially serializable),
//! nothing durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{KeyRange, KeyValue, RangeOptions, Store, StoreError, Transaction, check_write};

/// An in-memory store. Clones share the data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

struct MemoryTransaction {
    guard: OwnedMutexGuard<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Previous values of every key this transaction changed, to roll back on drop.
    undo: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    tx_bytes: usize,
    committed: bool,
}

impl MemoryTransaction {
    fn remember(&mut self, key: &[u8]) {
        if !self.undo.contains_key(key) {
            let old = self.guard.get(key).cloned();
            self.undo.insert(key.to_vec(), old);
        }
    }
}

impl Drop for MemoryTransaction {
    fn drop(&mut self) {
        if !self.committed {
            for (k, old) in std::mem::take(&mut self.undo) {
                match old {
                    Some(v) => self.guard.insert(k, v),
                    None => self.guard.remove(&k),
                };
            }
        }
    }
}

#[async_trait]
impl Transaction for MemoryTransaction {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.guard.get(key).cloned())
    }

    async fn get_range(
        &mut self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        if range.begin >= range.end {
            return Ok(Vec::new());
        }
        let iter = self.guard.range(range.begin.clone()..range.end.clone());
        let limit = opts.limit.unwrap_or(usize::MAX);
        let out = if opts.reverse {
            iter.rev()
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            iter.take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Ok(out)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_write(key, value, &mut self.tx_bytes)?;
        self.remember(key);
        self.guard.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) {
        self.remember(key);
        self.guard.remove(key);
    }

    fn clear_range(&mut self, range: &KeyRange) {
        if range.begin >= range.end {
            return;
        }
        let keys: Vec<Vec<u8>> = self
            .guard
            .range(range.begin.clone()..range.end.clone())
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.clear(&k);
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.committed = true;
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError> {
        let guard = self.data.clone().lock_owned().await;
        Ok(Box::new(MemoryTransaction {
            guard,
            undo: BTreeMap::new(),
            tx_bytes: 0,
            committed: false,
        }))
    }

    fn backend_name(&self) -> &'static str {
        "memory"
    }
}
