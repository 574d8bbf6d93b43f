//! Function chaining: activities called one after the other, each output feeding the result.

use perdure_core::{OrchestrationContext, TaskError, activity, orchestration};

/// Greets a city.
#[activity(name = "SayHello")]
pub async fn say_hello(city: String) -> Result<String, String> {
    Ok(format!("Hello {city}!"))
}

/// Calls `SayHello` for Tokyo, Seattle and London in turn.
#[orchestration(name = "HelloSequence")]
pub async fn hello_sequence(ctx: OrchestrationContext) -> Result<Vec<String>, TaskError> {
    let mut out = Vec::with_capacity(3);
    for city in ["Tokyo", "Seattle", "London"] {
        out.push(ctx.call(say_hello, city).await?);
    }
    Ok(out)
}
