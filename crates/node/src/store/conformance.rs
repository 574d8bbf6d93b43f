//! The store conformance suite: one set of cases that every backend must pass.
//!
//! Each case is a plain async function over a fresh, empty store, so a backend's test file
//! can run the whole suite ([`run_kv_suite`]) or single cases. It knows nothing of the
//! keyspaces above the contract: the state layer's cases (fencing, inbox, timers, activity
//! leases, purge) live beside it, in `crate::state::conformance`, in the same shape.
//!
//! Test support only: compiled for this crate's tests and with the `test-support` feature,
//! never into what users link by default.
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

mod isolation;
mod model;
mod single;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use self::isolation::{
    absent_read_conflicts_with_an_insert, concurrent_increments,
    empty_range_read_conflicts_with_an_insert, lost_update_conflicts,
    snapshot_reads_are_repeatable, transact_retries_conflict, write_skew_aborted,
};
pub use self::model::random_transactions_match_a_model;
pub use self::single::{
    atomic_commit, binary_key_order, clear_range, dropped_transaction_leaves_nothing,
    failed_closure_leaves_nothing, get_set_clear, range_reads, range_reads_see_own_writes,
    read_only_commit, read_your_writes, size_limits,
};
use super::{KeyRange, RangeOptions, RetryOptions, Store, StoreError, transact};

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
        case("absent_read_conflicts_with_an_insert", true, |s| {
            Box::pin(absent_read_conflicts_with_an_insert(s))
        }),
        case("empty_range_read_conflicts_with_an_insert", true, |s| {
            Box::pin(empty_range_read_conflicts_with_an_insert(s))
        }),
        case("snapshot_reads_are_repeatable", true, |s| {
            Box::pin(snapshot_reads_are_repeatable(s))
        }),
        case("transact_retries_conflict", true, |s| {
            Box::pin(transact_retries_conflict(s))
        }),
        case("random_transactions_match_a_model", false, |s| {
            Box::pin(random_transactions_match_a_model(s))
        }),
        case("concurrent_increments", false, |s| {
            Box::pin(concurrent_increments(s))
        }),
    ]
}

/// A case.
pub(crate) fn case(name: &'static str, concurrent: bool, run: CaseFn) -> Case {
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

pub(crate) fn ro() -> RetryOptions {
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

pub(crate) async fn read_all(store: &dyn Store) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
    let mut tx = store.begin().await?;
    tx.get_range(&KeyRange::prefix(b""), RangeOptions::default())
        .await
}
