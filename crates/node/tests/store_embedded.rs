//! The embedded backend's own behaviour beyond the conformance suite: persistence across
//! reopen, one owner per data directory, unusable data directories, corrupt records, group
//! commit.

use std::error::Error as _;

use perdure_node::store::embedded::{DataDirError, EmbeddedStore};
use perdure_node::store::{KeyRange, RangeOptions, Store, StoreError, Transaction, escape_key};

/// The error and its sources, joined, as an operator would read them.
fn chain(e: &StoreError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn committed_data_survives_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let store = EmbeddedStore::open(dir.path())?;
        let mut tx = store.begin().await?;
        for i in 0..100u32 {
            tx.set(format!("k/{i:03}").as_bytes(), &i.to_be_bytes())?;
        }
        tx.commit().await?;
        let mut tx = store.begin().await?;
        tx.clear_range(&KeyRange::new(b"k/050".to_vec(), b"k/060".to_vec()));
        tx.commit().await?;
    }
    let store = EmbeddedStore::open(dir.path())?;
    let mut tx = store.begin().await?;
    let all = tx
        .get_range(&KeyRange::prefix(b"k/"), RangeOptions::default())
        .await?;
    assert_eq!(all.len(), 90);
    assert_eq!(tx.get(b"k/049").await?, Some(49u32.to_be_bytes().to_vec()));
    assert_eq!(tx.get(b"k/055").await?, None);
    Ok(())
}

#[tokio::test]
async fn a_second_opener_gets_locked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let first = EmbeddedStore::open(dir.path())?;
    match EmbeddedStore::open(dir.path()) {
        Err(StoreError::Locked { path }) => {
            assert_eq!(path, dir.path().display().to_string());
        }
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("two stores opened one data directory"),
    }
    // Once the owner closes, the directory can be opened again.
    drop(first);
    let again = EmbeddedStore::open(dir.path())?;
    assert_eq!(again.backend_name(), "embedded");
    Ok(())
}

fn expect_data_dir_error(result: Result<EmbeddedStore, StoreError>, path: &std::path::Path) {
    match result {
        Err(e @ StoreError::Fatal(_)) => {
            let text = chain(&e);
            assert!(
                text.contains(&format!("cannot use data directory {}", path.display())),
                "{text}"
            );
            let source = e.source().and_then(|s| s.downcast_ref::<DataDirError>());
            assert!(source.is_some(), "typed source: {e:?}");
            assert!(!e.is_retryable());
        }
        Err(other) => panic!("expected a data directory error, got {other:?}"),
        Ok(_) => panic!("opened an unusable data directory {}", path.display()),
    }
}

#[tokio::test]
async fn a_data_directory_that_is_a_file_is_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x")?;
    expect_data_dir_error(EmbeddedStore::open(&file), &file);
    let below = file.join("data");
    expect_data_dir_error(EmbeddedStore::open(&below), &below);
    Ok(())
}

#[tokio::test]
async fn a_data_directory_without_permissions_is_a_clear_error() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let locked = dir.path().join("no-access");
    std::fs::create_dir(&locked)?;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500))?;
    if std::fs::write(locked.join("probe"), b"").is_err() {
        expect_data_dir_error(EmbeddedStore::open(&locked), &locked);
        return Ok(());
    }
    // root ignores permission bits; sysfs refuses it a new directory all the same.
    eprintln!("permission bits do not stop this user (root): using /sys instead");
    let refused = std::path::Path::new("/sys/perdure-store-test");
    expect_data_dir_error(EmbeddedStore::open(refused), refused);
    Ok(())
}

#[tokio::test]
async fn corrupt_instance_records_are_a_typed_error_naming_the_key() -> anyhow::Result<()> {
    use perdure_core::InstanceId;
    use perdure_node::state::{self, instances};
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path())?;
    let id = InstanceId::new("order-7")?;
    let key = instances::record_key(&id);
    // The record's bytes as the state layer reads them: a tag (0 = inline), then the
    // encoded record. Each of these is garbage in a different place.
    let tagged_garbage = [0u8, perdure_core::codec::FORMAT_VERSION, 0xFF, 0xFF, 0xFF];
    for garbage in [&tagged_garbage[..], &[0x7F, 1, 2], &[1, 0, 0], &[]] {
        put(&store, &key, garbage).await?;
        let mut tx = store.begin().await?;
        let err = instances::load(tx.as_mut(), &id)
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{garbage:?} loaded as an instance record"))?;
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(!err.is_retryable(), "a corrupt record is not retried");
        // The key is named as stored, escaped: `\x02i\x00\x02order-7\x00`.
        assert_eq!(escape_key(&key), "\\x02i\\x00\\x02order-7\\x00");
        assert!(err.to_string().contains(&escape_key(&key)), "{err}");
        // The generic reader fails the same way.
        let err = state::get::<u32>(tx.as_mut(), &key).await.err();
        assert!(matches!(err, Some(StoreError::Corrupt { .. })), "{err:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_syncs_and_return_only_once_synced() -> anyhow::Result<()> {
    const WRITERS: u64 = 64;
    const EACH: u64 = 40;
    // On the target directory's disk, where a sync costs what it costs in production.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let store = EmbeddedStore::open(dir.path())?;
    let before = store.stats();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let start = start.clone();
        writers.spawn(async move {
            start.wait().await;
            for i in 0..EACH {
                let mut tx = store.begin_transaction();
                tx.set(format!("w/{w:02}/{i:03}").as_bytes(), &i.to_be_bytes())?;
                let version = tx.commit_version().await?;
                let synced = store.stats().synced_version;
                assert!(
                    synced >= version,
                    "commit {version} returned before a sync covered it (synced: {synced})"
                );
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let after = store.stats();
    let commits = after.commits - before.commits;
    let syncs = after.syncs - before.syncs;
    eprintln!("{commits} commits, {syncs} syncs");
    assert_eq!(commits, WRITERS * EACH, "every commit is counted once");
    assert!(syncs >= 1);
    assert!(
        syncs < commits / 2,
        "group commit: {syncs} syncs for {commits} commits"
    );
    let mut tx = store.begin().await?;
    let all = tx
        .get_range(&KeyRange::prefix(b"w/"), RangeOptions::default())
        .await?;
    assert_eq!(all.len() as u64, WRITERS * EACH);
    Ok(())
}

async fn put(store: &EmbeddedStore, key: &[u8], value: &[u8]) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    tx.set(key, value)?;
    tx.commit().await?;
    Ok(())
}

#[tokio::test]
async fn an_insert_into_a_range_read_conflicts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path())?;
    let mut reader = store.begin().await?;
    let seen = reader
        .get_range(&KeyRange::prefix(b"queue/"), RangeOptions::default())
        .await?;
    assert!(seen.is_empty());
    put(&store, b"queue/1", b"m").await?; // a phantom appears in the range read
    reader.set(b"elsewhere", b"x")?;
    let result = reader.commit().await;
    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn a_write_past_a_limited_range_read_does_not_conflict() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path())?;
    for k in [b"queue/1", b"queue/2", b"queue/3"] {
        put(&store, k, b"m").await?;
    }
    // A consumer reads the first two messages; a producer appends at the end meanwhile.
    let mut consumer = store.begin().await?;
    let head = consumer
        .get_range(&KeyRange::prefix(b"queue/"), RangeOptions::limit(2))
        .await?;
    assert_eq!(head.len(), 2);
    put(&store, b"queue/9", b"m").await?;
    consumer.clear(b"queue/1");
    consumer.clear(b"queue/2");
    consumer.commit().await?;
    // But a write inside the part it read does conflict.
    let mut consumer = store.begin().await?;
    let tail = consumer
        .get_range(&KeyRange::prefix(b"queue/"), RangeOptions::reverse_limit(1))
        .await?;
    assert_eq!(
        tail.first().map(|(k, _)| k.as_slice()),
        Some(&b"queue/9"[..])
    );
    put(&store, b"queue/95", b"m").await?;
    consumer.set(b"other", b"x")?;
    let result = consumer.commit().await;
    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    Ok(())
}

#[tokio::test]
async fn a_range_clear_applies_to_the_data_at_commit_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path())?;
    put(&store, b"purge/a", b"1").await?;
    let mut purger = store.begin().await?;
    purger.clear_range(&KeyRange::prefix(b"purge/"));
    // Written after the purger began, committed before it: a blind clear removes it too,
    // as FoundationDB's clear_range does.
    put(&store, b"purge/b", b"2").await?;
    purger.commit().await?;
    let mut tx = store.begin().await?;
    let left = tx
        .get_range(&KeyRange::prefix(b"purge/"), RangeOptions::default())
        .await?;
    assert!(left.is_empty(), "{left:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_to_one_key_serialize() -> anyhow::Result<()> {
    // Many blind writes of one key in one commit batch: the last committed wins, and a
    // reader sees exactly one of the values.
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path())?;
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin().await?;
            tx.set(b"k", &[i])?;
            tx.set(&[b'w', i], &[i])?;
            tx.commit().await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut tx = store.begin().await?;
    let v = tx.get(b"k").await?.unwrap_or_default();
    assert_eq!(v.len(), 1);
    let written = tx
        .get_range(&KeyRange::prefix(b"w"), RangeOptions::default())
        .await?;
    assert_eq!(written.len(), 32);
    Ok(())
}
