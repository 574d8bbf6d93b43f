//! The store conformance suite: one set of cases that every backend must pass.
//!
//! Each case is a plain async function over a fresh, empty store, so a backend's test file
//! can run the whole suite ([`run_kv_suite`]) or single cases, and the layer above the
//! contract can add its own cases in the same shape ([`Case`]).
//!
//! Cases that keep two transactions open at once in one task are marked
//! [`Case::concurrent`]; they are skipped on the memory backend, which runs one
//! transaction at a time (a second `begin` in the same task would wait forever).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use perdure_node::store::{Store, conformance, memory::MemoryStore};
//! conformance::run_kv_suite(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::future::BoxFuture;

use super::{
    KeyRange, LimitKind, MAX_KEY_BYTES, MAX_TRANSACTION_BYTES, MAX_VALUE_BYTES, RangeOptions,
    RetryOptions, Store, StoreError, transact,
};

/// A conformance case's body: runs against a fresh, empty store.
pub type CaseFn = fn(Arc<dyn Store>) -> BoxFuture<'static, Result<(), StoreError>>;

/// A conformance case: a name, and a function run against a fresh, empty store.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name, printed by [`run_cases`].
    pub name: &'static str,
    /// Whether the case keeps two transactions open at once (skipped on `memory`).
    pub concurrent: bool,
    /// The case. It panics (assertions) on a wrong result and returns a store error if the
    /// backend fails.
    pub run: CaseFn,
}

/// The cases of the key-value contract.
pub fn kv_cases() -> Vec<Case> {
    vec![
        case("get_set_clear", false, |s| Box::pin(get_set_clear(s))),
        case("atomic_commit", false, |s| Box::pin(atomic_commit(s))),
        case("dropped_transaction_leaves_nothing", false, |s| {
            Box::pin(dropped_transaction_leaves_nothing(s))
        }),
        case("failed_closure_leaves_nothing", false, |s| {
            Box::pin(failed_closure_leaves_nothing(s))
        }),
        case("read_your_writes", false, |s| Box::pin(read_your_writes(s))),
        case("range_reads", false, |s| Box::pin(range_reads(s))),
        case("range_reads_see_own_writes", false, |s| {
            Box::pin(range_reads_see_own_writes(s))
        }),
        case("clear_range", false, |s| Box::pin(clear_range(s))),
        case("binary_key_order", false, |s| Box::pin(binary_key_order(s))),
        case("size_limits", false, |s| Box::pin(size_limits(s))),
        case("read_only_commit", false, |s| Box::pin(read_only_commit(s))),
        case("lost_update_conflicts", true, |s| {
            Box::pin(lost_update_conflicts(s))
        }),
        case("write_skew_aborted", true, |s| {
            Box::pin(write_skew_aborted(s))
        }),
        case("snapshot_reads_are_repeatable", true, |s| {
            Box::pin(snapshot_reads_are_repeatable(s))
        }),
        case("transact_retries_conflict", true, |s| {
            Box::pin(transact_retries_conflict(s))
        }),
        case("concurrent_increments", false, |s| {
            Box::pin(concurrent_increments(s))
        }),
    ]
}

fn case(name: &'static str, concurrent: bool, run: CaseFn) -> Case {
    Case {
        name,
        concurrent,
        run,
    }
}

/// Runs every case of [`kv_cases`], each on a fresh store from `make`. Panics on the first
/// failure, naming the case.
pub async fn run_kv_suite<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    run_cases(&kv_cases(), make).await;
}

/// Runs `cases`, each on a fresh store from `make`, printing each name to stderr.
pub async fn run_cases<F, Fut>(cases: &[Case], make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for case in cases {
        let store = make().await;
        let backend = store.backend_name();
        if case.concurrent && backend == "memory" {
            eprintln!(
                "conformance [{backend}] {}: skipped (one transaction at a time)",
                case.name
            );
            continue;
        }
        eprintln!("conformance [{backend}] {}", case.name);
        if let Err(e) = (case.run)(store).await {
            panic!("conformance case {} failed on {backend}: {e:?}", case.name);
        }
    }
}

fn ro() -> RetryOptions {
    RetryOptions::default()
}

async fn read(store: &dyn Store, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let key = key.to_vec();
    transact(store, &ro(), move |tx| {
        let key = key.clone();
        Box::pin(async move { tx.get(&key).await })
    })
    .await
}

async fn write(store: &dyn Store, pairs: &[(&[u8], &[u8])]) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    for (k, v) in pairs {
        tx.set(k, v)?;
    }
    tx.commit().await
}

async fn read_all(store: &dyn Store) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
    let mut tx = store.begin().await?;
    tx.get_range(&KeyRange::prefix(b""), RangeOptions::default())
        .await
}

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
/// sizes at the limits are accepted.
pub async fn size_limits(store: Arc<dyn Store>) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    assert_limit(tx.set(&vec![b'k'; MAX_KEY_BYTES + 1], b"v"), LimitKind::Key);
    assert_limit(
        tx.set(b"k", &vec![0; MAX_VALUE_BYTES + 1]),
        LimitKind::Value,
    );
    tx.set(&vec![b'k'; MAX_KEY_BYTES], &vec![7; MAX_VALUE_BYTES])?;
    tx.commit().await?;
    assert_eq!(
        read(&*store, &vec![b'k'; MAX_KEY_BYTES])
            .await?
            .map(|v| v.len()),
        Some(MAX_VALUE_BYTES)
    );

    let mut tx = store.begin().await?;
    let per_write = MAX_VALUE_BYTES + 8;
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

/// A transaction reads from one snapshot: a concurrent commit does not change its reads.
pub async fn snapshot_reads_are_repeatable(store: Arc<dyn Store>) -> Result<(), StoreError> {
    write(&*store, &[(b"a", b"1")]).await?;
    let mut t1 = store.begin().await?;
    assert_eq!(t1.get(b"a").await?.as_deref(), Some(&b"1"[..]));
    write(&*store, &[(b"a", b"2"), (b"b", b"2")]).await?;
    assert_eq!(t1.get(b"a").await?.as_deref(), Some(&b"1"[..]));
    assert_eq!(t1.get(b"b").await?, None);
    t1.commit().await?;
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
