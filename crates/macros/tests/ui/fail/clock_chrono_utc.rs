use perdure_core::{orchestration, OrchestrationContext, TaskError};

mod chrono {
    pub struct Utc;
    impl Utc {
        pub fn now() -> u64 {
            0
        }
    }
}
#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    let _t = chrono::Utc::now();
    Ok(0)
}

fn main() {}
