use perdure_core::{orchestration, OrchestrationContext, TaskError};

#[orchestration]
async fn orch(ctx: &OrchestrationContext) -> Result<u32, TaskError> {
    let _ = ctx;
    Ok(1)
}

fn main() {}
