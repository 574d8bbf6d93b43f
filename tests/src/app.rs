//! The test app: the sample app plus two orchestrations the end-to-end tests need and the
//! sample does not have.
//!
//! - `FailsOnce`: calls `SayHello` with "before", then `FailFirstCall`, which fails its first
//!   call for each instance and succeeds afterwards; returns "Hello before! cured". A failure
//!   that a rewind cures: the rewind re-issues the failed activity only.
//! - `Versioned`: calls `SayHello` with "unversioned"; its version "2" calls it with
//!   "version 2". Shows which version a start's `version` ran.
//! - `EchoEvent`: waits for the event `Ping` (an optional bool) and returns it in Rust's debug
//!   form (`"None"`, `"Some(true)"`): shows what a client's event data decodes to.
//! - `ChaosMix`: input `{ "counter": key, "n": n }`; runs `FanOutFanIn` with `n` as a
//!   sub-orchestration, waits on a 300 ms durable timer, signals
//!   `Counter@key` `add n`, calls `Counter@key` `add 1`, and returns the child's output (the sum
//!   of the squares of 1..=n). Each run adds `n + 1` to the counter: the cluster chaos tests
//!   check the totals.
//!
//! The `perdure-test-node` binary serves it; in-process tests build it with [`test_registry`].

use std::collections::BTreeSet;
use std::sync::Mutex;

use std::time::Duration;

use perdure_core::activity::ActivityContext;
use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::registry::Registry;
use perdure_core::{EntityId, FailureDetails};

/// Instances whose `FailFirstCall` has failed once already.
static FAILED_ONCE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

async fn fail_first_call(ctx: ActivityContext, _: ()) -> Result<String, String> {
    let first = FAILED_ONCE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(ctx.instance_id().as_str().to_string());
    if first {
        Err("first call fails".to_string())
    } else {
        Ok("cured".to_string())
    }
}

async fn fails_once(ctx: OrchestrationContext, _: ()) -> Result<String, TaskError> {
    let hello: String = ctx.call_activity("SayHello", "before").await?;
    let cured: String = ctx.call_activity("FailFirstCall", ()).await?;
    Ok(format!("{hello} {cured}"))
}

async fn versioned(ctx: OrchestrationContext, _: ()) -> Result<String, TaskError> {
    ctx.call_activity("SayHello", "unversioned").await
}

async fn versioned_2(ctx: OrchestrationContext, _: ()) -> Result<String, TaskError> {
    ctx.call_activity("SayHello", "version 2").await
}

async fn echo_event(ctx: OrchestrationContext, _: ()) -> Result<String, TaskError> {
    let ping: Option<bool> = ctx.wait_for_external_event("Ping").await?;
    Ok(format!("{ping:?}"))
}

async fn chaos_mix(
    ctx: OrchestrationContext,
    input: serde_json::Value,
) -> Result<u64, FailureDetails> {
    let key = input["counter"].as_str().unwrap_or("chaos").to_string();
    let n = input["n"].as_u64().unwrap_or(1);
    let counter = EntityId::new("Counter", key)
        .map_err(|e| FailureDetails::new("BadInput", e.to_string()))?;
    let sum: u64 = ctx
        .call_sub_orchestration("FanOutFanIn", n)
        .await
        .map_err(|e| e.to_failure_details())?;
    ctx.create_timer_after(Duration::from_millis(300)).await;
    let add = i64::try_from(n).map_err(|e| FailureDetails::new("BadInput", e.to_string()))?;
    ctx.signal_entity(&counter, "add", add)
        .map_err(|e| e.to_failure_details())?;
    ctx.call_entity::<i64>(&counter, "add", 1i64)
        .await
        .map_err(|e| e.to_failure_details())?;
    Ok(sum)
}

/// The sample app plus `FailsOnce`, `Versioned` (and its version "2"), `EchoEvent` and
/// `ChaosMix`.
pub fn test_registry() -> Registry {
    let mut r = perdure_node::sample::sample_registry();
    r.add_orchestration("FailsOnce", fails_once)
        .add_activity("FailFirstCall", fail_first_call)
        .add_orchestration("Versioned", versioned)
        .add_orchestration_version("Versioned", "2", versioned_2)
        .add_orchestration("EchoEvent", echo_event)
        .add_orchestration("ChaosMix", chaos_mix);
    r
}
