//! The group-commit transaction: reads from a read-only snapshot, records what it read, and
//! hands its reads and buffered writes to the node's [`GroupCommitter`] at commit.
//!
//! - Reads run in a `REPEATABLE READ READ ONLY` PostgreSQL transaction on a pooled
//!   connection, opened at the first read (a write-only transaction never takes one). Such a
//!   transaction takes no predicate locks and is never aborted, and its snapshot is taken
//!   after every commit this node acknowledged before the read.
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

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};

use super::group::{GroupCommitter, RangeRead, ReadSet};
use super::{Pending, PostgresError, Sql, checkout_error, pg_error, rows_to_pairs};
use crate::state::shards;
use crate::store::{KeyRange, KeyValue, RangeOptions, StoreError, Transaction, check_write};

/// A transaction of a group-committing [`PostgresStore`](super::PostgresStore).
pub(super) struct OptimisticTransaction {
    pub(super) pool: Pool,
    pub(super) sql: Arc<Sql>,
    pub(super) committer: Arc<GroupCommitter>,
    /// The snapshot connection, once a read needed it.
    pub(super) reader: Option<Object>,
    pub(super) pending: Pending,
    pub(super) reads: ReadSet,
    pub(super) tx_bytes: usize,
    /// Whether reads may come from the cache.
    use_cache: bool,
    /// Whether any read came from the cache (the reads must then be validated).
    from_cache: bool,
    /// The cache's generation when the snapshot began.
    snapshot_generation: u64,
}

impl OptimisticTransaction {
    pub(super) fn new(pool: Pool, sql: Arc<Sql>, committer: Arc<GroupCommitter>) -> Self {
        Self {
            pool,
            sql,
            committer,
            reader: None,
            pending: Pending::default(),
            reads: ReadSet::default(),
            tx_bytes: 0,
            use_cache: false,
            from_cache: false,
            snapshot_generation: 0,
        }
    }

    /// Runs one read statement in the snapshot. The first read takes a connection and
    /// sends `BEGIN … READ ONLY` pipelined with the statement (one round trip for both).
    async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        if let Some(client) = &self.reader {
            let stmt = client.prepare_cached(sql).await.map_err(pg_error)?;
            return client.query(&stmt, params).await.map_err(pg_error);
        }
        let client = self.pool.get().await.map_err(checkout_error)?;
        let stmt = client.prepare_cached(sql).await.map_err(pg_error)?;
        // Before BEGIN: the snapshot sees every commit of this generation.
        self.snapshot_generation = self.committer.cache().generation();
        // Both are sent when first polled, BEGIN first (`join!` polls in order).
        let (begun, rows) = futures::join!(
            client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
            client.query(&stmt, params)
        );
        let keep = begun.is_ok() && rows.is_ok();
        if keep {
            self.reader = Some(client);
        } else {
            end_snapshot(client);
        }
        begun.map_err(pg_error)?;
        rows.map_err(pg_error)
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

    /// Releases the snapshot connection (its read-only transaction ends in a spawned task).
    fn release_reader(&mut self) {
        if let Some(client) = self.reader.take() {
            end_snapshot(client);
        }
    }
}

/// Ends a snapshot transaction before the connection returns to the pool (without a runtime
/// the connection is discarded instead).
fn end_snapshot(client: Object) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                if client.batch_execute("ROLLBACK").await.is_err() {
                    drop(Object::take(client));
                }
            });
        }
        Err(_) => drop(Object::take(client)),
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
        if let Some(v) = self.pending.writes.get(key) {
            return Ok(v.clone());
        }
        if self.cleared_locally(key) {
            return Ok(None);
        }
        if let Some(seen) = self.reads.keys.get(key) {
            return Ok(seen.clone());
        }
        if self.use_cache
            && let Some(guess) = self.committer.cache().get(key)
        {
            self.from_cache = true;
            self.reads.keys.insert(key.to_vec(), guess.clone());
            return Ok(guess);
        }
        let sql = self.sql.clone();
        let shard = shards::shard_of(key);
        let rows = self.query(&sql.get, &[&shard, &key]).await?;
        let value = rows
            .first()
            .map(|r| r.try_get::<_, Vec<u8>>(0))
            .transpose()
            .map_err(|e| StoreError::Fatal(Box::new(PostgresError::Statement(e))))?;
        self.committer
            .cache()
            .fill(self.snapshot_generation, key, &value);
        self.reads.keys.insert(key.to_vec(), value.clone());
        Ok(value)
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
        let rows = self.query(q.sql(&sql), &q.params()).await?;
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
