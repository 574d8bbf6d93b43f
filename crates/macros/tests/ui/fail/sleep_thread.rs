use perdure_core::{orchestration, OrchestrationContext, TaskError};

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    std::thread::sleep(std::time::Duration::from_millis(1));
    Ok(0)
}

fn main() {}
