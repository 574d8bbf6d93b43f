use perdure_core::{orchestration, OrchestrationContext, TaskError};

#[orchestration]
async fn orch(_ctx: OrchestrationContext, a: u32, b: u32) -> Result<u32, TaskError> {
    Ok(a + b)
}

fn main() {}
