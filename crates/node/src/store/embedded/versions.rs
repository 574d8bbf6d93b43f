//! Commit versions and the registry of open read snapshots.
//!
//! Every applied transaction gets the next commit version. A transaction reads at the
//! version that was committed when it began; at commit it conflicts if a transaction with a
//! later version wrote a key it read. The committer forgets the write versions no open
//! transaction can conflict with any more: those at or below the oldest open read version.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Commit versions and open read versions, shared by the store and its committer.
#[derive(Default)]
pub(super) struct Versions {
    /// The last commit version whose writes are visible to new snapshots.
    committed: AtomicU64,
    /// The last commit version whose writes are applied or being applied to storage: set
    /// *before* a write batch is committed to fjall (which makes it visible inside that
    /// call), so a snapshot never holds writes of a version above it. A read-only
    /// transaction waits until this version, read after its snapshot was taken, is durable.
    applied: AtomicU64,
    /// Open read versions and how many transactions read at each.
    open: Mutex<BTreeMap<u64, usize>>,
}

impl Versions {
    fn open_set(&self) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        // The map stays consistent even if a holder panicked: every update is one insert or
        // one decrement.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new reader at the current committed version. The caller takes its
    /// storage snapshot *after* this, so the snapshot holds at least every write up to the
    /// returned version.
    pub(super) fn open_reader(self: &Arc<Self>) -> ReadVersion {
        let mut open = self.open_set();
        let version = self.committed.load(Ordering::Acquire);
        *open.entry(version).or_default() += 1;
        ReadVersion {
            versions: self.clone(),
            version,
        }
    }

    /// Announces that the writes up to `version` are about to become visible (before the
    /// write batch is committed to storage).
    pub(super) fn applying(&self, version: u64) {
        self.applied.fetch_max(version, Ordering::AcqRel);
    }

    /// The last version whose writes may be visible in a snapshot taken before this call.
    pub(super) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Publishes `version` as committed: its writes are visible in storage.
    pub(super) fn publish(&self, version: u64) {
        self.committed.store(version, Ordering::Release);
    }

    /// The version below which no open or future reader reads: write versions at or below
    /// it can be forgotten.
    pub(super) fn floor(&self) -> u64 {
        let open = self.open_set();
        let committed = self.committed.load(Ordering::Acquire);
        open.keys()
            .next()
            .copied()
            .unwrap_or(committed)
            .min(committed)
    }
}

/// A registered read version; dropping it unregisters the reader.
pub(super) struct ReadVersion {
    versions: Arc<Versions>,
    version: u64,
}

impl ReadVersion {
    /// The version the reader reads at.
    pub(super) fn get(&self) -> u64 {
        self.version
    }
}

impl Drop for ReadVersion {
    fn drop(&mut self) {
        let mut open = self.versions.open_set();
        if let Some(count) = open.get_mut(&self.version) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.version);
            }
        }
    }
}
