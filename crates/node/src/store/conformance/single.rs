//! Cases within one transaction at a time: reads, writes, clears, ranges, limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{read, read_all, ro, write};
use crate::store::{
    KeyRange, LimitKind, MAX_KEY_BYTES, MAX_TRANSACTION_BYTES, MAX_VALUE_BYTES, RangeOptions,
    Store, StoreError, transact,
};

/// get, set and clear, committed and read back.
pub async fn get_set_clear(store: Arc<dyn Store>) -> Result<(), StoreError> {
    assert_eq!(read(&*store, b"a").await?, None);
    write(&*store, &[(b"a", b"1"), (b"b", b"")]).await?;
    assert_eq!(read(&*store, b"a").await?.as_deref(), Some(&b"1"[..]));
    assert_eq!(
        read(&*store, b"b").await?.as_deref(),
        Some(&b""[..]),
        "empty value kept"
    );
    write(&*store, &[(b"a", b"2")]).await?;
    assert_eq!(
        read(&*store, b"a").await?.as_deref(),
        Some(&b"2"[..]),
        "overwrite"
    );
    let mut tx = store.begin().await?;
    tx.clear(b"a");
    tx.clear(b"never-written");
    tx.commit().await?;
    assert_eq!(read(&*store, b"a").await?, None);
    assert_eq!(read(&*store, b"b").await?.as_deref(), Some(&b""[..]));
    Ok(())
}

/// A committed transaction's writes are all visible.
pub async fn atomic_commit(store: Arc<dyn Store>) -> Result<(), StoreError> {
    write(&*store, &[(b"x", b"old")]).await?;
    let mut tx = store.begin().await?;
    for i in 0..50u32 {
        tx.set(format!("k{i:03}").as_bytes(), &i.to_be_bytes())?;
    }
    tx.clear(b"x");
    tx.commit().await?;
    let all = read_all(&*store).await?;
    assert_eq!(all.len(), 50);
    for (i, (k, v)) in (0..50u32).zip(all) {
        assert_eq!(k, format!("k{i:03}").into_bytes());
        assert_eq!(v, i.to_be_bytes());
    }
    Ok(())
}

/// A transaction dropped without commit leaves nothing behind.
pub async fn dropped_transaction_leaves_nothing(store: Arc<dyn Store>) -> Result<(), StoreError> {
    write(&*store, &[(b"keep", b"1"), (b"gone?", b"1")]).await?;
    {
        let mut tx = store.begin().await?;
        tx.set(b"new", b"1")?;
        tx.set(b"keep", b"2")?;
        tx.clear(b"gone?");
        tx.clear_range(&KeyRange::prefix(b"k"));
        assert_eq!(tx.get(b"new").await?.as_deref(), Some(&b"1"[..]));
    }
    let all = read_all(&*store).await?;
    assert_eq!(
        all,
        vec![
            (b"gone?".to_vec(), b"1".to_vec()),
            (b"keep".to_vec(), b"1".to_vec())
        ]
    );
    Ok(())
}

/// The marker error of [`failed_closure_leaves_nothing`].
#[derive(Debug, thiserror::Error)]
#[error("the closure gave up on purpose")]
struct GaveUp;

/// A `transact` closure that fails after writing commits nothing, and is not retried.
pub async fn failed_closure_leaves_nothing(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let result: Result<(), StoreError> = transact(&*store, &ro(), move |tx| {
        let counter = counter.clone();
        Box::pin(async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tx.set(b"a", b"1")?;
            tx.set(b"b", b"1")?;
            Err(StoreError::Fatal(Box::new(GaveUp)))
        })
    })
    .await;
    assert!(matches!(result, Err(StoreError::Fatal(_))), "{result:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "a fatal error is not retried"
    );
    assert!(read_all(&*store).await?.is_empty());
    Ok(())
}

/// Reads inside a transaction see its own sets and clears.
pub async fn read_your_writes(store: Arc<dyn Store>) -> Result<(), StoreError> {
    write(&*store, &[(b"a", b"committed"), (b"b", b"committed")]).await?;
    let mut tx = store.begin().await?;
    assert_eq!(tx.get(b"a").await?.as_deref(), Some(&b"committed"[..]));
    tx.set(b"a", b"mine")?;
    assert_eq!(tx.get(b"a").await?.as_deref(), Some(&b"mine"[..]));
    tx.clear(b"b");
    assert_eq!(tx.get(b"b").await?, None);
    tx.set(b"b", b"again")?;
    assert_eq!(tx.get(b"b").await?.as_deref(), Some(&b"again"[..]));
    tx.set(b"c", b"new")?;
    tx.clear_range(&KeyRange::new(b"a".to_vec(), b"b".to_vec()));
    assert_eq!(tx.get(b"a").await?, None, "cleared by clear_range");
    assert_eq!(
        tx.get(b"b").await?.as_deref(),
        Some(&b"again"[..]),
        "end is exclusive"
    );
    tx.set(b"a", b"after-clear")?;
    assert_eq!(tx.get(b"a").await?.as_deref(), Some(&b"after-clear"[..]));
    tx.commit().await?;
    let all = read_all(&*store).await?;
    assert_eq!(
        all,
        vec![
            (b"a".to_vec(), b"after-clear".to_vec()),
            (b"b".to_vec(), b"again".to_vec()),
            (b"c".to_vec(), b"new".to_vec()),
        ]
    );
    Ok(())
}

fn keys(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

/// Range reads: forward, reverse, limits, prefixes, empty and inverted ranges.
pub async fn range_reads(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let names = ["a", "b/1", "b/2", "b/3", "b0", "c/1", "c/2", "d"];
    let mut tx = store.begin().await?;
    for n in names {
        tx.set(n.as_bytes(), n.as_bytes())?;
    }
    tx.commit().await?;

    let mut tx = store.begin().await?;
    let all = tx
        .get_range(&KeyRange::prefix(b""), RangeOptions::default())
        .await?;
    assert_eq!(keys(&all), names);
    assert!(all.iter().all(|(k, v)| k == v), "values follow their keys");

    let b = KeyRange::prefix(b"b/");
    let fwd = tx.get_range(&b, RangeOptions::default()).await?;
    assert_eq!(keys(&fwd), ["b/1", "b/2", "b/3"]);
    let rev = tx
        .get_range(
            &b,
            RangeOptions {
                limit: None,
                reverse: true,
            },
        )
        .await?;
    assert_eq!(keys(&rev), ["b/3", "b/2", "b/1"]);
    let first2 = tx.get_range(&b, RangeOptions::limit(2)).await?;
    assert_eq!(keys(&first2), ["b/1", "b/2"]);
    let last2 = tx.get_range(&b, RangeOptions::reverse_limit(2)).await?;
    assert_eq!(keys(&last2), ["b/3", "b/2"]);
    let zero = tx.get_range(&b, RangeOptions::limit(0)).await?;
    assert!(zero.is_empty(), "limit 0 reads nothing");
    let many = tx.get_range(&b, RangeOptions::limit(100)).await?;
    assert_eq!(many.len(), 3);

    let half_open = KeyRange::new(b"b/2".to_vec(), b"c/2".to_vec());
    let mid = tx.get_range(&half_open, RangeOptions::default()).await?;
    assert_eq!(
        keys(&mid),
        ["b/2", "b/3", "b0", "c/1"],
        "begin inclusive, end exclusive"
    );

    let empty = KeyRange::new(b"c".to_vec(), b"c".to_vec());
    assert!(
        tx.get_range(&empty, RangeOptions::default())
            .await?
            .is_empty()
    );
    let inverted = KeyRange::new(b"d".to_vec(), b"a".to_vec());
    assert!(
        tx.get_range(&inverted, RangeOptions::default())
            .await?
            .is_empty()
    );
    let none = KeyRange::prefix(b"zzz");
    assert!(
        tx.get_range(&none, RangeOptions::reverse_limit(3))
            .await?
            .is_empty()
    );
    Ok(())
}

/// Range reads inside a transaction merge its own uncommitted sets and clears.
pub async fn range_reads_see_own_writes(store: Arc<dyn Store>) -> Result<(), StoreError> {
    write(
        &*store,
        &[
            (b"p/1", b"c"),
            (b"p/2", b"c"),
            (b"p/3", b"c"),
            (b"p/4", b"c"),
        ],
    )
    .await?;
    let mut tx = store.begin().await?;
    tx.clear(b"p/2");
    tx.set(b"p/25", b"mine")?;
    tx.set(b"p/3", b"mine")?;
    tx.set(b"p/9", b"mine")?;
    let p = KeyRange::prefix(b"p/");
    let fwd = tx.get_range(&p, RangeOptions::default()).await?;
    assert_eq!(
        fwd,
        vec![
            (b"p/1".to_vec(), b"c".to_vec()),
            (b"p/25".to_vec(), b"mine".to_vec()),
            (b"p/3".to_vec(), b"mine".to_vec()),
            (b"p/4".to_vec(), b"c".to_vec()),
            (b"p/9".to_vec(), b"mine".to_vec()),
        ]
    );
    let rev = tx.get_range(&p, RangeOptions::reverse_limit(2)).await?;
    assert_eq!(keys(&rev), ["p/9", "p/4"]);
    let lim = tx.get_range(&p, RangeOptions::limit(2)).await?;
    assert_eq!(keys(&lim), ["p/1", "p/25"]);

    tx.clear_range(&KeyRange::new(b"p/1".to_vec(), b"p/4".to_vec()));
    let after = tx.get_range(&p, RangeOptions::default()).await?;
    assert_eq!(keys(&after), ["p/4", "p/9"]);
    let after_rev = tx.get_range(&p, RangeOptions::reverse_limit(5)).await?;
    assert_eq!(keys(&after_rev), ["p/9", "p/4"]);
    tx.set(b"p/2", b"back")?;
    let lim1 = tx.get_range(&p, RangeOptions::limit(1)).await?;
    assert_eq!(lim1, vec![(b"p/2".to_vec(), b"back".to_vec())]);
    drop(tx);
    let all = read_all(&*store).await?;
    assert_eq!(
        keys(&all),
        ["p/1", "p/2", "p/3", "p/4"],
        "nothing committed"
    );
    Ok(())
}

/// Committed clears and range clears, with neighbours left alone.
pub async fn clear_range(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    for i in 0..300u32 {
        tx.set(format!("r/{i:04}").as_bytes(), b"v")?;
    }
    tx.set(b"r", b"parent")?;
    tx.set(b"r0", b"neighbour")?;
    tx.set(b"q", b"before")?;
    tx.commit().await?;

    let mut tx = store.begin().await?;
    tx.clear_range(&KeyRange::new(b"r/0100".to_vec(), b"r/0200".to_vec()));
    tx.commit().await?;
    let mut tx = store.begin().await?;
    let r = tx
        .get_range(&KeyRange::prefix(b"r/"), RangeOptions::default())
        .await?;
    assert_eq!(r.len(), 200);
    assert_eq!(r.first().map(|(k, _)| k.as_slice()), Some(&b"r/0000"[..]));
    assert!(tx.get(b"r/0099").await?.is_some());
    assert!(tx.get(b"r/0100").await?.is_none());
    assert!(tx.get(b"r/0199").await?.is_none());
    assert!(tx.get(b"r/0200").await?.is_some());
    drop(tx);

    let mut tx = store.begin().await?;
    tx.clear_range(&KeyRange::prefix(b"r/"));
    tx.clear_range(&KeyRange::new(b"z".to_vec(), b"a".to_vec())); // inverted: no-op
    tx.commit().await?;
    let all = read_all(&*store).await?;
    assert_eq!(keys(&all), ["q", "r", "r0"]);
    Ok(())
}

/// Keys order as unsigned bytes, including 0x00 and 0xFF bytes. (Keys starting with 0xFF
/// are reserved, as in FoundationDB: `KeyRange::prefix(b"")` ends before them.)
pub async fn binary_key_order(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let ks: [&[u8]; 6] = [
        &[0x00],
        &[0x00, 0x00],
        &[0x01],
        &[0x7F, 0xFF],
        &[0xFE],
        &[0xFE, 0xFF, 0x00],
    ];
    let mut tx = store.begin().await?;
    for k in ks.iter().rev() {
        tx.set(k, k)?;
    }
    tx.commit().await?;
    let all = read_all(&*store).await?;
    let got: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(got, ks);
    let mut tx = store.begin().await?;
    let ff = tx
        .get_range(&KeyRange::prefix(&[0xFE]), RangeOptions::default())
        .await?;
    assert_eq!(ff.len(), 2);
    let ffff = tx
        .get_range(&KeyRange::prefix(&[0xFE, 0xFF]), RangeOptions::default())
        .await?;
    assert_eq!(ffff.len(), 1);
    Ok(())
}

fn assert_limit(result: Result<(), StoreError>, want: LimitKind) {
    match result {
        Err(e @ StoreError::LimitExceeded { kind, .. }) if kind == want => {
            let text = e.to_string();
            assert!(text.contains("over the limit"), "clear message: {text}");
            assert!(!e.is_retryable(), "a size limit is not retryable");
        }
        other => panic!("expected {want:?} limit error, got {other:?}"),
    }
}

/// Keys over 10 kB, values over 100 kB and transactions over 10 MB are rejected clearly;
/// sizes at the limits are accepted. A backend that stores keys under a prefix
/// ([`Store::key_prefix_len`]) counts the prefix: the longest key a caller may write is
/// that much shorter, and the server never sees a key over its limit.
pub async fn size_limits(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    // An empty key is refused by every backend, and clearing one is a no-op.
    assert!(matches!(tx.set(b"", b"v"), Err(StoreError::EmptyKey)));
    tx.clear(b"");
    tx.set(b"after-empty", b"v")?;
    tx.commit().await?;
    assert_eq!(read(&*store, b"after-empty").await?, Some(b"v".to_vec()));

    let prefix = store.key_prefix_len();
    let longest = MAX_KEY_BYTES - prefix;
    let mut tx = store.begin().await?;
    assert_limit(tx.set(&vec![b'k'; longest + 1], b"v"), LimitKind::Key);
    assert_limit(
        tx.set(b"k", &vec![0; MAX_VALUE_BYTES + 1]),
        LimitKind::Value,
    );
    tx.set(&vec![b'k'; longest], &vec![7; MAX_VALUE_BYTES])?;
    tx.commit().await?;
    assert_eq!(
        read(&*store, &vec![b'k'; longest]).await?.map(|v| v.len()),
        Some(MAX_VALUE_BYTES)
    );

    let mut tx = store.begin().await?;
    let per_write = prefix + 8 + MAX_VALUE_BYTES;
    let fits = MAX_TRANSACTION_BYTES / per_write;
    let mut first_error = None;
    for i in 0..=fits as u64 {
        if let Err(e) = tx.set(&i.to_be_bytes(), &vec![1; MAX_VALUE_BYTES]) {
            first_error = Some((i, e));
            break;
        }
    }
    match first_error {
        Some((i, e)) => {
            assert_eq!(i, fits as u64, "the write that crosses 10 MB fails");
            assert_limit(Err(e), LimitKind::Transaction);
        }
        None => panic!("a transaction over 10 MB was accepted"),
    }
    drop(tx);
    let mut tx = store.begin().await?;
    let big = tx
        .get_range(&KeyRange::prefix(&[0]), RangeOptions::limit(1))
        .await?;
    assert!(big.is_empty(), "the oversize transaction committed nothing");
    Ok(())
}

/// A transaction that only reads commits successfully.
pub async fn read_only_commit(store: Arc<dyn Store>) -> Result<(), StoreError> {
    write(&*store, &[(b"a", b"1")]).await?;
    let mut tx = store.begin().await?;
    assert!(tx.get(b"a").await?.is_some());
    tx.commit().await?;
    let tx = store.begin().await?;
    tx.commit().await?;
    Ok(())
}
