//! Monitor: a recurring check on a durable timer, eternal through continue-as-new.

use std::time::Duration;

use perdure_core::{OrchestrationContext, TaskError, activity, orchestration};
use serde::{Deserialize, Serialize};

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

/// One health check.
#[activity(name = "CheckStatus")]
pub async fn check_status(n: u32) -> Result<String, String> {
    Ok(format!("check {n}: healthy"))
}

/// Checks, shows the count in the custom status, sleeps on a durable timer, starts over.
#[orchestration(name = "Monitor")]
pub async fn monitor(ctx: OrchestrationContext, input: MonitorInput) -> Result<String, TaskError> {
    let checks = input.checks + 1;
    let status = ctx.call(check_status, checks).await?;
    ctx.set_custom_status(&serde_json::json!({ "checks": checks, "status": status }));
    if checks >= input.max_checks {
        return Ok(format!("finished after {checks} checks"));
    }
    ctx.create_timer_after(Duration::from_secs(input.interval_seconds))
        .await;
    ctx.continue_as_new(MonitorInput { checks, ..input }, true);
    Ok(String::new())
}
