//! The PostgreSQL table's sharded layout (`store/postgres/layout.rs`, `state::shards`): rows
//! are ordered by `(shard, key)`, a table of the earlier layout (`key` alone) is moved on
//! connect without losing a key, and reads across shards come back in key order. Needs
//! `PERDURE_TEST_POSTGRES_URL` (skipped loudly without it, a failure under `CI=true`).

mod common;

use common::stores::postgres_url;
use perdure_node::state::keys::Key;
use perdure_node::state::shards;
use perdure_node::store::postgres::{CommitMode, PostgresStore};
use perdure_node::store::{KeyRange, RangeOptions, RetryOptions, Store, StoreError, transact};

async fn raw_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// 12,000 history keys of 120 instances (more than one batch of the move), their records, a
/// lease, a chunk of a record, and keys that are not tuples.
fn old_rows() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rows = Vec::new();
    for i in 0..120 {
        let id = format!("order-{i}");
        rows.push((
            Key::new().str("i").str(&id).into_bytes(),
            format!("record {i}").into_bytes(),
        ));
        for seq in 0..100u64 {
            rows.push((
                Key::new().str("h").str(&id).uint(seq).into_bytes(),
                format!("{id}/{seq}").into_bytes(),
            ));
        }
    }
    let record = Key::new().str("i").str("order-7").into_bytes();
    rows.push((
        Key::new().str("c").raw(&record).uint(0).into_bytes(),
        b"chunk".to_vec(),
    ));
    rows.push((Key::new().str("l").uint(3).into_bytes(), b"lease".to_vec()));
    rows.push((b"plain".to_vec(), b"v".to_vec()));
    rows.push((vec![0xFF, 0x00], b"w".to_vec()));
    rows.sort();
    rows
}

async fn read_range(
    store: &dyn Store,
    range: KeyRange,
    opts: RangeOptions,
) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    Ok(transact(store, &RetryOptions::default(), move |tx| {
        let range = range.clone();
        Box::pin(async move { tx.get_range(&range, opts).await })
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_the_old_layout_is_moved_and_keeps_every_key() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_table_of_the_old_layout_is_moved_and_keeps_every_key") else {
        return Ok(());
    };
    let table = "layout_move";
    let raw = raw_client(&url).await?;
    raw.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; \
         CREATE TABLE {table} (key bytea PRIMARY KEY, value bytea NOT NULL)"
    ))
    .await?;
    let rows = old_rows();
    let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
    let values: Vec<&[u8]> = rows.iter().map(|(_, v)| v.as_slice()).collect();
    raw.execute(
        &format!("INSERT INTO {table} SELECT * FROM unnest($1::bytea[], $2::bytea[])"),
        &[&keys, &values],
    )
    .await?;

    // Two nodes starting at once: one moves the table, the other waits and finds it moved.
    let (a, b) = tokio::join!(
        PostgresStore::connect_with(&url, 4, table, CommitMode::Group),
        PostgresStore::connect_with(&url, 4, table, CommitMode::Plain),
    );
    let (a, b) = (a?, b?);

    // Every row is in the shard its key names, and (shard, key) is the primary key.
    let stored = raw
        .query(&format!("SELECT shard, key FROM {table}"), &[])
        .await?;
    assert_eq!(stored.len(), rows.len());
    let mut sharded = 0;
    for row in &stored {
        let shard: i32 = row.get(0);
        let key: Vec<u8> = row.get(1);
        assert_eq!(shard, shards::shard_of(&key), "{key:?}");
        sharded += usize::from(shard != shards::GLOBAL);
    }
    assert_eq!(
        sharded,
        rows.len() - 3,
        "all but the lease and the two non-tuples"
    );
    let pkey: String = raw
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1::text::regclass AND contype = 'p'",
            &[&table],
        )
        .await?
        .get(0);
    assert_eq!(pkey, "PRIMARY KEY (shard, key)");

    for store in [&a as &dyn Store, &b] {
        // The whole table, across every shard, in key order, forwards and backwards.
        let everything = KeyRange::new(Vec::new(), vec![0xFF, 0xFF]);
        let all = read_range(store, everything.clone(), RangeOptions::default()).await?;
        assert_eq!(all, rows);
        let last = read_range(
            store,
            everything,
            RangeOptions {
                limit: Some(5),
                reverse: true,
            },
        )
        .await?;
        let want: Vec<_> = rows.iter().rev().take(5).cloned().collect();
        assert_eq!(last, want);
        // One instance's history: one shard.
        let h = Key::new().str("h").str("order-42").into_bytes();
        let history = read_range(store, KeyRange::prefix(&h), RangeOptions::default()).await?;
        assert_eq!(history.len(), 100);
        assert!(history.iter().all(|(k, _)| k.starts_with(&h)));
        assert!(history.windows(2).all(|w| w[0].0 < w[1].0));
        // The records of every instance: every shard.
        let records = read_range(
            store,
            KeyRange::prefix(Key::new().str("i").as_bytes()),
            RangeOptions {
                limit: Some(50),
                reverse: false,
            },
        )
        .await?;
        let want: Vec<_> = rows
            .iter()
            .filter(|(k, _)| k.starts_with(Key::new().str("i").as_bytes()))
            .take(50)
            .cloned()
            .collect();
        assert_eq!(records, want);
    }

    // Writes and clears land in the key's shard: clear one history and a range across
    // shards, then read what is left.
    let h = Key::new().str("h").str("order-42").into_bytes();
    let records = KeyRange::new(
        Key::new().str("i").str("order-1").into_bytes(),
        Key::new().str("i").str("order-2").into_bytes(),
    );
    let (h2, r2) = (h.clone(), records.clone());
    transact(&a, &RetryOptions::default(), move |tx| {
        let (h, records) = (h2.clone(), r2.clone());
        Box::pin(async move {
            tx.clear_range(&KeyRange::prefix(&h));
            tx.clear_range(&records);
            tx.set(b"plain", b"changed")
        })
    })
    .await?;
    let left = read_range(
        &b,
        KeyRange::new(Vec::new(), vec![0xFF, 0xFF]),
        RangeOptions::default(),
    )
    .await?;
    let want: Vec<_> = rows
        .iter()
        .filter(|(k, _)| !k.starts_with(&h) && !records.contains(k))
        .map(|(k, v)| {
            let v = if k == b"plain" {
                b"changed".to_vec()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    assert_eq!(left, want);
    assert!(want.len() < rows.len() - 100, "the clears removed rows");

    a.drop_table(table).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_of_another_layout_is_refused() -> anyhow::Result<()> {
    let Some(url) = postgres_url("a_table_of_another_layout_is_refused") else {
        return Ok(());
    };
    let table = "layout_stamp";
    let raw = raw_client(&url).await?;
    raw.batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await?;
    let store = PostgresStore::connect_with_table(&url, 2, table).await?;
    let stamp: Option<String> = raw
        .query_one(
            "SELECT obj_description($1::text::regclass, 'pg_class')",
            &[&table],
        )
        .await?
        .get(0);
    let stamp = stamp.ok_or_else(|| anyhow::anyhow!("a new table has no layout comment"))?;
    assert!(stamp.starts_with("perdure kv layout 2"), "{stamp}");
    let options: Option<Vec<String>> = raw
        .query_one(
            "SELECT reloptions FROM pg_class WHERE oid = $1::text::regclass",
            &[&table],
        )
        .await?
        .get(0);
    assert_eq!(
        options,
        Some(vec!["fillfactor=80".to_owned()]),
        "a new table leaves room on its pages for HOT updates"
    );
    // Connecting again to a table of this layout works.
    drop(PostgresStore::connect_with_table(&url, 2, table).await?);

    raw.batch_execute(&format!(
        "COMMENT ON TABLE {table} IS 'perdure kv layout 3: something else'"
    ))
    .await?;
    let err = PostgresStore::connect_with_table(&url, 2, table)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a table of another layout was accepted"))?;
    assert!(matches!(err, StoreError::Fatal(_)), "{err:?}");
    let text = format!(
        "{err} {:?}",
        std::error::Error::source(&err).map(|s| s.to_string())
    );
    assert!(text.contains(table) && text.contains("layout 3"), "{text}");
    store.drop_table(table).await?;
    Ok(())
}
