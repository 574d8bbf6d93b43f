use perdure_core::{activity, orchestration, OrchestrationContext, TaskError};

#[activity]
async fn say_hello(city: String) -> Result<String, String> {
    Ok(city)
}

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<String, TaskError> {
    ctx.call(say_hello, 42u32).await
}

fn main() {}
