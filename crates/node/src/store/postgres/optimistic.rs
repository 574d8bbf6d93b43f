//! The group-commit transaction: reads from a read-only snapshot, records what it read, and
//! hands its reads and buffered writes to the node's [`GroupCommitter`] at commit.
//!
//! - A first read of keys from the server runs alone on a pooled connection, outside any
//!   transaction block (PostgreSQL gives the statement a snapshot of its own; no `BEGIN`, no
//!   `ROLLBACK`): most transactions that read from the server read one key (a status read,
//!   the first read of a wait). A second read opens a `REPEATABLE READ READ ONLY`
//!   transaction on that connection and, in the same round trip, re-reads everything read
//!   so far: if anything differs, the read fails with [`StoreError::Conflict`] (retried by
//!   `transact`; a wrong guess from the cache is dropped from it), so every value a
//!   transaction is given from the server comes from one snapshot. A first read of a range
//!   (a listing, a history: usually followed by more reads) opens the snapshot with it
//!   (`BEGIN` pipelined with the statement), as every read did before. A snapshot takes no
//!   predicate locks and is never aborted; every snapshot is taken after every commit this
//!   node acknowledged before the read. A write-only transaction never takes a connection.
//! - Reads see the transaction's own writes (overlaid in the client). Each value read from the
//!   server is recorded: a key with the value seen (or its absence), a range with the exact
//!   query and rows seen.
//! - After [`cached_reads`](crate::store::Transaction::cached_reads), a key the node's
//!   [cache](super::cache) knows is read from it (no round trip); it is recorded like any
//!   other read, so the group checks it.
//! - A transaction that wrote nothing and read nothing from the cache commits at once (it
//!   read one consistent snapshot, as a read-only FoundationDB transaction does). Any other
//!   joins a group; see [`group`](super::group) for how the group decides and what it
//!   guarantees.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};

use super::group::{GroupCommitter, RangeRead, ReadSet};
use super::{Pending, PostgresError, Sql, checkout_error, in_index_order, pg_error, rows_to_pairs};
use crate::state::shards;
use crate::store::{KeyRange, KeyValue, RangeOptions, StoreError, Transaction, check_write};

/// A transaction of a group-committing [`PostgresStore`](super::PostgresStore).
pub(super) struct OptimisticTransaction {
    pub(super) pool: Pool,
    pub(super) sql: Arc<Sql>,
    pub(super) committer: Arc<GroupCommitter>,
    /// The connection reads run on, once a read needed it.
    reader: Reader,
    pub(super) pending: Pending,
    pub(super) reads: ReadSet,
    pub(super) tx_bytes: usize,
    /// Whether reads may come from the cache.
    use_cache: bool,
    /// Whether any read came from the cache (the reads must then be validated).
    from_cache: bool,
    /// The cache's generation when the snapshot began.
    snapshot_generation: u64,
    /// A second read failed to open the snapshot: every later read fails.
    broken: bool,
}

impl OptimisticTransaction {
    pub(super) fn new(pool: Pool, sql: Arc<Sql>, committer: Arc<GroupCommitter>) -> Self {
        Self {
            pool,
            sql,
            committer,
            reader: Reader::None,
            pending: Pending::default(),
            reads: ReadSet::default(),
            tx_bytes: 0,
            use_cache: false,
            from_cache: false,
            snapshot_generation: 0,
            broken: false,
        }
    }

    /// Runs one read statement: a first point read alone, a first range read (usually the
    /// start of several reads: a listing, a history) opening the snapshot, the second read
    /// (with the re-reads of the first) opening the snapshot, the others in the snapshot.
    async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        first: First,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        if self.broken {
            // An earlier read could not open the snapshot (it failed, or was dropped while
            // opening it): the reads so far are not one snapshot's, so no further read may be
            // answered.
            return Err(StoreError::Conflict);
        }
        // The client stays in `self.reader` while a statement runs in a snapshot: if this
        // future is dropped meanwhile, the transaction's release still rolls it back.
        if let Reader::Snapshot(client) = &self.reader {
            return run(client, sql, params).await;
        }
        if matches!(self.reader, Reader::Single(_)) {
            if let Reader::Single(client) = std::mem::replace(&mut self.reader, Reader::None) {
                self.reader = Reader::Snapshot(client);
            }
            // Before BEGIN: the snapshot sees every commit of this generation.
            self.snapshot_generation = self.committer.cache().generation();
            // Broken until the snapshot holds: if this future is dropped before, no later
            // read may be answered (BEGIN or the re-reads may not have run).
            self.broken = true;
            let result = match &self.reader {
                Reader::Snapshot(client) => self.open_snapshot(client, sql, params).await,
                _ => Err(StoreError::Fatal(Box::new(super::NoConnection))),
            };
            match result {
                Ok(_) => self.broken = false,
                Err(_) => self.release_reader(),
            }
            return result;
        }
        let client = self.pool.get().await.map_err(checkout_error)?;
        let stmt = client.prepare_cached(sql).await.map_err(pg_error)?;
        // Before the statement (or BEGIN): its snapshot sees every commit of this generation.
        self.snapshot_generation = self.committer.cache().generation();
        if first == First::Alone {
            // No transaction is open on the connection: if this future is dropped, it goes
            // back to the pool as it came.
            let rows = client.query(&stmt, params).await;
            if rows.is_ok() {
                self.reader = Reader::Single(client);
            }
            return rows.map_err(pg_error);
        }
        self.reader = Reader::Snapshot(client);
        // Broken until BEGIN and the read are answered (a dropped future may have sent
        // neither: later reads would then each run alone).
        self.broken = true;
        let Reader::Snapshot(client) = &self.reader else {
            return Err(StoreError::Fatal(Box::new(super::NoConnection)));
        };
        // Both are sent when first polled, BEGIN first (`join!` polls in order).
        let (begun, rows) = futures::join!(
            client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            client.query(&stmt, params)
        );
        let result = begun.and(rows).map_err(pg_error);
        match result {
            Ok(_) => self.broken = false,
            Err(_) => self.release_reader(),
        }
        result
    }

    /// `BEGIN … READ ONLY`, the re-reads of every key read so far and the statement,
    /// pipelined (one round trip). The keys read so far must hold what the snapshot holds:
    /// else `Conflict`. No range was read yet: a first range read opens the snapshot itself,
    /// and a transaction is `Single` only after a point read.
    async fn open_snapshot(
        &self,
        client: &Object,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let (shards, key_params): (Vec<i32>, Vec<&[u8]>) = in_index_order(self.reads.keys.iter())
            .into_iter()
            .map(|(s, k, _)| (s, k))
            .unzip();
        let get_many = client
            .prepare_cached(&self.sql.get_many)
            .await
            .map_err(pg_error)?;
        let stmt = client.prepare_cached(sql).await.map_err(pg_error)?;
        // Sent in the order polled: BEGIN, the re-reads, the read.
        let begin = client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        let points = async {
            if key_params.is_empty() {
                return Ok(Vec::new());
            }
            client.query(&get_many, &[&shards, &key_params]).await
        };
        let (begun, points, rows) = futures::join!(begin, points, client.query(&stmt, params));
        begun.map_err(pg_error)?;
        let now: BTreeMap<Vec<u8>, Vec<u8>> = rows_to_pairs(&points.map_err(pg_error)?)?
            .into_iter()
            .collect();
        let mut same = true;
        for (k, seen) in &self.reads.keys {
            if now.get(k) != seen.as_ref() {
                same = false;
                // Perhaps a wrong guess from the cache: the retry must not read it again.
                self.committer.cache().forget(k);
            }
        }
        let rows = rows.map_err(pg_error)?;
        if same {
            Ok(rows)
        } else {
            Err(StoreError::Conflict)
        }
    }

    /// The value of `key` as this transaction knows it without the server: its own write or
    /// clear, an earlier read, or (after `cached_reads`) the node's cache, recorded as read.
    fn known(&mut self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.pending.writes.get(key) {
            return Some(v.clone());
        }
        if self.cleared_locally(key) {
            return Some(None);
        }
        if let Some(seen) = self.reads.keys.get(key) {
            return Some(seen.clone());
        }
        if self.use_cache
            && let Some(guess) = self.committer.cache().get(key)
        {
            self.from_cache = true;
            self.reads.keys.insert(key.to_vec(), guess.clone());
            return Some(guess);
        }
        None
    }

    /// Records a value read from the server (and offers it to the cache).
    fn read_from_server(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        self.committer
            .cache()
            .fill(self.snapshot_generation, key, &value);
        self.reads.keys.insert(key.to_vec(), value);
    }

    /// Whether a local write or clear may change what a read of `range` returns.
    fn touched_locally(&self, range: &KeyRange) -> bool {
        self.pending
            .writes
            .range::<[u8], _>(range.bounds())
            .next()
            .is_some()
            || self
                .pending
                .cleared
                .iter()
                .any(|c| c.begin < range.end && range.begin < c.end)
    }

    fn cleared_locally(&self, key: &[u8]) -> bool {
        self.pending.cleared.iter().any(|c| c.contains(key))
    }

    /// Releases the read connection.
    fn release_reader(&mut self) {
        release(std::mem::replace(&mut self.reader, Reader::None));
    }
}

/// The connection a transaction reads on.
enum Reader {
    /// None yet.
    None,
    /// One read ran on it, alone: no transaction is open.
    Single(Object),
    /// A `REPEATABLE READ READ ONLY` transaction is open on it.
    Snapshot(Object),
}

/// How a transaction's first read from the server runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum First {
    /// Alone, outside a transaction block.
    Alone,
    /// In a snapshot opened with it.
    Snapshot,
}

/// Runs one statement on `client`.
async fn run(
    client: &Object,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let stmt = client.prepare_cached(sql).await.map_err(pg_error)?;
    client.query(&stmt, params).await.map_err(pg_error)
}

/// Returns a read connection to the pool: a snapshot transaction is ended first (in a
/// spawned task; without a runtime the connection is discarded instead), a connection with no
/// transaction open goes back as it is (the pool checks that it is still open).
fn release(reader: Reader) {
    match reader {
        Reader::None => {}
        Reader::Single(client) => drop(client),
        Reader::Snapshot(client) => match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        },
    }
}

/// A member that wrote nothing cannot have committed anything: a group whose outcome is
/// unknown is, for it, only a failed check, which `transact` retries.
fn nothing_written_is_unavailable(
    wrote: bool,
    outcome: Result<(), StoreError>,
) -> Result<(), StoreError> {
    match outcome {
        Err(StoreError::MaybeCommitted(source)) if !wrote => Err(StoreError::Unavailable(source)),
        other => other,
    }
}

impl Drop for OptimisticTransaction {
    fn drop(&mut self) {
        self.release_reader();
    }
}

#[async_trait]
impl Transaction for OptimisticTransaction {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(known) = self.known(key) {
            return Ok(known);
        }
        let sql = self.sql.clone();
        let shard = shards::shard_of(key);
        let rows = self.query(&sql.get, &[&shard, &key], First::Alone).await?;
        let value = rows
            .first()
            .map(|r| r.try_get::<_, Vec<u8>>(0))
            .transpose()
            .map_err(|e| StoreError::Fatal(Box::new(PostgresError::Statement(e))))?;
        self.read_from_server(key, value.clone());
        Ok(value)
    }

    async fn get_many(&mut self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut wanted: BTreeSet<&[u8]> = BTreeSet::new();
        for key in keys {
            if self.known(key).is_none() {
                wanted.insert(key);
            }
        }
        if !wanted.is_empty() {
            let sql = self.sql.clone();
            let (shard_params, key_params): (Vec<i32>, Vec<&[u8]>) =
                in_index_order(wanted.iter().map(|k| (*k, ())))
                    .into_iter()
                    .map(|(s, k, ())| (s, k))
                    .unzip();
            let rows = self
                .query(&sql.get_many, &[&shard_params, &key_params], First::Alone)
                .await?;
            let mut found: BTreeMap<Vec<u8>, Vec<u8>> = rows_to_pairs(&rows)?.into_iter().collect();
            for key in wanted {
                let value = found.remove(key);
                self.read_from_server(key, value);
            }
        }
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            // Every key is known now (read above, or known before).
            out.push(match self.known(key) {
                Some(v) => v,
                None => self.get(key).await?,
            });
        }
        Ok(out)
    }

    async fn get_range(
        &mut self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        if range.begin >= range.end || opts.limit == Some(0) {
            return Ok(Vec::new());
        }
        // With local changes in the range, the server's first `limit` rows may not be the
        // merged first `limit`: read the whole range then.
        let local = self.touched_locally(range);
        let limit = if local { None } else { opts.limit };
        let read = RangeRead {
            range: range.clone(),
            reverse: opts.reverse,
            limit: limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        };
        let sql = self.sql.clone();
        let q = read.query();
        let rows = self
            .query(q.sql(&sql), &q.params(), First::Snapshot)
            .await?;
        let rows = rows_to_pairs(&rows)?;
        self.reads.ranges.push((read, rows.clone()));
        if !local {
            return Ok(rows);
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = rows
            .into_iter()
            .filter(|(k, _)| !self.cleared_locally(k))
            .collect();
        for (k, v) in self.pending.writes.range::<[u8], _>(range.bounds()) {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let n = opts.limit.unwrap_or(usize::MAX);
        Ok(if opts.reverse {
            merged.into_iter().rev().take(n).collect()
        } else {
            merged.into_iter().take(n).collect()
        })
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        check_write(key, value, &mut self.tx_bytes)?;
        self.pending
            .writes
            .insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn clear(&mut self, key: &[u8]) {
        self.pending.writes.insert(key.to_vec(), None);
    }

    fn clear_range(&mut self, range: &KeyRange) {
        self.pending.clear_range(range);
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        self.release_reader();
        if self.broken {
            return Err(StoreError::Conflict);
        }
        if self.pending.is_empty() && !self.from_cache {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let reads = std::mem::take(&mut self.reads);
        let wrote = !pending.is_empty();
        nothing_written_is_unavailable(wrote, self.committer.commit(reads, pending).await)
    }

    fn cached_reads(&mut self) {
        self.use_cache = true;
    }

    async fn validate_reads(mut self: Box<Self>) -> Result<(), StoreError> {
        // A commit without the writes: checked by a group only if a read came from the cache.
        self.pending = Pending::default();
        self.commit().await
    }
}
