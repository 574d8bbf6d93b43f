//! The state layer's conformance cases, run on every backend like the store contract's
//! suite (`crate::store::conformance`): fencing, the inbox under concurrent consumers,
//! timers, activity leases, history batches and incremental purge. They live beside `state/` because they
//! exercise its keyspaces; the store contract's suite knows nothing of them.
//!
//! Test support only: compiled for this crate's tests and with the `test-support` feature.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use perdure_node::state::conformance::run_state_suite;
//! use perdure_node::store::{Store, memory::MemoryStore};
//! run_state_suite(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
//! # });
//! ```

mod fencing;
mod fixtures;
mod history;
mod purge;
mod queues;

use std::future::Future;
use std::sync::Arc;

pub use self::fencing::{fencing_race_fails_the_deposed_commit, fencing_rejects_a_deposed_epoch};
pub use self::history::{
    history_batches_read_back_in_order, history_large_appends_split_into_batches,
    history_leftovers_are_skipped, history_single_event_keys_still_read,
};
pub use self::purge::{purge_removes_the_instance_and_nothing_else, purge_resumes_after_a_stop};
pub use self::queues::{
    activity_lease_expiry_and_redelivery, inbox_consumers_race_for_one_message,
    inbox_order_and_exactly_once, timer_order,
};
use crate::store::Store;
use crate::store::conformance::{Case, case, read_all, ro, run_cases};

/// The cases of the state layer above the contract: fencing, the inbox under concurrent
/// consumers, timers, activity leases, history batches and incremental purge.
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
        case("history_batches_read_back_in_order", false, |s| {
            Box::pin(history_batches_read_back_in_order(s))
        }),
        case("history_single_event_keys_still_read", false, |s| {
            Box::pin(history_single_event_keys_still_read(s))
        }),
        case("history_leftovers_are_skipped", false, |s| {
            Box::pin(history_leftovers_are_skipped(s))
        }),
        case("history_large_appends_split_into_batches", false, |s| {
            Box::pin(history_large_appends_split_into_batches(s))
        }),
        case("purge_removes_the_instance_and_nothing_else", false, |s| {
            Box::pin(purge_removes_the_instance_and_nothing_else(s))
        }),
        case("purge_resumes_after_a_stop", false, |s| {
            Box::pin(purge_resumes_after_a_stop(s))
        }),
    ]
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
