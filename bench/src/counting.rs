//! A store wrapper that counts what committed transactions wrote: keys set (and their bytes),
//! keys cleared, ranges cleared and commits, by keyspace (the key's first element). The
//! counts are taken at commit, for transactions that committed, so retried attempts are not
//! counted twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use perdure_node::store::{KeyRange, KeyValue, RangeOptions, Store, StoreError, Transaction};

/// What committed transactions wrote to one keyspace.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Written {
    pub(crate) sets: u64,
    pub(crate) bytes: u64,
    pub(crate) clears: u64,
    pub(crate) range_clears: u64,
}

impl Written {
    fn add(&mut self, o: &Written) {
        self.sets += o.sets;
        self.bytes += o.bytes;
        self.clears += o.clears;
        self.range_clears += o.range_clears;
    }
}

/// Totals over every committed transaction.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    /// Committed transactions that wrote something.
    pub(crate) commits: u64,
    /// Per keyspace.
    pub(crate) spaces: BTreeMap<String, Written>,
}

impl Counts {
    pub(crate) fn total(&self) -> Written {
        let mut t = Written::default();
        for w in self.spaces.values() {
            t.add(w);
        }
        t
    }
}

/// See the module documentation.
pub(crate) struct CountingStore {
    inner: Arc<dyn Store>,
    counts: Arc<Mutex<Counts>>,
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
        }
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> Counts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// The keyspace of an encoded key: its first element when that is a string.
fn space(key: &[u8]) -> String {
    match key.split_first() {
        Some((0x02, rest)) => {
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(rest.get(..end).unwrap_or_default()).into_owned()
        }
        _ => "other".into(),
    }
}

struct CountingTx {
    inner: Box<dyn Transaction>,
    counts: Arc<Mutex<Counts>>,
    mine: BTreeMap<String, Written>,
}

#[async_trait]
impl Transaction for CountingTx {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(
        &mut self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.get_range(range, opts).await
    }
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.inner.set(key, value)?;
        let w = self.mine.entry(space(key)).or_default();
        w.sets += 1;
        w.bytes += (key.len() + value.len()) as u64;
        Ok(())
    }
    fn clear(&mut self, key: &[u8]) {
        self.inner.clear(key);
        self.mine.entry(space(key)).or_default().clears += 1;
    }
    fn clear_range(&mut self, range: &KeyRange) {
        self.inner.clear_range(range);
        self.mine
            .entry(space(&range.begin))
            .or_default()
            .range_clears += 1;
    }
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let Self {
            inner,
            counts,
            mine,
        } = *self;
        inner.commit().await?;
        if !mine.is_empty()
            && let Ok(mut c) = counts.lock()
        {
            c.commits += 1;
            for (s, w) in mine {
                c.spaces.entry(s).or_default().add(&w);
            }
        }
        Ok(())
    }
    fn cached_reads(&mut self) {
        self.inner.cached_reads();
    }
    async fn validate_reads(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.validate_reads().await
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError> {
        Ok(Box::new(CountingTx {
            inner: self.inner.begin().await?,
            counts: self.counts.clone(),
            mine: BTreeMap::new(),
        }))
    }
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    fn key_prefix_len(&self) -> usize {
        self.inner.key_prefix_len()
    }
}
