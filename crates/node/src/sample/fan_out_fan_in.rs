//! Fan-out/fan-in: many activities at once, then one result from all of theirs.

use perdure_core::{OrchestrationContext, TaskError, activity, orchestration, when_all};

/// `n * n` (wrapping).
#[activity(name = "Square")]
pub async fn square(n: u64) -> Result<u64, String> {
    Ok(n.wrapping_mul(n))
}

/// Calls `Square` for 1..=n in parallel and returns the sum.
#[orchestration(name = "FanOutFanIn")]
pub async fn fan_out_fan_in(ctx: OrchestrationContext, n: u64) -> Result<u64, TaskError> {
    let squares = when_all((1..=n).map(|i| ctx.call(square, i))).await;
    let mut sum = 0u64;
    for s in squares {
        sum = sum.wrapping_add(s?);
    }
    Ok(sum)
}
