//! The node's cache of recent values, for the group-commit transactions that opt in with
//! [`Transaction::cached_reads`](crate::store::Transaction::cached_reads).
//!
//! A cached value is only a guess of what a read would return: a transaction that read from
//! the cache joins a group even if it wrote nothing, and the group re-reads every key it read
//! inside the group's SERIALIZABLE transaction (see [`group`](super::group)). A guess that was
//! wrong (another node changed the key) makes the transaction conflict, and its retry reads
//! the value the group saw. So the cache never decides an outcome; it saves the round trips
//! of a snapshot when the guess is right, which it is for the keys a partition's owner alone
//! writes (instance records, the messages it sends itself, its lease row).
//!
//! What goes in, and why it is never older than what this node has acknowledged:
//! - After every group that committed: each key the group re-read, with the value it saw, then
//!   the group's writes over them (a cleared range is forgotten). This happens before any
//!   member of the group is answered.
//! - A value read from a snapshot, only if no group committed since the snapshot began
//!   (the generation, bumped by every commit, is unchanged): the snapshot saw every commit
//!   this node acknowledged before it.
//! - A group whose outcome is unknown (connection lost during `COMMIT`) empties the cache.
//!
//! Memory is bounded: values live in a young and an old map; when the young one holds more
//! than half the budget it becomes the old one (the previous old one is dropped, outside the
//! lock), and a value read from the old map moves back to the young one. Entries are counted
//! with an estimate of 96 bytes of overhead each.
//!
//! "Never older than what this node acknowledged" relies on the committer filling the cache
//! in the order PostgreSQL committed its groups: groups are sent one after another on one
//! connection and filled in the order they formed (`group::DEPTH`). A group that is re-run
//! (its check failed, or PostgreSQL aborted it) can commit after a group formed later: each
//! `COMMIT` is numbered as it goes out, and the later-formed group's fill then only forgets
//! the keys it saw and wrote (`forget_all`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Pending;
use crate::store::KeyRange;

/// The default budget of the cache, in bytes of keys and values.
pub(super) const DEFAULT_BUDGET: usize = 64 << 20;

/// A cached value: `None` when the key was absent.
type Value = Option<Vec<u8>>;

/// See the module documentation.
pub(super) struct ReadCache {
    inner: Mutex<Inner>,
    budget: usize,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    young: BTreeMap<Vec<u8>, Value>,
    young_bytes: usize,
    old: BTreeMap<Vec<u8>, Value>,
}

/// Bytes an entry is counted for: its key and value, plus an estimate of the map's and the
/// allocator's overhead per entry.
fn size(key: &[u8], value: &Value) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + 96
}

/// A retired map, dropped after the lock is released (freeing it takes a while).
type Retired = Option<BTreeMap<Vec<u8>, Value>>;

impl Inner {
    #[must_use]
    fn insert(&mut self, key: Vec<u8>, value: Value, budget: usize) -> Retired {
        self.old.remove(&key);
        let added = size(&key, &value);
        if let Some(prev) = self.young.insert(key.clone(), value) {
            self.young_bytes = self.young_bytes.saturating_sub(size(&key, &prev));
        }
        self.young_bytes += added;
        if self.young_bytes > budget / 2 {
            self.young_bytes = 0;
            let young = std::mem::take(&mut self.young);
            return Some(std::mem::replace(&mut self.old, young));
        }
        None
    }

    fn forget_range(&mut self, range: &KeyRange) {
        for map in [&mut self.young, &mut self.old] {
            let keys: Vec<Vec<u8>> = map
                .range::<[u8], _>(range.bounds())
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                map.remove(&k);
            }
        }
    }
}

impl ReadCache {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value of `key`: `None` if unknown, `Some(None)` if known absent.
    pub(super) fn get(&self, key: &[u8]) -> Option<Value> {
        let mut inner = self.lock();
        if let Some(v) = inner.young.get(key) {
            return Some(v.clone());
        }
        let v = inner.old.remove(key)?;
        let retired = inner.insert(key.to_vec(), v.clone(), self.budget);
        drop(inner);
        drop(retired);
        Some(v)
    }

    /// The current generation; read it before a snapshot begins.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Records a value read from a snapshot that began at `generation`, unless a group has
    /// committed since.
    pub(super) fn fill(&self, generation: u64, key: &[u8], value: &Value) {
        let mut inner = self.lock();
        if inner.generation == generation {
            let retired = inner.insert(key.to_vec(), value.clone(), self.budget);
            drop(inner);
            drop(retired);
        }
    }

    /// Records what a committed group saw (`validated`: every key it re-read, with its value
    /// then) and wrote.
    pub(super) fn committed<'a>(
        &self,
        validated: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        writes: &Pending,
    ) {
        let mut retired = Vec::new();
        let mut inner = self.lock();
        inner.generation += 1;
        for (k, v) in validated {
            retired.extend(inner.insert(k.to_vec(), v.map(<[u8]>::to_vec), self.budget));
        }
        for range in &writes.cleared {
            inner.forget_range(range);
        }
        for (k, v) in &writes.writes {
            retired.extend(inner.insert(k.clone(), v.clone(), self.budget));
        }
        drop(inner);
        drop(retired);
    }

    /// Forgets `key` (a read found that its cached value was wrong).
    pub(super) fn forget(&self, key: &[u8]) {
        let mut inner = self.lock();
        if let Some(prev) = inner.young.remove(key) {
            inner.young_bytes = inner.young_bytes.saturating_sub(size(key, &prev));
        }
        inner.old.remove(key);
    }

    /// Forgets `keys` and what `writes` wrote or cleared.
    pub(super) fn forget_all<'a>(&self, keys: impl Iterator<Item = &'a [u8]>, writes: &'a Pending) {
        let mut inner = self.lock();
        inner.generation += 1;
        let written = writes.writes.keys().map(Vec::as_slice);
        for key in keys.chain(written) {
            if let Some(prev) = inner.young.remove(key) {
                inner.young_bytes = inner.young_bytes.saturating_sub(size(key, &prev));
            }
            inner.old.remove(key);
        }
        for range in &writes.cleared {
            inner.forget_range(range);
        }
    }

    /// Forgets everything (a group's outcome is unknown).
    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        let young = std::mem::take(&mut inner.young);
        let old = std::mem::take(&mut inner.old);
        inner.young_bytes = 0;
        drop(inner);
        drop((young, old));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_value_older_than_a_commit_is_not_cached() {
        let cache = ReadCache::new(DEFAULT_BUDGET);
        let g = cache.generation();
        let mut writes = Pending::default();
        writes.writes.insert(b"k".to_vec(), Some(b"new".to_vec()));
        cache.committed(std::iter::empty(), &writes);
        cache.fill(g, b"k", &Some(b"old".to_vec()));
        assert_eq!(cache.get(b"k"), Some(Some(b"new".to_vec())));
        let g = cache.generation();
        cache.fill(g, b"other", &None);
        assert_eq!(cache.get(b"other"), Some(None));
    }

    #[test]
    fn validated_values_then_writes_then_cleared_ranges() {
        let cache = ReadCache::new(DEFAULT_BUDGET);
        let mut writes = Pending::default();
        writes.clear_range(&KeyRange::new(b"r0".to_vec(), b"r9".to_vec()));
        writes.writes.insert(b"a".to_vec(), None);
        writes.writes.insert(b"r5".to_vec(), Some(b"kept".to_vec()));
        let validated: Vec<(&[u8], Option<&[u8]>)> = vec![
            (b"a", Some(b"seen")),
            (b"b", Some(b"seen")),
            (b"r1", Some(b"gone")),
        ];
        cache.committed(validated.into_iter(), &writes);
        assert_eq!(cache.get(b"a"), Some(None), "a write wins over a read");
        assert_eq!(cache.get(b"b"), Some(Some(b"seen".to_vec())));
        assert_eq!(cache.get(b"r1"), None, "a cleared range is forgotten");
        assert_eq!(cache.get(b"r5"), Some(Some(b"kept".to_vec())));
        cache.clear();
        assert_eq!(cache.get(b"b"), None);
    }

    #[test]
    fn forget_all_drops_the_keys_seen_written_and_cleared() {
        let cache = ReadCache::new(1 << 20);
        let mut writes = Pending::default();
        for k in [&b"seen"[..], b"written", b"r1", b"other"] {
            writes.writes.insert(k.to_vec(), Some(b"v".to_vec()));
        }
        cache.committed(std::iter::empty(), &writes);
        let g = cache.generation();
        let mut stale = Pending::default();
        stale
            .writes
            .insert(b"written".to_vec(), Some(b"old".to_vec()));
        stale.clear_range(&KeyRange {
            begin: b"r0".to_vec(),
            end: b"r9".to_vec(),
        });
        cache.forget_all([&b"seen"[..]].into_iter(), &stale);
        assert_eq!(cache.get(b"seen"), None);
        assert_eq!(cache.get(b"written"), None);
        assert_eq!(cache.get(b"r1"), None);
        assert_eq!(cache.get(b"other"), Some(Some(b"v".to_vec())));
        assert_ne!(
            cache.generation(),
            g,
            "a snapshot begun before cannot fill it"
        );
    }

    #[test]
    fn the_budget_bounds_memory_and_recent_values_survive() {
        let cache = ReadCache::new(4_096);
        for i in 0..1_000u32 {
            let mut writes = Pending::default();
            writes
                .writes
                .insert(i.to_be_bytes().to_vec(), Some(vec![0; 64]));
            cache.committed(std::iter::empty(), &writes);
            // A hot key read often stays.
            assert!(i == 0 || cache.get(&0u32.to_be_bytes()).is_some());
        }
        let inner = cache.lock();
        let held: usize = inner
            .young
            .iter()
            .chain(inner.old.iter())
            .map(|(k, v)| size(k, v))
            .sum();
        assert!(held <= 4_096 + 400, "held {held} bytes");
        assert!(inner.young.contains_key(&999u32.to_be_bytes()[..]));
    }
}
