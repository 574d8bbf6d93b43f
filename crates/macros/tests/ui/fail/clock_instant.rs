use perdure_core::{orchestration, OrchestrationContext, TaskError};

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    let _t = std::time::Instant::now();
    Ok(0)
}

fn main() {}
