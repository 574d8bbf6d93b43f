//! The sample app: the classic Durable Functions samples, used by the node's dev mode, by
//! tests and by benchmarks.
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

use std::time::Duration;

use perdure_core::activity::ActivityContext;
use perdure_core::entity::EntityContext;
use perdure_core::orchestration::{
    OrchestrationContext, TaskError, TaskFuture, when_all, when_any,
};
use perdure_core::registry::Registry;
use perdure_core::{EntityId, FailureDetails};
use serde::{Deserialize, Serialize};

/// Input of `Approval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApprovalInput {
    /// How long to wait for the event.
    #[serde(rename = "timeoutSeconds")]
    pub timeout_seconds: u64,
}

/// Input of `Monitor`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MonitorInput {
    /// Time between checks.
    #[serde(rename = "intervalSeconds")]
    pub interval_seconds: u64,
    /// Checks before the monitor finishes.
    #[serde(rename = "maxChecks")]
    pub max_checks: u32,
    /// Checks done so far (carried through continue-as-new).
    #[serde(default)]
    pub checks: u32,
}

/// Input of `Transfer`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferInput {
    /// Source account key.
    pub from: String,
    /// Destination account key.
    pub to: String,
    /// Amount.
    pub amount: i64,
    /// Wait, holding both locks, for the event `Confirm` (true: transfer, false: cancel).
    #[serde(default)]
    pub confirm: bool,
}

async fn hello_sequence(ctx: OrchestrationContext, _input: ()) -> Result<Vec<String>, TaskError> {
    let mut out = Vec::with_capacity(3);
    for city in ["Tokyo", "Seattle", "London"] {
        out.push(ctx.call_activity::<String>("SayHello", city).await?);
    }
    Ok(out)
}

async fn fan_out_fan_in(ctx: OrchestrationContext, n: u64) -> Result<u64, TaskError> {
    let tasks = (1..=n).map(|i| ctx.call_activity::<u64>("Square", i));
    let mut sum = 0u64;
    for r in when_all(tasks).await {
        sum = sum.wrapping_add(r?);
    }
    Ok(sum)
}

async fn approval(ctx: OrchestrationContext, input: ApprovalInput) -> Result<String, TaskError> {
    let event = ctx.wait_for_external_event::<bool>("Approval");
    let timeout = ctx.create_timer_after(Duration::from_secs(input.timeout_seconds));
    let (winner, value) = when_any(vec![
        Box::pin(async move { Some(event.await) }) as TaskFuture<Option<Result<bool, TaskError>>>,
        Box::pin(async move {
            timeout.await;
            None
        }),
    ])
    .await;
    Ok(match (winner, value) {
        (0, Some(Ok(true))) => "approved".to_string(),
        (0, Some(Ok(false))) => "rejected".to_string(),
        (0, Some(Err(e))) => return Err(e),
        _ => "timed out".to_string(),
    })
}

async fn monitor(ctx: OrchestrationContext, input: MonitorInput) -> Result<String, TaskError> {
    let checks = input.checks + 1;
    let status: String = ctx.call_activity("CheckStatus", checks).await?;
    ctx.set_custom_status(&serde_json::json!({ "checks": checks, "status": status }));
    if checks >= input.max_checks {
        return Ok(format!("finished after {checks} checks"));
    }
    ctx.create_timer_after(Duration::from_secs(input.interval_seconds))
        .await;
    ctx.continue_as_new(MonitorInput { checks, ..input }, true);
    Ok(String::new())
}

async fn transfer(ctx: OrchestrationContext, input: TransferInput) -> Result<bool, FailureDetails> {
    let to_id = |key: &str| {
        EntityId::new("Account", key).map_err(|e| FailureDetails::new("BadInput", e.to_string()))
    };
    let from = to_id(&input.from)?;
    let to = to_id(&input.to)?;
    let section = ctx
        .lock_entities(&[from.clone(), to.clone()])
        .await
        .map_err(|e| FailureDetails::new("LockFailed", e.to_string()))?;
    let balance: i64 = ctx
        .call_entity(&from, "balance", ())
        .await
        .map_err(|e| e.to_failure_details())?;
    let confirmed = !input.confirm
        || ctx
            .wait_for_external_event::<bool>("Confirm")
            .await
            .map_err(|e| e.to_failure_details())?;
    let ok = confirmed && balance >= input.amount;
    if ok {
        ctx.call_entity::<i64>(&from, "withdraw", input.amount)
            .await
            .map_err(|e| e.to_failure_details())?;
        ctx.call_entity::<i64>(&to, "deposit", input.amount)
            .await
            .map_err(|e| e.to_failure_details())?;
    }
    section.release();
    Ok(ok)
}

/// Input of `Withdraw`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WithdrawInput {
    /// Account key.
    pub account: String,
    /// Amount.
    pub amount: i64,
}

async fn withdraw(ctx: OrchestrationContext, input: WithdrawInput) -> Result<i64, FailureDetails> {
    let id = EntityId::new("Account", input.account)
        .map_err(|e| FailureDetails::new("BadInput", e.to_string()))?;
    ctx.call_entity(&id, "withdraw", input.amount)
        .await
        .map_err(|e| e.to_failure_details())
}

fn counter(ctx: &mut EntityContext<i64>) -> Result<i64, FailureDetails> {
    match ctx.operation_name() {
        "add" => {
            let n: i64 = ctx.input()?;
            let s = ctx.state_or_default();
            *s = s.wrapping_add(n);
            Ok(*s)
        }
        "reset" => {
            ctx.set_state(0);
            Ok(0)
        }
        "get" => Ok(ctx.state().copied().unwrap_or(0)),
        "delete" => {
            ctx.delete_state();
            Ok(0)
        }
        _ => Err(ctx.unknown_operation()),
    }
}

fn account(ctx: &mut EntityContext<i64>) -> Result<i64, FailureDetails> {
    match ctx.operation_name() {
        "deposit" => {
            let n: i64 = ctx.input()?;
            let s = ctx.state_or_default();
            *s = s.saturating_add(n);
            Ok(*s)
        }
        "withdraw" => {
            let n: i64 = ctx.input()?;
            let s = ctx.state_or_default();
            if *s < n {
                return Err(FailureDetails::new(
                    "InsufficientFunds",
                    format!("balance {} is below {n}", *s),
                ));
            }
            *s -= n;
            Ok(*s)
        }
        "balance" => Ok(ctx.state().copied().unwrap_or(0)),
        _ => Err(ctx.unknown_operation()),
    }
}

/// Registers the sample orchestrations, activities and entities.
pub fn register(r: &mut Registry) {
    r.add_orchestration("HelloSequence", hello_sequence)
        .add_activity(
            "SayHello",
            |_ctx: ActivityContext, name: String| async move {
                Ok::<_, String>(format!("Hello {name}!"))
            },
        )
        .add_orchestration("FanOutFanIn", fan_out_fan_in)
        .add_activity("Square", |_ctx: ActivityContext, n: u64| async move {
            Ok::<_, String>(n.wrapping_mul(n))
        })
        .add_orchestration("Approval", approval)
        .add_orchestration("Monitor", monitor)
        .add_activity("CheckStatus", |_ctx: ActivityContext, n: u32| async move {
            Ok::<_, String>(format!("check {n}: healthy"))
        })
        .add_entity("Counter", counter)
        .add_entity("Account", account)
        .add_orchestration("Transfer", transfer)
        .add_orchestration("Withdraw", withdraw);
}

/// A registry with the sample app.
pub fn sample_registry() -> Registry {
    let mut r = Registry::new();
    register(&mut r);
    r
}
