use perdure_core::{orchestration, OrchestrationContext, TaskError};

mod tokio {
    pub fn spawn<F>(_: F) {}
}
#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    tokio::spawn(async {});
    Ok(0)
}

fn main() {}
