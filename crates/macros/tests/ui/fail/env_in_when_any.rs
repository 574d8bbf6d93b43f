use perdure_core::{orchestration, when_any, OrchestrationContext, TaskError};

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<bool, TaskError> {
    let found = when_any! {
        approved = ctx.wait_for_external_event::<bool>("Approval") => approved?,
        () = ctx.create_timer_after(std::time::Duration::from_secs(60)) => std::env::var("X").is_ok(),
    };
    Ok(found)
}

fn main() {}
