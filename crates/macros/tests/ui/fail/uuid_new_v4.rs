use perdure_core::{orchestration, OrchestrationContext, TaskError};

mod uuid {
    pub struct Uuid;
    impl Uuid {
        pub fn new_v4() -> Self {
            Uuid
        }
    }
}
#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    let _id = uuid::Uuid::new_v4();
    Ok(0)
}

fn main() {}
