use perdure_core::{orchestration, OrchestrationContext, TaskError};

#[orchestration]
async fn orch(ctx: OrchestrationContext) -> Result<u64, TaskError> {
    let _ = &ctx;
    let _s = std::net::TcpStream::connect("127.0.0.1:1");
    Ok(0)
}

fn main() {}
