//! Human interaction: wait for an external event (a person's decision) with a deadline.

use std::time::Duration;

use perdure_core::orchestration::{Either, when_any2};
use perdure_core::{OrchestrationContext, TaskError, orchestration};
use serde::{Deserialize, Serialize};

/// Input of `Approval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApprovalInput {
    /// How long to wait for the event.
    #[serde(rename = "timeoutSeconds")]
    pub timeout_seconds: u64,
}

/// Waits for the event `Approval` (a bool) or the timeout: "approved", "rejected" or
/// "timed out".
#[orchestration(name = "Approval")]
pub async fn approval(
    ctx: OrchestrationContext,
    input: ApprovalInput,
) -> Result<String, TaskError> {
    let event = ctx.wait_for_external_event::<bool>("Approval");
    let deadline = ctx.create_timer_after(Duration::from_secs(input.timeout_seconds));
    Ok(match when_any2(event, deadline).await {
        Either::Left(approved) => if approved? { "approved" } else { "rejected" }.to_string(),
        Either::Right(()) => "timed out".to_string(),
    })
}
