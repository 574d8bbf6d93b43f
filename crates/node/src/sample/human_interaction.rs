//! Human interaction: wait for an external event (a person's decision) with a deadline.

use std::time::Duration;

use perdure_core::{OrchestrationContext, TaskError, orchestration, when_any};
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
    let outcome = when_any! {
        approved = ctx.wait_for_external_event::<bool>("Approval") => {
            if approved? { "approved" } else { "rejected" }
        }
        () = ctx.create_timer_after(Duration::from_secs(input.timeout_seconds)) => "timed out",
    };
    Ok(outcome.to_string())
}
