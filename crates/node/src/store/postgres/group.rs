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
//! if one differs) are sent together, and the writes with `COMMIT` once `BEGIN` is answered
//! (a failed `BEGIN` then means nothing was committed, and a node stopped in between holds
//! no row locks), always after the check ([`pipeline`]). A failed check wrote nothing (the
//! `COMMIT` rolled back), and the group runs again as above, which tells which members
//! conflict. Two members that saw different values of one key go to the steps above
//! at once.
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
use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};
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
/// Groups committing at once, each on its own connection. One: measured with 4 (issue 17,
/// docs/benchmarks.md), concurrent groups of one node abort each other in PostgreSQL's SSI
/// (they read and write the same partitions' keys) and throughput fell.
pub(super) const COMMITTERS: usize = 1;
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
}

#[derive(Default)]
struct Counters {
    groups: AtomicU64,
    committed: AtomicU64,
    conflicts: AtomicU64,
    group_retries: AtomicU64,
    one_round_trip: AtomicU64,
    checks_failed: AtomicU64,
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
    /// Starts `committers` committer tasks (at least 1) on the current runtime, with a
    /// cache of recent values of `cache_budget` bytes.
    pub(super) fn start(pool: Pool, sql: Arc<Sql>, committers: usize, cache_budget: usize) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let counters = Arc::new(Counters::default());
        let cache = Arc::new(ReadCache::new(cache_budget));
        for _ in 0..committers.max(1) {
            tokio::spawn(run(
                pool.clone(),
                sql.clone(),
                receiver.clone(),
                counters.clone(),
                cache.clone(),
            ));
        }
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
        }
    }
}

async fn run(
    pool: Pool,
    sql: Arc<Sql>,
    receiver: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Request>>>,
    counters: Arc<Counters>,
    cache: Arc<ReadCache>,
) {
    let mut conn: Option<Object> = None;
    loop {
        // One committer at a time takes what is waiting; the others are committing theirs.
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
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
        };
        let started = std::time::Instant::now();
        let outcomes = commit_group(&pool, &sql, &mut conn, &batch, &counters, &cache).await;
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
}

/// How one attempt at a group ended.
enum Attempt {
    /// Committed: per member, accepted (`true`) or conflicting.
    Done(Vec<bool>),
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

async fn commit_group(
    pool: &Pool,
    sql: &Sql,
    conn: &mut Option<Object>,
    batch: &[Request],
    counters: &Counters,
    cache: &ReadCache,
) -> Vec<Result<(), StoreError>> {
    let members: Vec<&Request> = batch.iter().collect();
    let outcome = attempt_with_retries(pool, sql, conn, &members, counters, cache).await;
    match outcome {
        Attempt::Failed(_, FailKind::Fatal) if members.len() > 1 => {
            // One member's write may be the cause: commit each on its own.
            let mut out = Vec::with_capacity(members.len());
            for m in &members {
                let single = attempt_with_retries(pool, sql, conn, &[m], counters, cache).await;
                out.extend(outcomes(single, 1, counters));
            }
            out
        }
        other => outcomes(other, members.len(), counters),
    }
}

fn outcomes(attempt: Attempt, n: usize, counters: &Counters) -> Vec<Result<(), StoreError>> {
    match attempt {
        Attempt::Done(accepted) => {
            counters.groups.fetch_add(1, Ordering::Relaxed);
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
        Attempt::Unknown(e) => (0..n)
            .map(|_| Err(StoreError::MaybeCommitted(Box::new(GroupFailed(e.clone())))))
            .collect(),
    }
}

async fn attempt_with_retries(
    pool: &Pool,
    sql: &Sql,
    conn: &mut Option<Object>,
    members: &[&Request],
    counters: &Counters,
    cache: &ReadCache,
) -> Attempt {
    let mut tries = 0;
    loop {
        let attempt = attempt(pool, sql, conn, members, counters, cache).await;
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
fn classify(e: tokio_postgres::Error, conn: &mut Option<Object>) -> Attempt {
    match pg_error(e) {
        StoreError::Conflict => Attempt::Aborted,
        StoreError::Unavailable(source) => {
            // The connection is suspect: take a fresh one next time.
            if let Some(c) = conn.take() {
                drop(Object::take(c));
            }
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

/// One attempt at committing `members` as one PostgreSQL transaction.
async fn attempt(
    pool: &Pool,
    sql: &Sql,
    conn: &mut Option<Object>,
    members: &[&Request],
    counters: &Counters,
    cache: &ReadCache,
) -> Attempt {
    // A connection that closed while no group ran (server restart, idle timeout) is
    // replaced before anything is sent: a statement failing on it could not tell whether a
    // pipelined COMMIT went out.
    if conn.as_ref().is_some_and(|c| c.is_closed())
        && let Some(c) = conn.take()
    {
        drop(Object::take(c));
    }
    if conn.is_none() {
        match pool.get().await {
            Ok(c) => *conn = Some(c),
            Err(e) => return failed(super::checkout_error(e)),
        }
    }
    let Some(client) = conn.as_ref() else {
        return failed(StoreError::Unavailable(Box::new(CommitterStopped)));
    };
    let stmts = match Statements::prepare(client, sql).await {
        Ok(s) => s,
        Err(e) => return classify(e, conn),
    };

    match attempt_in_one_round_trip(client, &stmts, members, counters, cache).await {
        OneTrip::Done(a) => {
            counters.one_round_trip.fetch_add(1, Ordering::Relaxed);
            return a;
        }
        OneTrip::NotApplicable => {}
        // Nothing was committed: a server error, or a lost connection (Unavailable). The
        // connection is not used again: a BEGIN that failed with an answer means it is in a
        // state no group expects (inside an aborted transaction, say).
        OneTrip::BeginFailed(e) => {
            let a = classify(e, conn);
            if let Some(c) = conn.take() {
                drop(Object::take(c));
            }
            return a;
        }
        // The check failed without an answer (not sent: its parameters could not be encoded;
        // or the connection lost), so the writes were held back: nothing was committed, and
        // the transaction BEGIN opened is rolled back (or the connection dropped).
        OneTrip::Unsent(e) => {
            let a = match e {
                Some(e) => classify(e, conn),
                None => failed(StoreError::Unavailable(Box::new(CommitterStopped))),
            };
            rollback(conn).await;
            return a;
        }
        // The server answered with an error: it aborted the transaction (and rolled back at
        // the COMMIT).
        OneTrip::Failed(e) if e.code().is_some() => return classify(e, conn),
        // The connection was lost with COMMIT sent or about to be.
        OneTrip::Failed(e) => {
            if let Some(c) = conn.take() {
                drop(Object::take(c));
            }
            cache.clear();
            return Attempt::Unknown(Arc::new(PostgresError::Commit(e)));
        }
    }

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
    let validated = validate(client, &stmts, &point_keys, &ranges).await;
    tracing::trace!(
        keys = point_keys.len(),
        ranges = ranges.len(),
        micros = t.elapsed().as_micros() as u64,
        "postgres group validated"
    );
    let (current_keys, current_ranges) = match validated {
        Ok(v) => v,
        Err(e) => {
            let a = classify(e, conn);
            rollback(conn).await;
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

    // Step 3: the writes and COMMIT, pipelined.
    let Some(client) = conn.as_ref() else {
        return failed(StoreError::Unavailable(Box::new(CommitterStopped)));
    };
    let writes = send_writes(client, &stmts, &merged);
    let commit = client.batch_execute("COMMIT");
    let t = std::time::Instant::now();
    let (written, committed) = futures::join!(writes, commit);
    tracing::trace!(
        micros = t.elapsed().as_micros() as u64,
        "postgres group written"
    );
    match (written, committed) {
        (Ok(()), Ok(())) => {
            // Before any member is answered: what the group saw and wrote is the newest
            // this node knows.
            cache.committed(
                point_keys
                    .iter()
                    .map(|k| (k.as_slice(), current_keys.get(k).map(Vec::as_slice))),
                &merged,
            );
            Attempt::Done(accepted)
        }
        // A statement failed with an answer from the server: it aborted the transaction,
        // and answered the pipelined COMMIT with a rollback.
        (Err(e), _) if e.code().is_some() => classify(e, conn),
        (Ok(()), Err(e)) if e.code().is_some() => classify(e, conn),
        // The connection was lost with COMMIT sent or about to be: the server may have
        // committed before the answer was lost.
        (Err(e), _) | (Ok(()), Err(e)) => {
            if let Some(c) = conn.take() {
                drop(Object::take(c));
            }
            cache.clear();
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
    members: &[&Request],
    counters: &Counters,
    cache: &ReadCache,
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

    // BEGIN and the check are sent together; the writes and COMMIT once BEGIN is answered
    // (the server is then still running the check, so this costs little), and always after
    // the check (see `pipeline`). So a failed BEGIN (a connection that died between groups)
    // means nothing was committed, as in the two-round-trip path; and a node that stops
    // between the two sends (frozen, cut off) leaves an open transaction that holds no row
    // locks, which other nodes' writes would otherwise wait on until its connection closes.
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
    // A check that failed without an answer from the server before the writes go (it was
    // not sent: its parameters could not be encoded; or the connection is lost) holds the
    // writes back: they would commit unchecked. A check the server failed aborted the
    // transaction: the writes and COMMIT go as usual, and the COMMIT rolls back.
    let check_failed = std::sync::atomic::AtomicBool::new(false);
    let check = async {
        let r = check.await;
        let unanswered = matches!(&r, Err(e) if e.code().is_none());
        check_failed.store(unanswered, Ordering::Relaxed);
        r
    };
    let writes_and_commit = async {
        if check_failed.load(Ordering::Relaxed) {
            return None;
        }
        Some(futures::join!(
            send_writes(client, stmts, &merged),
            client.batch_execute("COMMIT")
        ))
    };
    let (begun, checked, sent) = pipeline::then(
        client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE"),
        Result::is_ok,
        check,
        writes_and_commit,
    )
    .await;
    if let Err(e) = begun {
        return OneTrip::BeginFailed(e);
    }
    let (wrote, committed) = match (sent.flatten(), checked) {
        (Some(both), checked) => {
            if let Err(e) = checked {
                // The check failed: the server aborted the transaction and answered COMMIT
                // with a rollback. Nothing was written.
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
            both
        }
        (None, Err(e)) => return OneTrip::Unsent(Some(e)),
        // Not reached: the writes are held back only after a failed check.
        (None, Ok(())) => return OneTrip::Unsent(None),
    };
    // The check passed. A write that failed with an answer aborted the transaction (a
    // division by zero here is the SERIALIZABLE guard: not a failed check, a transaction that
    // is not the one BEGIN opened, reported as it is); one without, a lost connection.
    match wrote.and(committed) {
        Ok(()) => {
            cache.committed(expected.iter().map(|(k, v)| (*k, *v)), &merged);
            OneTrip::Done(Attempt::Done(accepted))
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

/// The merged writes, in order (range clears, key clears, sets), each one statement,
/// pipelined: every statement is sent before the first answer is awaited.
async fn send_writes(
    client: &Object,
    stmts: &Statements,
    pending: &Pending,
) -> Result<(), tokio_postgres::Error> {
    let w = KeyWrites::of(pending);
    // Every range clear in one statement (a group clears many: each removed value clears
    // the range of its chunks).
    let (shards, begins, ends) = range_clears(pending.cleared.iter());
    let ranges = async {
        if begins.is_empty() {
            Ok(0)
        } else {
            client
                .execute(&stmts.delete_ranges, &[&shards, &begins, &ends])
                .await
        }
    };
    let dels = async {
        if w.deleted.is_empty() {
            Ok(0)
        } else {
            client
                .execute(&stmts.delete_keys, &[&w.deleted_shards, &w.deleted])
                .await
        }
    };
    let sets = async {
        if w.set.is_empty() {
            Ok(0)
        } else {
            client
                .execute(&stmts.upsert, &[&w.set_shards, &w.set, &w.values])
                .await
        }
    };
    let (r, d, s) = futures::join!(ranges, dels, sets);
    r?;
    d?;
    s?;
    Ok(())
}

/// Ends a failed group transaction; a connection that cannot is dropped.
async fn rollback(conn: &mut Option<Object>) {
    if let Some(c) = conn.as_ref()
        && c.batch_execute("ROLLBACK").await.is_err()
        && let Some(c) = conn.take()
    {
        drop(Object::take(c));
    }
}
