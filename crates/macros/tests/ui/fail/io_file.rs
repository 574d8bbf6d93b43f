use perdure_core::{orchestration, OrchestrationContext, TaskError};

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    let _text = std::fs::read_to_string("/etc/hostname");
    Ok(0)
}

fn main() {}
