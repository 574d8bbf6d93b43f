//! The table: created on first use, and moved from the layout of earlier versions.
//!
//! Rows are `(shard, key, value)` with the primary key `(shard, key)`: each partition's keys
//! are contiguous in the index (`state::shards`), so nodes that own different partitions
//! write different index pages, and PostgreSQL's page-level predicate locks stop pairing
//! their transactions into false serialization failures (docs/storage-backends.md,
//! "Shards"). Tables written before the shard column existed (`key` alone as primary key)
//! are moved to this layout on connect, in one transaction that holds the table locked.

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;

use super::{PostgresError, pg_error};
use crate::state::shards;
use crate::store::StoreError;

/// How full inserts leave the table's pages, in percent (PostgreSQL's default is 100).
/// Measured (docs/benchmarks.md, issue 17): hello-3 at C = 64, six A/B pairs, median
/// +3.5 % with 80; about half of the updates were HOT at 100.
pub(super) const FILLFACTOR: u32 = 80;

/// Keys given their shard per statement while moving an older table.
const MOVE_BATCH: i64 = 10_000;

/// The table's comment: names the layout, so that a later version whose shard function
/// differs (another shard count, hash or keyspace list) finds out instead of missing rows.
pub(super) const LAYOUT: &str = "perdure kv layout 2: primary key (shard, key), \
     shards by state::shards (256, FNV-1a of the instance or entity id)";

/// Creates `table` if it is missing, and moves it to the sharded layout if it has the old one.
pub(super) async fn prepare(client: &Object, table: &str) -> Result<(), StoreError> {
    // Pages are filled to [`FILLFACTOR`] % by inserts, so that an update (an instance
    // record, rewritten by every episode) usually finds room on its own page: a HOT update,
    // which adds no index entry.
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {table} (shard int4 NOT NULL, key bytea NOT NULL, \
         value bytea NOT NULL, PRIMARY KEY (shard, key)) WITH (fillfactor = {FILLFACTOR})"
    );
    if let Err(e) = client.batch_execute(&create).await {
        // Two nodes creating the table at once: one loses a race on the catalog.
        if e.code() != Some(&SqlState::UNIQUE_VIOLATION) {
            return Err(pg_error(e));
        }
    }
    if !has_shard_column(client, table).await? {
        client.batch_execute("BEGIN").await.map_err(pg_error)?;
        let moved = move_to_shards(client, table).await;
        let end = if moved.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = client.batch_execute(end).await.map_err(pg_error);
        moved?;
        ended?;
    }
    check_layout(client, table).await
}

/// Stamps a table without a comment with [`LAYOUT`]; refuses a table stamped otherwise.
async fn check_layout(client: &Object, table: &str) -> Result<(), StoreError> {
    let found: Option<String> = client
        .query_one(
            "SELECT obj_description($1::text::regclass, 'pg_class')",
            &[&table],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    match found {
        Some(f) if f == LAYOUT => Ok(()),
        Some(f) => Err(StoreError::Fatal(Box::new(PostgresError::Layout {
            table: table.to_owned(),
            found: f,
        }))),
        None => client
            .batch_execute(&format!("COMMENT ON TABLE {table} IS '{LAYOUT}'"))
            .await
            .map_err(pg_error),
    }
}

async fn has_shard_column(client: &Object, table: &str) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = 'shard')",
            &[&table],
        )
        .await
        .map_err(pg_error)?;
    row.try_get(0).map_err(pg_error)
}

/// Inside a transaction: adds the shard column, fills it, and makes `(shard, key)` the
/// primary key. Another node doing the same waits on the lock, then finds the column.
async fn move_to_shards(client: &Object, table: &str) -> Result<(), StoreError> {
    client
        .batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .await
        .map_err(pg_error)?;
    if has_shard_column(client, table).await? {
        return Ok(());
    }
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} ADD COLUMN shard int4 NOT NULL DEFAULT {}",
            shards::GLOBAL
        ))
        .await
        .map_err(pg_error)?;
    let page = client
        .prepare(&format!(
            "SELECT key FROM {table} WHERE key > $1 ORDER BY key LIMIT {MOVE_BATCH}"
        ))
        .await
        .map_err(pg_error)?;
    let update = client
        .prepare(&format!(
            "UPDATE {table} AS t SET shard = u.s FROM unnest($1::bytea[], $2::int4[]) AS u(k, s) \
             WHERE t.key = u.k"
        ))
        .await
        .map_err(pg_error)?;
    let mut after: Vec<u8> = Vec::new();
    loop {
        let rows = client.query(&page, &[&after]).await.map_err(pg_error)?;
        let keys = rows
            .iter()
            .map(|r| r.try_get::<_, Vec<u8>>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(pg_error)?;
        let Some(last) = keys.last() else { break };
        after.clone_from(last);
        let (moved, shard_of): (Vec<&Vec<u8>>, Vec<i32>) = keys
            .iter()
            .map(|k| (k, shards::shard_of(k)))
            .filter(|(_, s)| *s != shards::GLOBAL)
            .unzip();
        if !moved.is_empty() {
            client
                .execute(&update, &[&moved, &shard_of])
                .await
                .map_err(pg_error)?;
        }
    }
    let pkey: String = client
        .query_one(
            "SELECT conname::text FROM pg_constraint \
             WHERE conrelid = $1::text::regclass AND contype = 'p'",
            &[&table],
        )
        .await
        .map_err(pg_error)?
        .try_get(0)
        .map_err(pg_error)?;
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} ALTER COLUMN shard DROP DEFAULT, \
             DROP CONSTRAINT \"{pkey}\", ADD PRIMARY KEY (shard, key)"
        ))
        .await
        .map_err(pg_error)?;
    tracing::info!(table, "moved the PostgreSQL table to the sharded layout");
    Ok(())
}
