//! The embedded store's committer: one thread that checks conflicts, applies transactions
//! to fjall and syncs the journal once per batch (group commit).
//!
//! Conflict detection works as FoundationDB's resolvers do: the committer remembers, for
//! each key written recently, the commit version that last wrote it. A transaction that
//! read at version `r` conflicts if any key it read (or any key inside a range it read)
//! was written at a version after `r`. Because one thread checks and applies in order,
//! the check and the write are atomic, and transactions are serializable in commit order.
//!
//! Every transaction that arrived while the previous batch was being processed goes into the
//! next batch: their writes are applied as one fjall write batch (one journal append) and
//! made durable by one `fdatasync`. A commit is acknowledged only after that sync.
//!
//! The sync runs on a second thread (the syncer), so the committer checks conflicts and
//! builds the next batch while the previous one is being synced. fjall's journal has one
//! writer mutex, held by `persist` for the whole sync and by a batch's commit for its journal
//! append and memtable insert: applying the next batch waits for the sync in progress (see
//! docs/storage-backends.md). A sync covers everything appended to the journal before it,
//! so the syncer coalesces the batches queued meanwhile into one
//! sync. Readers are unaffected: a read-only transaction waits until what it saw is durable
//! (`wait_durable`). fjall makes a write batch visible inside its commit call, so the
//! committer announces the batch's last version as *applied* before that call
//! ([`Versions::applying`]); a reader waits for the applied version it read after taking its
//! snapshot, never only for the last *published* version (which a snapshot may already be
//! past).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use fjall::{Database, Keyspace, PersistMode, Slice};
use tokio::sync::{oneshot, watch};

use super::fjall_error;
use super::versions::{ReadVersion, Versions};
use crate::store::{KeyRange, StoreError};

/// Most transactions taken into one batch.
const MAX_BATCH: usize = 4096;
/// Most commit versions whose writes are remembered. A transaction that stays open while
/// more commits than this happen conflicts at commit (and reruns on a fresh snapshot), as a
/// FoundationDB transaction older than 5 seconds does; this bounds the memory an abandoned
/// transaction can pin.
const MAX_REMEMBERED_VERSIONS: u64 = 200_000;
/// Bytes of writes after which a batch is applied early (bounds the write batch's memory).
const MAX_APPLY_BYTES: usize = 32 * 1024 * 1024;

/// What a transaction read: single keys and key ranges.
#[derive(Default)]
pub(super) struct ReadSet {
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) ranges: Vec<KeyRange>,
}

/// A transaction to commit: what it read (at which version) and what it writes.
pub(super) struct Changes {
    /// The read version, kept registered until the conflict check is done.
    pub(super) read: ReadVersion,
    pub(super) reads: ReadSet,
    /// Range clears, applied before `writes`, to the data as of commit time.
    pub(super) cleared: Vec<KeyRange>,
    /// Key writes (`None` clears the key).
    pub(super) writes: BTreeMap<Slice, Option<Slice>>,
}

/// A transaction handed to the committer, and where to send its outcome.
struct CommitRequest {
    changes: Changes,
    reply: Reply,
}

/// Applying or syncing a batch failed: the outcome of its transactions is unknown.
#[derive(Debug, thiserror::Error)]
#[error("writing the batch of commits failed")]
pub(super) struct BatchFailed(#[source] Arc<fjall::Error>);

/// A journal sync failed earlier: what is visible may not be durable, and the store accepts
/// no more work.
#[derive(Debug, thiserror::Error)]
#[error("a journal sync failed earlier; restart to recover from the journal")]
pub(super) struct SyncFailedEarlier;

/// The committer thread is gone (the store is closing).
#[derive(Debug, thiserror::Error)]
#[error("the embedded store's committer has stopped")]
pub(super) struct CommitterStopped;

/// What the committer has done since the store opened (see [`Committer::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Transactions with writes acknowledged as committed (each after its sync).
    pub commits: u64,
    /// Journal syncs (`fdatasync`) that succeeded. Group commit makes this far smaller
    /// than `commits` under concurrent writers.
    pub syncs: u64,
    /// The last commit version known to be synced to disk (0: none yet, or a sync failed).
    pub synced_version: u64,
}

/// The counters behind [`CommitStats`], updated by the syncer thread.
#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    syncs: AtomicU64,
}

/// Handle to the committer thread. Dropping it stops the thread and waits for it.
pub(super) struct Committer {
    sender: Option<mpsc::Sender<CommitRequest>>,
    thread: Option<JoinHandle<()>>,
    /// The last commit version known to be synced to disk; `None` once a sync failed.
    durable: watch::Receiver<Option<u64>>,
    counters: Arc<Counters>,
}

impl Committer {
    /// Starts the committer thread.
    pub(super) fn start(
        db: Database,
        keyspace: Keyspace,
        versions: Arc<Versions>,
        #[cfg(test)] between_apply_and_publish: Option<Box<dyn FnMut() + Send>>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let (durable_tx, durable) = watch::channel(Some(0));
        let (sync_sender, sync_receiver) = mpsc::channel();
        let syncer_db = db.clone();
        let counters = Arc::new(Counters::default());
        let syncer_counters = counters.clone();
        let syncer = std::thread::Builder::new()
            .name("perdure-store-sync".into())
            .spawn(move || {
                sync_loop(&syncer_db, &durable_tx, &syncer_counters, &sync_receiver);
            })?;
        let mut state = State {
            db,
            keyspace,
            versions,
            version: 0,
            recent: BTreeMap::new(),
            by_version: VecDeque::new(),
            floor: 0,
            #[cfg(test)]
            between_apply_and_publish,
        };
        let thread = std::thread::Builder::new()
            .name("perdure-store-commit".into())
            .spawn(move || {
                state.run(&receiver, &sync_sender);
                // Closing the channel ends the syncer once it has answered every batch.
                drop(sync_sender);
                let _ = syncer.join();
            })?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            durable,
            counters,
        })
    }

    /// Commits and syncs, syncs and the last synced version so far.
    pub(super) fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counters.commits.load(Ordering::Acquire),
            syncs: self.counters.syncs.load(Ordering::Acquire),
            synced_version: self.durable.borrow().unwrap_or(0),
        }
    }

    /// Commits a transaction; returns its commit version once it is synced to disk (or
    /// the failure).
    pub(super) async fn commit(&self, changes: Changes) -> Result<u64, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| StoreError::Fatal(Box::new(CommitterStopped)))?;
        sender
            .send(CommitRequest { changes, reply })
            .map_err(|_| StoreError::Fatal(Box::new(CommitterStopped)))?;
        match outcome.await {
            Ok(result) => result,
            // The thread ended with our transaction in hand: we cannot know its fate.
            Err(_) => Err(StoreError::MaybeCommitted(Box::new(CommitterStopped))),
        }
    }

    /// Waits until every write up to `target` is synced (a read-only transaction passes the
    /// applied version it read after taking its snapshot, see [`Versions::applied`]), and
    /// returns `target`. A read-only transaction calls this before it reports success, so it
    /// never acts on data a crash could still take back.
    pub(super) async fn wait_durable(&self, target: u64) -> Result<u64, StoreError> {
        let mut durable = self.durable.clone();
        let state = *durable
            .wait_for(|synced| synced.is_none_or(|v| v >= target))
            .await
            .map_err(|_| StoreError::Fatal(Box::new(CommitterStopped)))?;
        match state {
            Some(_) => Ok(target),
            None => Err(StoreError::Fatal(Box::new(SyncFailedEarlier))),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once it has answered every request.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            // A panicked committer has dropped its reply senders: waiters saw that already.
            let _ = thread.join();
        }
    }
}

/// The committer thread's state.
struct State {
    db: Database,
    keyspace: Keyspace,
    versions: Arc<Versions>,
    /// The last commit version assigned.
    version: u64,
    /// Recently written keys and the version that last wrote each. The keys share their
    /// bytes with the memtable entries (fjall slices are reference counted).
    recent: BTreeMap<Slice, u64>,
    /// The keys each recent version wrote, oldest first, to forget them in order.
    by_version: VecDeque<(u64, Vec<Slice>)>,
    /// Write versions at or below this have been forgotten.
    floor: u64,
    /// Test seam: runs right after a write batch is committed to fjall (visible), before
    /// its version is published.
    #[cfg(test)]
    between_apply_and_publish: Option<Box<dyn FnMut() + Send>>,
}

/// Accepted writes waiting to be applied: key and new value (`None` removes).
type Pending = Vec<(Slice, Option<Slice>)>;

/// Where a transaction's outcome goes: its commit version, or why it failed.
type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// Outcomes of a batch, and which of them are applied to storage yet.
struct Outcomes {
    list: Vec<(Reply, Result<u64, StoreError>)>,
    /// Index of the first outcome not yet written to storage.
    unapplied: usize,
    /// Whether anything was written to storage in this batch.
    applied_any: bool,
    /// The last version of the batch, if it accepted any transaction: what its sync makes
    /// durable. A transaction whose range clears matched no key writes nothing, yet it may
    /// have read writes not yet synced: it waits for the sync like any other.
    synced: Option<u64>,
    /// Applying a write batch failed: nothing after it can be made durable.
    failed: bool,
}

impl Outcomes {
    /// Turns every successful outcome from `from` on into a failure built by `error`.
    fn fail_from(&mut self, from: usize, error: impl Fn() -> StoreError) {
        for (_, outcome) in self.list.iter_mut().skip(from) {
            if outcome.is_ok() {
                *outcome = Err(error());
            }
        }
    }
}

/// The syncer thread: syncs the journal for every batch the committer applied (one sync for
/// all the batches queued meanwhile), publishes the durable version, then answers the
/// batches' transactions.
fn sync_loop(
    db: &Database,
    durable: &watch::Sender<Option<u64>>,
    counters: &Counters,
    receiver: &mpsc::Receiver<Outcomes>,
) {
    let mut batches = Vec::new();
    while let Ok(first) = receiver.recv() {
        batches.push(first);
        while let Ok(more) = receiver.try_recv() {
            batches.push(more);
        }
        if batches.iter().any(|b| b.failed) {
            // Readers may wait for a version announced as applied that never will be.
            durable.send_replace(None);
        } else if let Some(synced) = batches.iter().filter_map(|b| b.synced).max() {
            match db.persist(PersistMode::SyncData) {
                Ok(()) => {
                    counters.syncs.fetch_add(1, Ordering::Release);
                    durable.send_replace(Some(synced));
                }
                Err(e) => {
                    durable.send_replace(None);
                    let e = Arc::new(e);
                    for batch in batches.iter_mut().filter(|b| b.synced.is_some()) {
                        batch.fail_from(0, || {
                            StoreError::MaybeCommitted(Box::new(BatchFailed(e.clone())))
                        });
                    }
                }
            }
        }
        let acknowledged = batches
            .iter()
            .flat_map(|b| &b.list)
            .filter(|(_, outcome)| outcome.is_ok())
            .count();
        counters
            .commits
            .fetch_add(acknowledged as u64, Ordering::Release);
        for batch in batches.drain(..) {
            for (reply, outcome) in batch.list {
                // The committing task may have been cancelled: nobody to tell.
                let _ = reply.send(outcome);
            }
        }
    }
}

impl State {
    fn run(&mut self, receiver: &mpsc::Receiver<CommitRequest>, syncer: &mpsc::Sender<Outcomes>) {
        let mut batch = Vec::new();
        while let Ok(first) = receiver.recv() {
            batch.push(first);
            self.gather(receiver, &mut batch);
            let outcomes = self.process(batch.drain(..));
            // If the syncer is gone, the replies are dropped: the waiters learn that their
            // commit's fate is unknown.
            let _ = syncer.send(outcomes);
            self.forget_old_writes();
        }
    }

    /// Adds the requests already queued to `batch`: everything that arrived while the
    /// previous batch was being synced shares the next sync.
    fn gather(&self, receiver: &mpsc::Receiver<CommitRequest>, batch: &mut Vec<CommitRequest>) {
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
    }

    fn process(&mut self, batch: impl Iterator<Item = CommitRequest>) -> Outcomes {
        let mut outcomes = Outcomes {
            list: Vec::new(),
            unapplied: 0,
            applied_any: false,
            synced: None,
            failed: false,
        };
        // The writes of the accepted transactions not yet applied, in commit order.
        let mut pending: Pending = Vec::new();
        let mut pending_bytes = 0usize;
        for request in batch {
            let CommitRequest {
                changes:
                    Changes {
                        read,
                        reads,
                        cleared,
                        writes,
                    },
                reply,
            } = request;
            if self.conflicts(read.get(), &reads) {
                outcomes.list.push((reply, Err(StoreError::Conflict)));
                continue;
            }
            drop(read);
            // A range clear applies to the data as of commit time, which must include the
            // transactions before it in this batch: write those first.
            if !cleared.is_empty() && !pending.is_empty() {
                self.apply(&mut pending, &mut outcomes);
                pending_bytes = 0;
            }
            let mut cleared_keys: Vec<Slice> = Vec::new();
            let mut failed = None;
            'ranges: for range in &cleared {
                for guard in self
                    .keyspace
                    .range(range.begin.as_slice()..range.end.as_slice())
                {
                    match guard.key() {
                        Ok(key) => cleared_keys.push(key),
                        Err(e) => {
                            failed = Some(fjall_error(e));
                            break 'ranges;
                        }
                    }
                }
            }
            if let Some(e) = failed {
                outcomes.list.push((reply, Err(e)));
                continue;
            }
            self.version += 1;
            let mut written = Vec::with_capacity(cleared_keys.len() + writes.len());
            let changes = cleared_keys
                .into_iter()
                .map(|key| (key, None))
                .chain(writes);
            for (key, value) in changes {
                pending_bytes += key.len() + value.as_ref().map_or(0, |v| v.len());
                self.recent.insert(key.clone(), self.version);
                written.push(key.clone());
                pending.push((key, value));
            }
            self.by_version.push_back((self.version, written));
            outcomes.list.push((reply, Ok(self.version)));
            if pending_bytes > MAX_APPLY_BYTES {
                self.apply(&mut pending, &mut outcomes);
                pending_bytes = 0;
            }
        }
        self.apply(&mut pending, &mut outcomes);
        if outcomes.list.iter().any(|(_, o)| o.is_ok()) {
            // Versions without writes (empty range clears) are "applied" at once.
            self.versions.applying(self.version);
            outcomes.synced = Some(self.version);
        }
        outcomes
    }

    /// Writes the pending changes as one atomic fjall batch and publishes the version.
    /// A key written by several transactions of the batch gets the last one's write: one
    /// fjall batch has one sequence number, so it may hold each key once.
    fn apply(&mut self, pending: &mut Pending, outcomes: &mut Outcomes) {
        let from = outcomes.unapplied;
        outcomes.unapplied = outcomes.list.len();
        if pending.is_empty() {
            return;
        }
        // Stable: equal keys stay in commit order, and the last of each run wins.
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        let mut batch = fjall::OwnedWriteBatch::with_capacity(self.db.clone(), pending.len());
        let mut changes = pending.drain(..).peekable();
        while let Some((key, value)) = changes.next() {
            if changes.peek().is_some_and(|(next, _)| *next == key) {
                continue;
            }
            match value {
                Some(value) => batch.insert(&self.keyspace, key, value),
                None => batch.remove(&self.keyspace, key),
            }
        }
        drop(changes);
        // Announced before the commit: fjall makes the batch visible inside it.
        self.versions.applying(self.version);
        match batch.commit() {
            Ok(()) => {
                #[cfg(test)]
                if let Some(hook) = self.between_apply_and_publish.as_mut() {
                    hook();
                }
                self.versions.publish(self.version);
                outcomes.applied_any = true;
            }
            Err(e) => {
                outcomes.failed = true;
                // The journal append failed: fjall is poisoned and nothing of this batch
                // is visible. Fatal for these transactions and every later one.
                let e = Arc::new(e);
                outcomes.fail_from(from, || StoreError::Fatal(Box::new(BatchFailed(e.clone()))));
            }
        }
    }

    /// Whether a transaction that read `reads` at `read_version` conflicts with a later
    /// commit.
    fn conflicts(&self, read_version: u64, reads: &ReadSet) -> bool {
        if read_version < self.floor {
            // Writes it might conflict with were forgotten: it stayed open too long.
            return true;
        }
        let newer = |v: &u64| *v > read_version;
        reads
            .keys
            .iter()
            .any(|k| self.recent.get(k.as_slice()).is_some_and(newer))
            || reads.ranges.iter().any(|r| {
                r.begin < r.end
                    && self
                        .recent
                        .range::<[u8], _>(r.bounds())
                        .any(|(_, v)| newer(v))
            })
    }

    /// Forgets write versions that no open or future transaction can conflict with.
    fn forget_old_writes(&mut self) {
        let floor = self
            .versions
            .floor()
            .max(self.version.saturating_sub(MAX_REMEMBERED_VERSIONS));
        while let Some((version, _)) = self.by_version.front() {
            if *version > floor {
                break;
            }
            let Some((version, keys)) = self.by_version.pop_front() else {
                break;
            };
            for key in keys {
                if self.recent.get(&key) == Some(&version) {
                    self.recent.remove(&key);
                }
            }
        }
        self.floor = self.floor.max(floor);
    }
}

#[cfg(test)]
mod tests {
    use fjall::{KeyspaceCreateOptions, Readable};

    use super::*;

    /// A committer state on a fresh database, driven directly (no thread), so a test
    /// decides exactly which transactions share a batch.
    fn state(dir: &std::path::Path) -> anyhow::Result<State> {
        let db = Database::builder(dir).manual_journal_persist(true).open()?;
        let keyspace = db.keyspace("test", KeyspaceCreateOptions::default)?;
        Ok(State {
            db,
            keyspace,
            versions: Arc::new(Versions::default()),
            version: 0,
            recent: BTreeMap::new(),
            by_version: VecDeque::new(),
            floor: 0,
            between_apply_and_publish: None,
        })
    }

    /// A blind write of `writes` (`None` removes), with its outcome's receiver.
    fn request(
        state: &State,
        writes: &[(&[u8], Option<&[u8]>)],
    ) -> (CommitRequest, oneshot::Receiver<Result<u64, StoreError>>) {
        let (reply, outcome) = oneshot::channel();
        let writes = writes
            .iter()
            .map(|(k, v)| (Slice::from(*k), v.map(Slice::from)))
            .collect();
        let changes = Changes {
            read: state.versions.open_reader(),
            reads: ReadSet::default(),
            cleared: Vec::new(),
            writes,
        };
        (CommitRequest { changes, reply }, outcome)
    }

    /// A transaction whose only writes are range clears that match no key writes nothing to
    /// the journal, yet it may have read writes not synced yet: its batch must be synced
    /// before it is acknowledged. Before the fix the batch had no sync (`synced: None`).
    #[test]
    fn a_transaction_of_empty_range_clears_waits_for_a_sync() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut state = state(dir.path())?;
        let (reply, _outcome) = oneshot::channel();
        let changes = Changes {
            read: state.versions.open_reader(),
            reads: ReadSet::default(),
            cleared: vec![KeyRange::new(b"x".to_vec(), b"y".to_vec())],
            writes: BTreeMap::new(),
        };
        let outcomes = state.process([CommitRequest { changes, reply }].into_iter());
        assert!(outcomes.list.iter().all(|(_, o)| o.is_ok()));
        assert_eq!(outcomes.synced, Some(1), "the batch must be synced");
        Ok(())
    }

    #[test]
    fn a_key_written_twice_in_one_batch_keeps_the_last_write() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut state = state(dir.path())?;
        let (first, first_outcome) = request(
            &state,
            &[(b"a", Some(b"1")), (b"b", Some(b"1")), (b"c", None)],
        );
        let (second, second_outcome) = request(&state, &[(b"a", None), (b"c", Some(b"2"))]);
        let (third, third_outcome) = request(&state, &[(b"a", Some(b"3"))]);
        let outcomes = state.process([first, second, third].into_iter());
        for (reply, outcome) in outcomes.list {
            let _ = reply.send(outcome);
        }
        for (mut outcome, version) in [(first_outcome, 1), (second_outcome, 2), (third_outcome, 3)]
        {
            assert_eq!(outcome.try_recv().ok().and_then(Result::ok), Some(version));
        }
        let read = |key: &[u8]| -> anyhow::Result<Option<Vec<u8>>> {
            Ok(state
                .db
                .snapshot()
                .get(&state.keyspace, key)?
                .map(|v| v.to_vec()))
        };
        assert_eq!(read(b"a")?.as_deref(), Some(&b"3"[..]));
        assert_eq!(read(b"b")?.as_deref(), Some(&b"1"[..]));
        assert_eq!(read(b"c")?.as_deref(), Some(&b"2"[..]));
        // Each transaction got its own version, and the conflict table has the last one.
        assert_eq!(state.version, 3);
        assert_eq!(state.recent.get(&b"a"[..]), Some(&3));
        assert_eq!(state.recent.get(&b"c"[..]), Some(&2));
        Ok(())
    }
}
