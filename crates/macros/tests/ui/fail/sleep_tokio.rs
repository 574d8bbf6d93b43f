use perdure_core::{orchestration, OrchestrationContext, TaskError};

mod tokio {
    pub mod time {
        pub async fn sleep(_: u64) {}
    }
}
#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    tokio::time::sleep(1).await;
    Ok(0)
}

fn main() {}
