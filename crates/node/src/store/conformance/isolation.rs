//! Cases with concurrent transactions: conflicts, snapshots, retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{read, ro, write};
use crate::store::{KeyRange, RangeOptions, RetryOptions, Store, StoreError, transact};

/// Two transactions read and write the same key: the second to commit conflicts.
pub async fn lost_update_conflicts(store: Arc<dyn Store>) -> Result<(), StoreError> {
    write(&*store, &[(b"n", &0u64.to_be_bytes())]).await?;
    let mut t1 = store.begin().await?;
    let mut t2 = store.begin().await?;
    assert!(t1.get(b"n").await?.is_some());
    assert!(t2.get(b"n").await?.is_some());
    t1.set(b"n", &1u64.to_be_bytes())?;
    t2.set(b"n", &2u64.to_be_bytes())?;
    t1.commit().await?;
    let second = t2.commit().await;
    assert!(matches!(second, Err(StoreError::Conflict)), "{second:?}");
    assert_eq!(
        read(&*store, b"n").await?,
        Some(1u64.to_be_bytes().to_vec())
    );
    Ok(())
}

/// Write skew: each transaction reads both keys and writes a different one; serializable
/// isolation lets only one commit.
pub async fn write_skew_aborted(store: Arc<dyn Store>) -> Result<(), StoreError> {
    // Invariant: at least one of the two doctors stays on call.
    write(&*store, &[(b"oncall/alice", b"1"), (b"oncall/bob", b"1")]).await?;
    let mut t1 = store.begin().await?;
    let mut t2 = store.begin().await?;
    let on_call = KeyRange::prefix(b"oncall/");
    let seen1 = t1.get_range(&on_call, RangeOptions::default()).await?;
    let seen2 = t2.get_range(&on_call, RangeOptions::default()).await?;
    assert_eq!(seen1.len(), 2);
    assert_eq!(seen2.len(), 2);
    t1.clear(b"oncall/alice");
    t2.clear(b"oncall/bob");
    let r1 = t1.commit().await;
    let r2 = t2.commit().await;
    let conflicts = [&r1, &r2]
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict)))
        .count();
    assert!(
        r1.is_ok() != r2.is_ok() && conflicts == 1,
        "exactly one commits: {r1:?} {r2:?}"
    );
    let mut tx = store.begin().await?;
    assert_eq!(
        tx.get_range(&on_call, RangeOptions::default()).await?.len(),
        1
    );
    Ok(())
}

/// A transaction reads from one snapshot: a concurrent commit does not change its reads. A
/// store may instead fail a read with [`StoreError::Conflict`] (retried by `transact`) when it
/// cannot give the transaction's next read from the snapshot of its earlier ones (PostgreSQL's
/// group commit runs a first read alone, outside a snapshot): never a mix of two snapshots.
pub async fn snapshot_reads_are_repeatable(store: Arc<dyn Store>) -> Result<(), StoreError> {
    write(&*store, &[(b"a", b"1")]).await?;
    let mut t1 = store.begin().await?;
    assert_eq!(t1.get(b"a").await?.as_deref(), Some(&b"1"[..]));
    write(&*store, &[(b"a", b"2"), (b"b", b"2")]).await?;
    assert_eq!(t1.get(b"a").await?.as_deref(), Some(&b"1"[..]));
    match t1.get(b"b").await {
        Ok(b) => assert_eq!(b, None, "b is read from a's snapshot"),
        Err(StoreError::Conflict) => return Ok(()),
        Err(e) => return Err(e),
    }
    // Once the snapshot holds, the rest of the transaction reads from it.
    assert_eq!(
        t1.get_many(&[b"b", b"a", b"c"]).await?,
        [None, Some(b"1".to_vec()), None]
    );
    assert!(
        t1.get_range(&KeyRange::prefix(b"b"), RangeOptions::default())
            .await?
            .is_empty()
    );
    t1.commit().await?;

    // What was read unchanged: the second read succeeds on every store, and sees the
    // transaction's own writes.
    let mut t2 = store.begin().await?;
    assert_eq!(t2.get(b"a").await?.as_deref(), Some(&b"2"[..]));
    write(&*store, &[(b"d", b"4")]).await?;
    t2.set(b"e", b"5")?;
    assert_eq!(
        t2.get_many(&[b"b", b"e", b"b", b"a"]).await?,
        [
            Some(b"2".to_vec()),
            Some(b"5".to_vec()),
            Some(b"2".to_vec()),
            Some(b"2".to_vec())
        ]
    );
    t2.commit().await?;
    Ok(())
}

/// `transact` reruns the closure after a conflict, and the rerun sees the new data.
pub async fn transact_retries_conflict(store: Arc<dyn Store>) -> Result<(), StoreError> {
    write(&*store, &[(b"n", &1u64.to_be_bytes())]).await?;
    let runs = Arc::new(AtomicU32::new(0));
    let counter = runs.clone();
    let outer = store.clone();
    let seen = transact(&*store, &ro(), move |tx| {
        let counter = counter.clone();
        let outer = outer.clone();
        Box::pin(async move {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            let n = decode_u64(tx.get(b"n").await?);
            if run == 0 {
                // A concurrent writer commits between our read and our commit.
                write(&*outer, &[(b"n", &10u64.to_be_bytes())]).await?;
            }
            tx.set(b"n", &(n + 1).to_be_bytes())?;
            Ok(n)
        })
    })
    .await?;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one conflict, one rerun");
    assert_eq!(seen, 10, "the rerun read the concurrent write");
    assert_eq!(
        read(&*store, b"n").await?,
        Some(11u64.to_be_bytes().to_vec())
    );
    Ok(())
}

fn decode_u64(bytes: Option<Vec<u8>>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// 8 tasks × 1,000 increments of one counter through `transact` end at exactly 8,000.
pub async fn concurrent_increments(store: Arc<dyn Store>) -> Result<(), StoreError> {
    const TASKS: u64 = 8;
    const EACH: u64 = 1_000;
    let retry = RetryOptions {
        max_attempts: 10_000,
        ..RetryOptions::default()
    };
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let retry = retry.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..EACH {
                transact(&*store, &retry, |tx| {
                    Box::pin(async move {
                        let n = decode_u64(tx.get(b"counter").await?);
                        tx.set(b"counter", &(n + 1).to_be_bytes())?;
                        Ok(())
                    })
                })
                .await?;
            }
            Ok::<(), StoreError>(())
        }));
    }
    for handle in handles {
        match handle.await {
            Ok(result) => result?,
            Err(join) => panic!("an increment task failed: {join}"),
        }
    }
    assert_eq!(decode_u64(read(&*store, b"counter").await?), TASKS * EACH);
    Ok(())
}

/// Commits two transactions that are both open and expects exactly one to succeed (the
/// other with [`StoreError::Conflict`]); returns which one did.
async fn exactly_one_commits(
    t1: Box<dyn crate::store::Transaction>,
    t2: Box<dyn crate::store::Transaction>,
) -> Result<usize, StoreError> {
    let r1 = t1.commit().await;
    let r2 = t2.commit().await;
    let conflicts = [&r1, &r2]
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict)))
        .count();
    assert!(
        r1.is_ok() != r2.is_ok() && conflicts == 1,
        "exactly one commits: {r1:?} {r2:?}"
    );
    Ok(if r1.is_ok() { 1 } else { 2 })
}

/// Reads of absent keys race inserts of those keys. Two transactions each check that neither
/// `a` nor `b` exists and insert one of them (invariant: at most one exists), so under
/// serializable isolation only one may commit; a backend that tracks reads only of keys that
/// exist lets both commit. Then two transactions insert the same absent key after reading
/// it ("create if absent"): one commits, the other conflicts.
pub async fn absent_read_conflicts_with_an_insert(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let mut t1 = store.begin().await?;
    let mut t2 = store.begin().await?;
    for tx in [&mut t1, &mut t2] {
        assert_eq!(tx.get(b"absent/a").await?, None);
        assert_eq!(tx.get(b"absent/b").await?, None);
    }
    t1.set(b"absent/a", b"1")?;
    t2.set(b"absent/b", b"2")?;
    let winner = exactly_one_commits(t1, t2).await?;
    let (a, b) = (
        read(&*store, b"absent/a").await?,
        read(&*store, b"absent/b").await?,
    );
    match winner {
        1 => assert_eq!((a, b), (Some(b"1".to_vec()), None)),
        _ => assert_eq!((a, b), (None, Some(b"2".to_vec()))),
    }

    let mut t1 = store.begin().await?;
    let mut t2 = store.begin().await?;
    assert_eq!(t1.get(b"absent/new").await?, None);
    assert_eq!(t2.get(b"absent/new").await?, None);
    t1.set(b"absent/new", b"one")?;
    t2.set(b"absent/new", b"two")?;
    let winner = exactly_one_commits(t1, t2).await?;
    let want: &[u8] = if winner == 1 { b"one" } else { b"two" };
    assert_eq!(read(&*store, b"absent/new").await?, Some(want.to_vec()));
    Ok(())
}

/// Range reads that found nothing race inserts into the range (phantoms): two transactions
/// each see the range empty and insert a different key into it (invariant: at most one key in
/// the range); only one may commit.
pub async fn empty_range_read_conflicts_with_an_insert(
    store: Arc<dyn Store>,
) -> Result<(), StoreError> {
    write(&*store, &[(b"phantom0", b"outside")]).await?;
    let range = KeyRange::prefix(b"phantom/");
    let mut t1 = store.begin().await?;
    let mut t2 = store.begin().await?;
    for tx in [&mut t1, &mut t2] {
        assert!(
            tx.get_range(&range, RangeOptions::default())
                .await?
                .is_empty()
        );
    }
    t1.set(b"phantom/x", b"1")?;
    t2.set(b"phantom/y", b"2")?;
    exactly_one_commits(t1, t2).await?;
    let mut tx = store.begin().await?;
    assert_eq!(
        tx.get_range(&range, RangeOptions::default()).await?.len(),
        1
    );
    Ok(())
}
