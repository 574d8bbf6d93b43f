//! The store conformance suite: one set of cases that every backend must pass.
//!
//! Each case is a plain async function over a fresh, empty store, so a backend's test file
//! can run the whole suite ([`run_kv_suite`]) or single cases. The layer above the contract
//! (`crate::state`: fencing, inbox, timers, activity leases, purge) has its own cases in the
//! same shape ([`state_cases`], [`run_state_suite`]).
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

mod fencing;
mod fixtures;
mod isolation;
mod model;
mod purge;
mod queues;
mod single;

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use self::fencing::{fencing_race_fails_the_deposed_commit, fencing_rejects_a_deposed_epoch};
pub use self::isolation::{
    absent_read_conflicts_with_an_insert, concurrent_increments,
    empty_range_read_conflicts_with_an_insert, lost_update_conflicts,
    snapshot_reads_are_repeatable, transact_retries_conflict, write_skew_aborted,
};
pub use self::model::random_transactions_match_a_model;
pub use self::purge::{purge_removes_the_instance_and_nothing_else, purge_resumes_after_a_stop};
pub use self::queues::{
    activity_lease_expiry_and_redelivery, inbox_consumers_race_for_one_message,
    inbox_order_and_exactly_once, timer_order,
};
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

/// The cases of the state layer above the contract: fencing, the inbox under concurrent
/// consumers, timers, activity leases and incremental purge.
pub fn state_cases() -> Vec<Case> {
    vec![
        case("fencing_rejects_a_deposed_epoch", false, |s| {
            Box::pin(fencing_rejects_a_deposed_epoch(s))
        }),
        case("fencing_race_fails_the_deposed_commit", true, |s| {
            Box::pin(fencing_race_fails_the_deposed_commit(s))
        }),
        case("inbox_order_and_exactly_once", false, |s| {
            Box::pin(inbox_order_and_exactly_once(s))
        }),
        case("inbox_consumers_race_for_one_message", true, |s| {
            Box::pin(inbox_consumers_race_for_one_message(s))
        }),
        case("timer_order", false, |s| Box::pin(timer_order(s))),
        case("activity_lease_expiry_and_redelivery", false, |s| {
            Box::pin(activity_lease_expiry_and_redelivery(s))
        }),
        case("purge_removes_the_instance_and_nothing_else", false, |s| {
            Box::pin(purge_removes_the_instance_and_nothing_else(s))
        }),
        case("purge_resumes_after_a_stop", false, |s| {
            Box::pin(purge_resumes_after_a_stop(s))
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

/// Runs every case of [`state_cases`], each on a fresh store from `make`. Panics on the
/// first failure, naming the case. Cases with concurrent consumers spawn tokio tasks: run it
/// on a multi-threaded runtime so that their transactions overlap.
pub async fn run_state_suite<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    run_cases(&state_cases(), make).await;
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
