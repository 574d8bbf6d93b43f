use perdure_core::{orchestration, OrchestrationContext, TaskError};

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    let _h = std::thread::spawn(|| 1);
    Ok(0)
}

fn main() {}
