use perdure_core::{orchestration, OrchestrationContext, TaskError};

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<String, TaskError> {
    let _ = &ctx;
    Ok(format!("started at {:?}", std::time::SystemTime::now()))
}

fn main() {}
