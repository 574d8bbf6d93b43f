use perdure_core::{orchestration, OrchestrationContext, TaskError};

mod rand {
    pub fn random() -> u64 {
        4
    }
}
#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    let _n: u64 = rand::random();
    Ok(0)
}

fn main() {}
