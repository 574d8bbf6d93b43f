use perdure_core::{activity, orchestration, OrchestrationContext, TaskError};

#[activity]
async fn say_hello(city: String) -> Result<String, String> {
    Ok(city)
}

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let n: u64 = ctx.call(say_hello, "Tokyo").await?;
    Ok(n)
}

fn main() {}
