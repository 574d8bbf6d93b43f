//! Group commit: many logical transactions of one node in one PostgreSQL transaction.
//!
//! One committer task per store takes the transactions waiting to commit (up to
//! [`MAX_GROUP`]) and, on one connection:
//!
//! 1. `BEGIN ISOLATION LEVEL SERIALIZABLE`, then re-reads everything the members read from
//!    their snapshots (every point key in one `key = ANY($1)` query, each range with its
//!    original query), pipelined. A member whose reads differ from what it saw conflicts:
//!    someone (this node or another) committed a change to its reads after its snapshot.
//! 2. In member order, a member also conflicts if it read a key or range that an earlier
//!    accepted member of the group writes (the FoundationDB-style check: it did not see
//!    that write). Conflicting members get [`StoreError::Conflict`] and are retried by
//!    `transact`; the others are accepted.
//! 3. The accepted members' writes, merged in order (a later write of a key wins; a range
//!    clear removes earlier writes in it), are sent as one multi-range delete, one multi-row
//!    delete and one multi-row upsert, pipelined with `COMMIT`.
//!
//! When no member read a range (the usual case: episodes read their lease, messages and
//! record as keys), the group takes **one round trip** instead: step 2 runs first, in the
//! node, as if every read held; then `BEGIN`, one statement that checks every key an accepted
//! member read against the value it saw (and aborts the transaction with a division by zero
//! if one differs), the writes and `COMMIT` are sent at once, in that order ([`pipeline`]).
//! A failed `BEGIN` writes nothing: the statements after it run outside a transaction, where
//! every write statement's SERIALIZABLE guard fails it. A failed check wrote nothing (the
//! `COMMIT` rolled back), and the group runs again as above, which tells which members
//! conflict. Two members that saw different values of one key go to the steps above at once.
//!
//! **Groups in flight** ([`DEPTH`]): a group holds the connection's gate from its `BEGIN`
//! until its `COMMIT` (or `ROLLBACK`) is on the connection, then passes it on; the next group
//! forms then (or as soon as the group before it is done) and is sent behind it. So
//! PostgreSQL runs the groups back to back, one transaction after another on one connection,
//! never interleaved, while the node answers the earlier group. Groups are answered, and the
//! cache learns what they committed, in the order they formed.
//!
//! Why this is serializable: every accepted member's reads equal the database's state inside
//! the group's SERIALIZABLE transaction (checked in step 1, adjusted for the earlier members
//! in step 2), so each member behaves as if it ran at the group's position in PostgreSQL's
//! serial order, members in group order. PostgreSQL's SSI protects the group against other
//! nodes' transactions. Fencing follows: a member's lease check is a read of the lease row,
//! re-checked in step 1, so a deposed owner's member conflicts, and its retry sees the new
//! epoch and fails with `Fenced`.
//!
//! Outcomes: `40001`/`40P01` on the group re-runs the whole group (up to [`GROUP_RETRIES`]
//! times; the members' reads are data, so nothing of theirs reruns) and then gives every
//! member `Conflict`; a connection lost before `COMMIT` was sent gives `Unavailable`; lost
//! while `COMMIT` was in flight gives every member `MaybeCommitted`. Any other failure of
//! a group of several re-runs its members one per transaction, so one member's bad write
//! fails only that member.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::{Object, Pool};
use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use futures::stream::FuturesOrdered;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, oneshot};
use tokio_postgres::Statement;
use tokio_postgres::error::SqlState;

use super::cache::ReadCache;
use super::{
    KeyWrites, Pending, PostgresError, RangeQuery, Sql, in_index_order, pg_error, pipeline,
    range_clears,
};
use crate::store::{KeyRange, KeyValue, StoreError};

/// Most members in one group.
pub(super) const MAX_GROUP: usize = 256;
/// Most bytes of keys and values (written, and read by the check) in one group, past its
/// first member: a statement's parameters must stay far below the protocol's limit (1 GiB
/// per message), and 256 members of up to 10 MB each would not.
pub(super) const MAX_GROUP_BYTES: usize = 64 << 20;
/// Groups in flight at once, on the committer's one connection: a group sends its `BEGIN`
/// once the group before it has sent its `COMMIT`, so PostgreSQL runs them back to back
/// while the node answers the earlier group. One connection, not one per group: groups
/// committing concurrently on several connections abort each other in PostgreSQL's SSI
/// (they read and write the same partitions' keys), measured twice (issue 17,
/// docs/benchmarks.md).
pub(super) const DEPTH: usize = 2;
/// How long the server lets a group's transaction wait for the rest of its statements
/// before it ends the session (`idle_in_transaction_session_timeout` of the committer's
/// connections). A group never waits on the node for long: its statements go out at once,
/// and the two-round-trip path waits only for the server's answers.
/// Generous: it also bounds how long one message of the group may take to arrive, and a
/// group may send tens of MiB ([`MAX_GROUP_BYTES`]: 64 MiB in 20 s is 3.2 MB/s).
const IDLE_IN_GROUP: std::time::Duration = std::time::Duration::from_secs(20);
/// How often a group that PostgreSQL aborted as a serialization failure is re-run.
pub(super) const GROUP_RETRIES: u32 = 3;

/// One range read: the query a transaction ran (re-run identically to validate it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RangeRead {
    pub(super) range: KeyRange,
    pub(super) reverse: bool,
    pub(super) limit: Option<i64>,
}

impl RangeRead {
    pub(super) fn query(&self) -> RangeQuery<'_> {
        RangeQuery::new(&self.range, self.reverse, self.limit)
    }

    /// Whether a write of `key` or a clear of `cleared` may change this read's result.
    fn touched_by(&self, written: &BTreeSet<Vec<u8>>, cleared: &[KeyRange]) -> bool {
        written
            .range::<[u8], _>(self.range.bounds())
            .next()
            .is_some()
            || cleared
                .iter()
                .any(|c| c.begin < self.range.end && self.range.begin < c.end)
    }
}

/// What a transaction read from its snapshot.
#[derive(Default, Debug)]
pub(super) struct ReadSet {
    /// Keys read, with the value seen (`None`: absent).
    pub(super) keys: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Ranges read, with the rows seen.
    pub(super) ranges: Vec<(RangeRead, Vec<KeyValue>)>,
}

/// Counters of the committer (for tests and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// PostgreSQL transactions committed by the committer.
    pub groups: u64,
    /// Logical transactions committed.
    pub committed: u64,
    /// Logical transactions refused with `Conflict` (retried by `transact`).
    pub conflicts: u64,
    /// Groups re-run after PostgreSQL aborted them (serialization failure).
    pub group_retries: u64,
    /// Groups committed in one round trip (no member read a range, and every key read
    /// held the value seen).
    pub one_round_trip: u64,
    /// Groups whose one-round-trip check failed (a key read had changed): run again in two.
    pub checks_failed: u64,
    /// Groups that formed while an earlier group was still in flight (see [`DEPTH`]).
    pub pipelined: u64,
}

#[derive(Default)]
struct Counters {
    groups: AtomicU64,
    committed: AtomicU64,
    conflicts: AtomicU64,
    group_retries: AtomicU64,
    one_round_trip: AtomicU64,
    checks_failed: AtomicU64,
    pipelined: AtomicU64,
}

struct Request {
    reads: ReadSet,
    pending: Pending,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl Request {
    /// Bytes of the keys and values it sends: its writes, and the keys it read with the
    /// values it saw (the one-round-trip check sends them).
    fn bytes(&self) -> usize {
        let writes = self
            .pending
            .writes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len));
        let reads = self
            .reads
            .keys
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len));
        let cleared = self
            .pending
            .cleared
            .iter()
            .map(|r| r.begin.len() + r.end.len());
        writes
            .chain(reads)
            .chain(cleared)
            .fold(0, usize::saturating_add)
    }
}

/// The committer's queue. Dropping the last handle stops the task.
pub(super) struct GroupCommitter {
    sender: mpsc::UnboundedSender<Request>,
    counters: Arc<Counters>,
    cache: Arc<ReadCache>,
}

/// The committer task has stopped (its runtime shut down).
#[derive(Debug, thiserror::Error)]
#[error("the PostgreSQL group committer has stopped")]
struct CommitterStopped;

/// Why a whole group failed, shared by its members' errors.
#[derive(Debug, thiserror::Error)]
#[error("group commit failed: {0}")]
struct GroupFailed(#[source] Source);

/// A failure shared by every member of a group.
type Source = Arc<dyn std::error::Error + Send + Sync>;

impl GroupCommitter {
    /// Starts the committer task on the current runtime, with up to `depth` groups in flight
    /// (at least 1) and a cache of recent values of `cache_budget` bytes.
    pub(super) fn start(pool: Pool, sql: Arc<Sql>, depth: usize, cache_budget: usize) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let cache = Arc::new(ReadCache::new(cache_budget));
        tokio::spawn(run(
            pool,
            sql,
            receiver,
            counters.clone(),
            cache.clone(),
            depth.max(1),
        ));
        Self {
            sender,
            counters,
            cache,
        }
    }

    /// The cache of recent values the committer keeps.
    pub(super) fn cache(&self) -> &ReadCache {
        &self.cache
    }

    /// Commits one logical transaction; returns once its group committed (durably) or failed.
    pub(super) async fn commit(&self, reads: ReadSet, pending: Pending) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request {
                reads,
                pending,
                reply,
            })
            .map_err(|_| StoreError::Unavailable(Box::new(CommitterStopped)))?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::MaybeCommitted(Box::new(CommitterStopped))))
    }

    pub(super) fn stats(&self) -> GroupStats {
        GroupStats {
            groups: self.counters.groups.load(Ordering::Relaxed),
            committed: self.counters.committed.load(Ordering::Relaxed),
            conflicts: self.counters.conflicts.load(Ordering::Relaxed),
            group_retries: self.counters.group_retries.load(Ordering::Relaxed),
            one_round_trip: self.counters.one_round_trip.load(Ordering::Relaxed),
            checks_failed: self.counters.checks_failed.load(Ordering::Relaxed),
            pipelined: self.counters.pipelined.load(Ordering::Relaxed),
        }
    }
}

/// The committer's connection, shared by the groups in flight. Only a group holding the
/// gate takes or replaces it; a connection found broken is retired, and leaves the pool
/// (detached, so that it is closed rather than reused) once no group holds it any more.
struct Link {
    pool: Pool,
    current: std::sync::Mutex<Option<Arc<Object>>>,
    retired: std::sync::Mutex<Vec<Arc<Object>>>,
}

impl Link {
    fn new(pool: Pool) -> Self {
        Self {
            pool,
            current: std::sync::Mutex::new(None),
            retired: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The connection to send on (call it holding the gate). One that closed while no group
    /// used it (server restart, idle timeout) is replaced before anything is sent: a
    /// statement failing on it could not tell whether a pipelined `COMMIT` went out.
    async fn connection(&self) -> Result<Arc<Object>, StoreError> {
        {
            let mut current = lock(&self.current);
            match current.as_ref() {
                Some(c) if !c.is_closed() => return Ok(c.clone()),
                Some(_) => {
                    if let Some(c) = current.take() {
                        lock(&self.retired).push(c);
                    }
                }
                None => {}
            }
        }
        let c = self.pool.get().await.map_err(super::checkout_error)?;
        // A group's statements go out at once, but a node frozen or cut off in the middle
        // of a large group's would leave its transaction open with row locks (a lease row,
        // say) that other nodes' writes wait on: the server ends such a session.
        if let Err(e) = c
            .batch_execute(&format!(
                "SET idle_in_transaction_session_timeout = '{}ms'",
                IDLE_IN_GROUP.as_millis()
            ))
            .await
        {
            drop(Object::take(c));
            return Err(pg_error(e));
        }
        let c = Arc::new(c);
        *lock(&self.current) = Some(c.clone());
        Ok(c)
    }

    /// Stops using `conn`: the next group takes a fresh connection.
    fn discard(&self, conn: &Arc<Object>) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn))
            && let Some(c) = current.take()
        {
            lock(&self.retired).push(c);
        }
    }

    /// Closes the retired connections no group holds any more.
    fn sweep(&self) {
        let retired = std::mem::take(&mut *lock(&self.retired));
        let mut kept = Vec::new();
        for c in retired {
            match Arc::try_unwrap(c) {
                Ok(c) => drop(Object::take(c)),
                Err(c) => kept.push(c),
            }
        }
        lock(&self.retired).extend(kept);
    }
}

impl Drop for Link {
    /// Its connections carry a setting of their own: they do not go back to the pool.
    fn drop(&mut self) {
        let current = lock(&self.current).take();
        let retired = std::mem::take(&mut *lock(&self.retired));
        for c in current.into_iter().chain(retired) {
            if let Ok(c) = Arc::try_unwrap(c) {
                drop(Object::take(c));
            }
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The right to send on the committer's connection: held by a group from its `BEGIN` until
/// its `COMMIT` (or `ROLLBACK`) has been handed to the connection, so that the groups in
/// flight reach PostgreSQL one transaction after another, never interleaved.
struct Turn<'g> {
    gate: &'g Gate,
    permit: std::sync::Mutex<Option<SemaphorePermit<'g>>>,
}

/// The committer's gate (see [`Turn`]), and how many `COMMIT`s have gone through it.
struct Gate {
    permits: Semaphore,
    commits: AtomicU64,
}

impl<'g> Turn<'g> {
    fn new(gate: &'g Gate, permit: Option<SemaphorePermit<'g>>) -> Self {
        Self {
            gate,
            permit: std::sync::Mutex::new(permit),
        }
    }

    /// Waits for the gate, unless this group holds it already.
    async fn take(&self) -> Result<(), StoreError> {
        if lock(&self.permit).is_some() {
            return Ok(());
        }
        let permit = self
            .gate
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable(Box::new(CommitterStopped)))?;
        *lock(&self.permit) = Some(permit);
        Ok(())
    }

    /// Lets the next group send (its `COMMIT` is on the connection); returns that
    /// `COMMIT`'s place in the order PostgreSQL runs them.
    fn pass(&self) -> u64 {
        let place = self.gate.commits.fetch_add(1, Ordering::Relaxed) + 1;
        drop(lock(&self.permit).take());
        place
    }
}

/// A group in flight: its members, and when it was formed.
struct InFlight {
    batch: Vec<Request>,
    started: std::time::Instant,
    outcomes: Vec<Result<(), StoreError>>,
    fills: Vec<CacheUpdate>,
}

async fn run(
    pool: Pool,
    sql: Arc<Sql>,
    mut receiver: mpsc::UnboundedReceiver<Request>,
    counters: Arc<Counters>,
    cache: Arc<ReadCache>,
    depth: usize,
) {
    let link = Link::new(pool);
    let gate = Gate {
        permits: Semaphore::new(1),
        commits: AtomicU64::new(0),
    };
    let (link, gate, sql, counters, cache) = (&link, &gate, &*sql, &*counters, &*cache);
    let mut in_flight = FuturesOrdered::new();
    // The first member of the next group, taken from the queue while the groups before it
    // are being sent.
    let mut next: Option<Request> = None;
    let mut open = true;
    // The place of the newest `COMMIT` the cache has learned.
    let mut filled = 0;
    loop {
        if !open && next.is_none() && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                // PostgreSQL has just finished this group: the next one goes out before this
                // one's members are answered, so that it waits on the node as little as
                // possible.
                if in_flight.len() < depth
                    && let Some(first) = next.take().or_else(|| receiver.try_recv().ok())
                {
                    match gate.permits.try_acquire() {
                        Ok(permit) => {
                            let batch = gather(first, &mut receiver, !in_flight.is_empty(), counters);
                            let sent = pipeline::start(group(link, sql, gate, permit, batch, counters));
                            in_flight.push_back(sent.await.finish());
                        }
                        Err(_) => next = Some(first),
                    }
                }
                finish(done, cache, &mut filled, &gate.commits);
                link.sweep();
            }
            r = receiver.recv(), if open && next.is_none() => match r {
                Some(r) => next = Some(r),
                None => open = false,
            },
            // The next group forms once the connection is free for it (the group before has
            // sent its COMMIT): everything that waits by then goes in.
            permit = gate.permits.acquire(), if next.is_some() && in_flight.len() < depth => {
                let (Ok(permit), Some(first)) = (permit, next.take()) else {
                    return;
                };
                let batch = gather(first, &mut receiver, !in_flight.is_empty(), counters);
                let sent = pipeline::start(group(link, sql, gate, permit, batch, counters));
                in_flight.push_back(sent.await.finish());
            }
            // Not reached (some branch is always enabled); stopping drops the queue, and a
            // waiting commit gets `MaybeCommitted`, not a hang.
            else => return,
        }
    }
}

/// Commits `batch` (its first poll sends it, when nothing has to be waited for).
async fn group<'g>(
    link: &'g Link,
    sql: &'g Sql,
    gate: &'g Gate,
    permit: SemaphorePermit<'g>,
    batch: Vec<Request>,
    counters: &'g Counters,
) -> InFlight {
    let started = std::time::Instant::now();
    let (outcomes, fills) = commit_group(link, sql, gate, permit, &batch, counters).await;
    InFlight {
        batch,
        started,
        outcomes,
        fills,
    }
}

/// `first` and what waits behind it, up to [`MAX_GROUP`] members and [`MAX_GROUP_BYTES`];
/// counted as `pipelined` when an earlier group is still in flight.
fn gather(
    first: Request,
    receiver: &mut mpsc::UnboundedReceiver<Request>,
    pipelined: bool,
    counters: &Counters,
) -> Vec<Request> {
    if pipelined {
        counters.pipelined.fetch_add(1, Ordering::Relaxed);
    }
    let mut bytes = first.bytes();
    let mut batch = vec![first];
    while batch.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
        match receiver.try_recv() {
            Ok(r) => {
                bytes = bytes.saturating_add(r.bytes());
                batch.push(r);
            }
            Err(_) => break,
        }
    }
    batch
}

/// A group is done: the cache learns what it committed (groups in the order they formed),
/// then its members are answered.
fn finish(done: InFlight, cache: &ReadCache, filled: &mut u64, commits: &AtomicU64) {
    let InFlight {
        batch,
        started,
        outcomes,
        fills,
    } = done;
    for update in &fills {
        let fill = match update {
            CacheUpdate::Committed(fill) => fill,
            CacheUpdate::Forget => {
                // Its COMMIT may have been the newest to go out: what a group whose COMMIT
                // went out before now saw may be older than what it wrote.
                cache.clear();
                *filled = (*filled).max(commits.load(Ordering::Relaxed));
                continue;
            }
        };
        let Fill { members, committed } = fill;
        let seen: Box<dyn Iterator<Item = SeenRef<'_>> + '_> = match &committed.checked {
            Some(checked) => Box::new(checked.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))),
            None => Box::new(
                members
                    .iter()
                    .filter_map(|i| batch.get(*i))
                    .flat_map(|m| m.reads.keys.iter())
                    .map(|(k, v)| (k.as_slice(), v.as_deref())),
            ),
        };
        if committed.place > *filled {
            *filled = committed.place;
            cache.committed(seen, &committed.writes);
        } else {
            // A group re-run after a later one committed: what it saw may be older than
            // what the cache holds, and what the later group saw older than what it wrote.
            cache.forget_all(seen.map(|(k, _)| k), &committed.writes);
        }
    }
    tracing::debug!(
        members = batch.len(),
        conflicts = outcomes.iter().filter(|o| o.is_err()).count(),
        micros = started.elapsed().as_micros() as u64,
        "postgres group commit"
    );
    for (req, outcome) in batch.into_iter().zip(outcomes) {
        let _ = req.reply.send(outcome);
    }
}

/// A key a group re-read, with its value then (`None`: absent).
type Seen = (Vec<u8>, Option<Vec<u8>>);
/// The same, borrowed.
type SeenRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// What the cache learns from a group, in order.
enum CacheUpdate {
    /// A transaction committed.
    Committed(Fill),
    /// A transaction's outcome is unknown (the connection was lost during its `COMMIT`):
    /// the cache forgets everything.
    Forget,
}

/// What a committed transaction of a group tells the cache.
struct Fill {
    /// The group's members (indices in its batch) whose reads were checked and held.
    members: Vec<usize>,
    committed: Committed,
}

/// What a committed transaction saw and wrote.
struct Committed {
    /// Its `COMMIT`'s place in the order PostgreSQL ran them ([`Turn::pass`]).
    place: u64,
    /// The keys the transaction re-read, with their values then (`None`: the members'
    /// reads, which the check found to hold).
    checked: Option<Vec<Seen>>,
    /// The merged writes of its accepted members.
    writes: Pending,
}

/// How one attempt at a group ended.
enum Attempt {
    /// Committed: per member, accepted (`true`) or conflicting; and what the cache learns.
    Done(Vec<bool>, Committed),
    /// PostgreSQL aborted the group transaction (serialization failure, deadlock).
    Aborted,
    /// Nothing committed; the error is for every member.
    Failed(Source, FailKind),
    /// The connection was lost while `COMMIT` was in flight.
    Unknown(Source),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FailKind {
    Unavailable,
    Fatal,
}

/// Commits a group; `permit` is its turn at the gate, taken when it formed.
async fn commit_group<'g>(
    link: &Link,
    sql: &Sql,
    gate: &'g Gate,
    permit: SemaphorePermit<'g>,
    batch: &[Request],
    counters: &Counters,
) -> (Vec<Result<(), StoreError>>, Vec<CacheUpdate>) {
    let members: Vec<&Request> = batch.iter().collect();
    let turn = Turn::new(gate, Some(permit));
    let outcome = attempt_with_retries(link, sql, &turn, &members, counters).await;
    drop(turn);
    let mut fills = Vec::new();
    match outcome {
        Attempt::Failed(_, FailKind::Fatal) if members.len() > 1 => {
            // One member's write may be the cause: commit each on its own.
            let mut out = Vec::with_capacity(members.len());
            for (i, m) in members.iter().enumerate() {
                let turn = Turn::new(gate, None);
                let single = attempt_with_retries(link, sql, &turn, &[m], counters).await;
                out.extend(outcomes(single, 1, counters, |_| i, &mut fills));
            }
            (out, fills)
        }
        other => {
            let out = outcomes(other, members.len(), counters, |i| i, &mut fills);
            (out, fills)
        }
    }
}

/// Each member's result; a committed attempt's fill goes to `fills`, its members numbered
/// in the batch by `index`.
fn outcomes(
    attempt: Attempt,
    n: usize,
    counters: &Counters,
    index: impl Fn(usize) -> usize,
    fills: &mut Vec<CacheUpdate>,
) -> Vec<Result<(), StoreError>> {
    match attempt {
        Attempt::Done(accepted, committed) => {
            counters.groups.fetch_add(1, Ordering::Relaxed);
            fills.push(CacheUpdate::Committed(Fill {
                members: (0..accepted.len())
                    .filter(|i| accepted[*i])
                    .map(&index)
                    .collect(),
                committed,
            }));
            accepted
                .into_iter()
                .map(|ok| {
                    if ok {
                        counters.committed.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    } else {
                        counters.conflicts.fetch_add(1, Ordering::Relaxed);
                        Err(StoreError::Conflict)
                    }
                })
                .collect()
        }
        Attempt::Aborted => {
            counters.conflicts.fetch_add(n as u64, Ordering::Relaxed);
            (0..n).map(|_| Err(StoreError::Conflict)).collect()
        }
        Attempt::Failed(e, kind) => (0..n)
            .map(|_| {
                let source = Box::new(GroupFailed(e.clone()));
                Err(match kind {
                    FailKind::Unavailable => StoreError::Unavailable(source),
                    FailKind::Fatal => StoreError::Fatal(source),
                })
            })
            .collect(),
        Attempt::Unknown(e) => {
            fills.push(CacheUpdate::Forget);
            (0..n)
                .map(|_| Err(StoreError::MaybeCommitted(Box::new(GroupFailed(e.clone())))))
                .collect()
        }
    }
}

async fn attempt_with_retries(
    link: &Link,
    sql: &Sql,
    turn: &Turn<'_>,
    members: &[&Request],
    counters: &Counters,
) -> Attempt {
    let mut tries = 0;
    loop {
        let attempt = attempt(link, sql, turn, members, counters).await;
        match attempt {
            Attempt::Aborted if tries < GROUP_RETRIES => {
                tries += 1;
                counters.group_retries.fetch_add(1, Ordering::Relaxed);
            }
            other => return other,
        }
    }
}

/// Classifies a statement failure of the group transaction (sent before `COMMIT`).
fn classify(e: tokio_postgres::Error, link: &Link, conn: &Arc<Object>) -> Attempt {
    match pg_error(e) {
        StoreError::Conflict => Attempt::Aborted,
        StoreError::Unavailable(source) => {
            // The connection is suspect: take a fresh one next time.
            link.discard(conn);
            Attempt::Failed(Arc::from(source), FailKind::Unavailable)
        }
        StoreError::Fatal(source) => Attempt::Failed(Arc::from(source), FailKind::Fatal),
        other => Attempt::Failed(Arc::new(other), FailKind::Fatal),
    }
}

/// A store error as an attempt's failure.
fn failed(e: StoreError) -> Attempt {
    match e {
        StoreError::Unavailable(source) => {
            Attempt::Failed(Arc::from(source), FailKind::Unavailable)
        }
        StoreError::Fatal(source) => Attempt::Failed(Arc::from(source), FailKind::Fatal),
        other => Attempt::Failed(Arc::new(other), FailKind::Unavailable),
    }
}

/// The statements of the group transaction, prepared on its connection.
struct Statements {
    get_many: Statement,
    range_forward: Statement,
    range_reverse: Statement,
    span_forward: Statement,
    span_reverse: Statement,
    delete_ranges: Statement,
    delete_keys: Statement,
    upsert: Statement,
    check_values: Statement,
}

impl Statements {
    /// Prepares (or takes from the connection's cache) every statement, so that the
    /// pipelined statements below are sent in the order they are polled.
    async fn prepare(client: &Object, sql: &Sql) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            get_many: client.prepare_cached(&sql.get_many).await?,
            range_forward: client.prepare_cached(&sql.range_forward).await?,
            range_reverse: client.prepare_cached(&sql.range_reverse).await?,
            span_forward: client.prepare_cached(&sql.span_forward).await?,
            span_reverse: client.prepare_cached(&sql.span_reverse).await?,
            delete_ranges: client.prepare_cached(&sql.delete_ranges).await?,
            delete_keys: client.prepare_cached(&sql.delete_keys).await?,
            upsert: client.prepare_cached(&sql.upsert).await?,
            check_values: client.prepare_cached(&sql.check_values).await?,
        })
    }
}

/// Takes the gate (unless `turn` holds it), the connection and its statements.
async fn connect(
    link: &Link,
    sql: &Sql,
    turn: &Turn<'_>,
) -> Result<(Arc<Object>, Statements), Attempt> {
    turn.take().await.map_err(failed)?;
    let conn = link.connection().await.map_err(failed)?;
    match Statements::prepare(&conn, sql).await {
        Ok(stmts) => Ok((conn, stmts)),
        Err(e) => Err(classify(e, link, &conn)),
    }
}

/// One attempt at committing `members` as one PostgreSQL transaction. It sends holding the
/// gate (`turn`), and passes it on as soon as its `COMMIT` is on the connection.
async fn attempt(
    link: &Link,
    sql: &Sql,
    turn: &Turn<'_>,
    members: &[&Request],
    counters: &Counters,
) -> Attempt {
    let (conn, stmts) = match connect(link, sql, turn).await {
        Ok(c) => c,
        Err(a) => return a,
    };

    match attempt_in_one_round_trip(&conn, &stmts, turn, members, counters).await {
        OneTrip::Done(a) => {
            counters.one_round_trip.fetch_add(1, Ordering::Relaxed);
            return a;
        }
        OneTrip::NotApplicable => {}
        // Nothing was committed: a server error, or a lost connection (Unavailable). The
        // connection is not used again: a BEGIN that failed with an answer means it is in a
        // state no group expects (inside an aborted transaction, say).
        OneTrip::BeginFailed(e) => {
            let a = classify(e, link, &conn);
            link.discard(&conn);
            return a;
        }
        // The check failed without an answer (not sent: its parameters could not be encoded;
        // or the connection lost), so the writes were held back: nothing was committed, and
        // the transaction BEGIN opened is rolled back (or the connection dropped).
        OneTrip::Unsent(e) => {
            let a = match e {
                Some(e) => classify(e, link, &conn),
                None => failed(StoreError::Unavailable(Box::new(CommitterStopped))),
            };
            rollback(link, &conn).await;
            return a;
        }
        // The server answered with an error: it aborted the transaction (and rolled back at
        // the COMMIT).
        OneTrip::Failed(e) if e.code().is_some() => return classify(e, link, &conn),
        // The connection was lost with COMMIT sent or about to be.
        OneTrip::Failed(e) => {
            link.discard(&conn);
            return Attempt::Unknown(Arc::new(PostgresError::Commit(e)));
        }
    }

    // The one-round-trip attempt may have passed the gate on (its check failed after its
    // COMMIT went out): take it again, and the connection as it is now (letting go of the
    // old one, which may have been retired).
    drop((conn, stmts));
    let (conn, stmts) = match connect(link, sql, turn).await {
        Ok(c) => c,
        Err(a) => return a,
    };

    // Step 1: BEGIN and the re-reads, pipelined.
    let point_keys: Vec<Vec<u8>> = members
        .iter()
        .flat_map(|m| m.reads.keys.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut ranges: Vec<RangeRead> = Vec::new();
    for m in members {
        for (r, _) in &m.reads.ranges {
            if !ranges.contains(r) {
                ranges.push(r.clone());
            }
        }
    }
    let t = std::time::Instant::now();
    let validated = validate(&conn, &stmts, &point_keys, &ranges).await;
    tracing::trace!(
        keys = point_keys.len(),
        ranges = ranges.len(),
        micros = t.elapsed().as_micros() as u64,
        "postgres group validated"
    );
    let (mut current_keys, current_ranges) = match validated {
        Ok(v) => v,
        Err(e) => {
            let a = classify(e, link, &conn);
            rollback(link, &conn).await;
            return a;
        }
    };

    // Step 2: decide each member, in order.
    let mut accepted = Vec::with_capacity(members.len());
    let mut written: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut cleared: Vec<KeyRange> = Vec::new();
    let mut merged = Pending::default();
    for m in members {
        let stale_key = m.reads.keys.iter().any(|(k, seen)| {
            current_keys.get(k) != seen.as_ref()
                || written.contains(k)
                || cleared.iter().any(|c| c.contains(k))
        });
        let stale_range = m.reads.ranges.iter().any(|(r, seen)| {
            current_ranges
                .iter()
                .find(|(q, _)| q == r)
                .is_none_or(|(_, now)| now != seen)
                || r.touched_by(&written, &cleared)
        });
        let ok = !stale_key && !stale_range;
        if ok {
            accept_writes(&m.pending, &mut written, &mut cleared, &mut merged);
        }
        accepted.push(ok);
    }

    // Step 3: the writes and COMMIT, pipelined; the next group may send once they are out.
    let t = std::time::Instant::now();
    let params = WriteParams::of(&merged);
    let writes = Writes::start(&conn, &stmts, &params).await;
    // COMMIT is held back when a write could not be sent, or the connection is closed (then
    // it could not be sent either): nothing commits. Once COMMIT is handed to the
    // connection, a failure without an answer may follow a commit.
    if writes.unsent().is_some() || conn.is_closed() {
        let a = failed(StoreError::Unavailable(Box::new(CommitterStopped)));
        rollback(link, &conn).await;
        return a;
    }
    let commit = pipeline::start(conn.batch_execute("COMMIT")).await;
    let place = turn.pass();
    let (written, committed) = futures::join!(writes.finish(), commit.finish());
    tracing::trace!(
        micros = t.elapsed().as_micros() as u64,
        "postgres group written"
    );
    match (written, committed) {
        (Ok(()), Ok(())) => {
            // What the group saw and wrote is the newest this node knows; the cache learns
            // it before any member is answered.
            let checked = point_keys
                .into_iter()
                .map(|k| {
                    let v = current_keys.remove(&k);
                    (k, v)
                })
                .collect();
            Attempt::Done(
                accepted,
                Committed {
                    place,
                    checked: Some(checked),
                    writes: merged,
                },
            )
        }
        // A statement failed with an answer from the server: it aborted the transaction,
        // and answered the pipelined COMMIT with a rollback.
        (Err(e), _) if e.code().is_some() => classify(e, link, &conn),
        (Ok(()), Err(e)) if e.code().is_some() => classify(e, link, &conn),
        // The connection was lost with COMMIT sent or about to be: the server may have
        // committed before the answer was lost.
        (Err(e), _) | (Ok(()), Err(e)) => {
            link.discard(&conn);
            Attempt::Unknown(Arc::new(PostgresError::Commit(e)))
        }
    }
}

/// The group in one round trip, when no member read a range: every member is decided in the
/// node as if its reads held (step 2 alone), then `BEGIN`, one statement checking that every
/// key an accepted member read holds the value it saw (`check_values`, which aborts the
/// transaction otherwise) are sent together, and the writes with `COMMIT` once `BEGIN` is
/// answered. The check runs inside the SERIALIZABLE transaction before the writes, so an
/// accepted member's reads are the database's state there, as in step 1. See [`OneTrip`] for
/// the outcomes; on [`OneTrip::NotApplicable`] the caller runs the group in two round trips,
/// which finds out which members conflict.
async fn attempt_in_one_round_trip(
    client: &Object,
    stmts: &Statements,
    turn: &Turn<'_>,
    members: &[&Request],
    counters: &Counters,
) -> OneTrip {
    if members.iter().any(|m| !m.reads.ranges.is_empty()) {
        return OneTrip::NotApplicable;
    }
    let mut accepted = Vec::with_capacity(members.len());
    let mut written: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut cleared: Vec<KeyRange> = Vec::new();
    let mut merged = Pending::default();
    let mut expected: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
    for m in members {
        let stale = m
            .reads
            .keys
            .keys()
            .any(|k| written.contains(k) || cleared.iter().any(|c| c.contains(k)));
        if !stale {
            for (k, seen) in &m.reads.keys {
                let seen = seen.as_deref();
                if *expected.entry(k.as_slice()).or_insert(seen) != seen {
                    // Two members saw different values: one of them conflicts, and only
                    // the re-read tells which.
                    return OneTrip::NotApplicable;
                }
            }
            accept_writes(&m.pending, &mut written, &mut cleared, &mut merged);
        }
        accepted.push(!stale);
    }
    let checked_keys = in_index_order(expected.iter().map(|(k, v)| (*k, *v)));
    let shard_params: Vec<i32> = checked_keys.iter().map(|(s, _, _)| *s).collect();
    let key_params: Vec<&[u8]> = checked_keys.iter().map(|(_, k, _)| *k).collect();
    let value_params: Vec<Option<&[u8]>> = checked_keys.iter().map(|(_, _, v)| *v).collect();

    // BEGIN, the check, the writes and COMMIT are sent at once, in that order (a request goes
    // out when its future is first polled: `pipeline::start`), and the next group may send
    // right behind them: PostgreSQL runs the groups back to back, never waiting for the node.
    // A failed BEGIN writes nothing: the statements after it run outside a transaction, where
    // every write statement's SERIALIZABLE guard fails it (see `Sql`); the check runs before
    // the writes, and a failed check aborts the transaction, which COMMIT then rolls back.
    let check = async {
        if key_params.is_empty() {
            return Ok(());
        }
        client
            .query(
                &stmts.check_values,
                &[&shard_params, &key_params, &value_params],
            )
            .await
            .map(|_| ())
    };
    let begin = pipeline::start(client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")).await;
    if matches!(begin.done(), Some(Err(e)) if e.code().is_none()) {
        // BEGIN was not sent (the connection is closed), nor is anything after it.
        return match begin.finish().await {
            Err(e) => OneTrip::BeginFailed(e),
            Ok(()) => OneTrip::Unsent(None),
        };
    }
    let check = pipeline::start(check).await;
    // A check that failed without an answer on its first poll (not sent: its parameters
    // could not be encoded; or the connection is lost) holds the writes back: they would
    // commit unchecked.
    if matches!(check.done(), Some(Err(e)) if e.code().is_none()) {
        let begun = begin.finish().await;
        let checked = check.finish().await;
        return match (begun, checked) {
            (Err(e), _) if e.code().is_some() => OneTrip::BeginFailed(e),
            (_, checked) => OneTrip::Unsent(checked.err()),
        };
    }
    let params = WriteParams::of(&merged);
    let writes = Writes::start(client, stmts, &params).await;
    // As in the two round trips: COMMIT is held back when a write could not be sent, or the
    // connection is closed; once it is handed over, a failure without an answer may follow
    // a commit.
    if writes.unsent().is_some() || client.is_closed() {
        return OneTrip::Unsent(None);
    }
    let commit = pipeline::start(client.batch_execute("COMMIT")).await;
    let place = turn.pass();
    let (begun, checked, wrote, committed) = futures::join!(
        begin.finish(),
        check.finish(),
        writes.finish(),
        commit.finish()
    );
    match begun {
        Ok(()) => {}
        // The server failed BEGIN: nothing was written (see above).
        Err(e) if e.code().is_some() => return OneTrip::BeginFailed(e),
        // The connection was lost, with COMMIT sent.
        Err(e) => return OneTrip::Failed(e),
    }
    if let Err(e) = checked {
        // The check failed: the server aborted the transaction and answered COMMIT with a
        // rollback. Nothing was written.
        if e.code() == Some(&SqlState::DIVISION_BY_ZERO) {
            counters.checks_failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                members = members.len(),
                keys = key_params.len(),
                "postgres group check failed: two round trips"
            );
            return OneTrip::NotApplicable;
        }
        return OneTrip::Failed(e);
    }
    // The check passed. A write that failed with an answer aborted the transaction (a
    // division by zero here is the SERIALIZABLE guard: not a failed check, a transaction that
    // is not the one BEGIN opened, reported as it is); one without, a lost connection.
    match wrote.and(committed) {
        Ok(()) => {
            // The cache learns the accepted members' reads (the check found they hold).
            OneTrip::Done(Attempt::Done(
                accepted,
                Committed {
                    place,
                    checked: None,
                    writes: merged,
                },
            ))
        }
        Err(e) => OneTrip::Failed(e),
    }
}

/// How a one-round-trip attempt ended.
enum OneTrip {
    /// Committed (or decided: see the attempt).
    Done(Attempt),
    /// Not for this group, or its check failed (nothing written): run it in two round trips.
    NotApplicable,
    /// `BEGIN` failed: `COMMIT` was not sent, nothing was committed.
    BeginFailed(tokio_postgres::Error),
    /// The check failed without an answer from the server (not sent, or the connection
    /// lost): the writes and `COMMIT` were held back; the transaction `BEGIN` opened may be
    /// open.
    Unsent(Option<tokio_postgres::Error>),
    /// A statement failed after `BEGIN` succeeded: with an SQLSTATE, the server aborted the
    /// transaction (and the COMMIT rolled back); without, the connection was lost, perhaps
    /// with `COMMIT` sent.
    Failed(tokio_postgres::Error),
}

/// Adds an accepted member's writes to the group's: the keys it writes, the ranges it
/// clears, and the merged writes (a later write of a key wins; a clear drops earlier writes).
fn accept_writes(
    pending: &Pending,
    written: &mut BTreeSet<Vec<u8>>,
    cleared: &mut Vec<KeyRange>,
    merged: &mut Pending,
) {
    for c in &pending.cleared {
        cleared.push(c.clone());
        merged.clear_range(c);
    }
    for (k, v) in &pending.writes {
        written.insert(k.clone());
        merged.writes.insert(k.clone(), v.clone());
    }
}

type Validated = (BTreeMap<Vec<u8>, Vec<u8>>, Vec<(RangeRead, Vec<KeyValue>)>);

/// BEGIN, then every point key and range re-read, pipelined on `client`.
async fn validate(
    client: &Object,
    stmts: &Statements,
    keys: &[Vec<u8>],
    ranges: &[RangeRead],
) -> Result<Validated, tokio_postgres::Error> {
    let begin = client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE");
    let points = async {
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        let (shards, keys): (Vec<i32>, Vec<&[u8]>) = in_index_order(keys.iter().map(|k| (k, ())))
            .into_iter()
            .map(|(s, k, ())| (s, k))
            .unzip();
        let rows = client.query(&stmts.get_many, &[&shards, &keys]).await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<BTreeMap<Vec<u8>, Vec<u8>>, tokio_postgres::Error>>()
    };
    let range_reads = join_all(ranges.iter().map(|r| async move {
        let q = r.query();
        let stmt = q.pick([
            &stmts.range_forward,
            &stmts.range_reverse,
            &stmts.span_forward,
            &stmts.span_reverse,
        ]);
        let rows = client.query(stmt, &q.params()).await?;
        let pairs = rows
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<KeyValue>, tokio_postgres::Error>>()?;
        Ok::<_, tokio_postgres::Error>((r.clone(), pairs))
    }));
    let (b, p, r) = futures::join!(begin, points, range_reads);
    b?;
    let p = p?;
    let r = r.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((p, r))
}

/// The parameters of the merged writes' statements.
struct WriteParams<'a> {
    keys: KeyWrites<'a>,
    /// Every range clear, for one statement (a group clears many: each removed value clears
    /// the range of its chunks).
    ranges: (Vec<i32>, Vec<&'a [u8]>, Vec<&'a [u8]>),
}

impl<'a> WriteParams<'a> {
    fn of(pending: &'a Pending) -> Self {
        Self {
            keys: KeyWrites::of(pending),
            ranges: range_clears(pending.cleared.iter()),
        }
    }
}

type Execution<'a> = BoxFuture<'a, Result<u64, tokio_postgres::Error>>;

/// The merged writes' statements (range clears, key clears, sets), each started: sent, in
/// that order, on the connection.
struct Writes<'a>(Vec<pipeline::Started<Execution<'a>>>);

impl<'a> Writes<'a> {
    async fn start(client: &'a Object, stmts: &'a Statements, p: &'a WriteParams<'a>) -> Self {
        let (shards, begins, ends) = &p.ranges;
        let w = &p.keys;
        let mut statements: Vec<Execution<'a>> = Vec::new();
        if !begins.is_empty() {
            statements.push(Box::pin(async move {
                client
                    .execute(&stmts.delete_ranges, &[shards, begins, ends])
                    .await
            }));
        }
        if !w.deleted.is_empty() {
            statements.push(Box::pin(async move {
                client
                    .execute(&stmts.delete_keys, &[&w.deleted_shards, &w.deleted])
                    .await
            }));
        }
        if !w.set.is_empty() {
            statements.push(Box::pin(async move {
                client
                    .execute(&stmts.upsert, &[&w.set_shards, &w.set, &w.values])
                    .await
            }));
        }
        let mut started = Vec::with_capacity(statements.len());
        for statement in statements {
            started.push(pipeline::start(statement).await);
        }
        Self(started)
    }

    /// A statement that failed on its first poll without an answer from the server (its
    /// parameters could not be encoded, or the connection is closed): `COMMIT` must not
    /// follow, or the group would commit without it.
    fn unsent(&self) -> Option<&tokio_postgres::Error> {
        self.0.iter().find_map(|s| match s.done() {
            Some(Err(e)) if e.code().is_none() => Some(e),
            _ => None,
        })
    }

    async fn finish(self) -> Result<(), tokio_postgres::Error> {
        for outcome in join_all(self.0.into_iter().map(pipeline::Started::finish)).await {
            outcome?;
        }
        Ok(())
    }
}

/// Ends a failed group transaction; a connection that cannot is discarded.
async fn rollback(link: &Link, conn: &Arc<Object>) {
    if conn.batch_execute("ROLLBACK").await.is_err() {
        link.discard(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group of one member whose reply is kept, and what its transaction committed.
    fn done(
        place: u64,
        key: &[u8],
        value: &[u8],
    ) -> (InFlight, oneshot::Receiver<Result<(), StoreError>>) {
        let (reply, answer) = oneshot::channel();
        let mut writes = Pending::default();
        writes.writes.insert(key.to_vec(), Some(value.to_vec()));
        let group = InFlight {
            batch: vec![Request {
                reads: ReadSet::default(),
                pending: Pending::default(),
                reply,
            }],
            started: std::time::Instant::now(),
            outcomes: vec![Ok(())],
            fills: vec![CacheUpdate::Committed(Fill {
                members: vec![0],
                committed: Committed {
                    place,
                    checked: None,
                    writes,
                },
            })],
        };
        (group, answer)
    }

    #[test]
    fn a_group_formed_later_but_committed_earlier_does_not_overwrite_the_cache() {
        let cache = ReadCache::new(1 << 20);
        let commits = AtomicU64::new(3);
        let mut filled = 0;
        // The first group formed was re-run and committed third; the second committed second.
        let (first, mut first_answer) = done(3, b"k", b"newest");
        let (second, _) = done(2, b"k", b"older");
        finish(first, &cache, &mut filled, &commits);
        assert_eq!(cache.get(b"k"), Some(Some(b"newest".to_vec())));
        assert!(matches!(first_answer.try_recv(), Ok(Ok(()))), "answered");
        finish(second, &cache, &mut filled, &commits);
        assert_eq!(
            cache.get(b"k"),
            None,
            "forgotten, not set to the older value"
        );
        let (third, _) = done(4, b"k", b"latest");
        finish(third, &cache, &mut filled, &commits);
        assert_eq!(cache.get(b"k"), Some(Some(b"latest".to_vec())));
    }

    #[test]
    fn an_unknown_outcome_makes_the_groups_sent_before_it_forget() {
        let cache = ReadCache::new(1 << 20);
        let commits = AtomicU64::new(5);
        let mut filled = 0;
        let (reply, _answer) = oneshot::channel();
        let unknown = InFlight {
            batch: vec![Request {
                reads: ReadSet::default(),
                pending: Pending::default(),
                reply,
            }],
            started: std::time::Instant::now(),
            outcomes: vec![Err(StoreError::Conflict)],
            fills: vec![CacheUpdate::Forget],
        };
        finish(unknown, &cache, &mut filled, &commits);
        // A group formed after it, whose COMMIT went out before the lost one's.
        let (earlier, _) = done(4, b"k", b"maybe older");
        finish(earlier, &cache, &mut filled, &commits);
        assert_eq!(cache.get(b"k"), None);
        let (later, _) = done(6, b"k", b"after");
        finish(later, &cache, &mut filled, &commits);
        assert_eq!(cache.get(b"k"), Some(Some(b"after".to_vec())));
    }
}
