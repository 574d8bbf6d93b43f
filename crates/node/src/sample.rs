//! The sample app: the classic Durable Functions samples, written with the attribute macros,
//! one module per application pattern; used by the node's dev mode, by tests, by benchmarks
//! and by the examples (`crates/node/examples/`).
//!
//! - `HelloSequence`: calls `SayHello` with "Tokyo", "Seattle", "London" in turn.
//! - `FanOutFanIn`: input n; calls `Square` for 1..=n in parallel; returns the sum.
//! - `Approval`: input `{ "timeoutSeconds": s }`; waits for the event `Approval` (a bool) or the
//!   timeout; returns "approved", "rejected" or "timed out".
//! - `Monitor`: input `{ "intervalSeconds": i, "maxChecks": m }`; polls `CheckStatus` on a
//!   durable timer, eternal through continue-as-new; the custom status shows the check count.
//! - `Counter` entity: `add` (i64), `reset`, `get`, `delete` (removes its state).
//! - `Account` entity (`deposit`, `withdraw`, `balance`) and `Transfer`
//!   (`{ "from", "to", "amount", "confirm" }`), which locks both accounts in a critical
//!   section; with `"confirm": true` it holds the locks until the event `Confirm` (a bool)
//!   says whether to move the money.
//! - `Withdraw` (`{ "account", "amount" }`): withdraws from an account and returns the new
//!   balance; it fails when the funds are short, and a rewind after a deposit completes it.
//!
//! ```
//! let r = perdure_node::sample::sample_registry();
//! assert!(r.orchestration_names().contains(&"HelloSequence".to_string()));
//! ```

pub mod aggregator;
pub mod bank;
pub mod chaining;
pub mod fan_out_fan_in;
pub mod human_interaction;
pub mod monitor;

use perdure_core::registry::Registry;

pub use aggregator::Counter;
pub use bank::{Account, TransferInput, WithdrawInput};
pub use human_interaction::ApprovalInput;
pub use monitor::MonitorInput;

/// Registers the sample orchestrations, activities and entities.
pub fn register(r: &mut Registry) {
    r.register(chaining::hello_sequence)
        .register(chaining::say_hello)
        .register(fan_out_fan_in::fan_out_fan_in)
        .register(fan_out_fan_in::square)
        .register(human_interaction::approval)
        .register(monitor::monitor)
        .register(monitor::check_status)
        .register_entity::<Counter>()
        .register_entity::<Account>()
        .register(bank::transfer)
        .register(bank::withdraw);
}

/// A registry with the sample app.
pub fn sample_registry() -> Registry {
    let mut r = Registry::new();
    register(&mut r);
    r
}
