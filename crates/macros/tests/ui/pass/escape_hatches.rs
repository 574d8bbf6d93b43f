use perdure_core::{orchestration, OrchestrationContext, TaskError};

#[orchestration]
async fn marked(ctx: OrchestrationContext) -> Result<bool, TaskError> {
    let _ = &ctx;
    // Safe here: only logged, never decides anything.
    #[nondeterministic]
    let started = std::time::Instant::now();
    Ok(started.elapsed().as_secs() < 1_000_000)
}

#[orchestration(allow_nondeterministic)]
async fn whole_function(_ctx: OrchestrationContext) -> Result<bool, TaskError> {
    Ok(std::env::var("PATH").is_ok() || std::time::SystemTime::now().elapsed().is_ok())
}

// A helper fn nested in the body is not orchestrator code by itself.
#[orchestration]
async fn nested_item(_ctx: OrchestrationContext) -> Result<u32, TaskError> {
    fn unused_helper() -> bool {
        std::env::var("X").is_ok()
    }
    let _ = unused_helper;
    Ok(1)
}

fn main() {
    let _ = (marked, whole_function, nested_item);
    uses_match();
}

// Fields and methods in macro arguments are not paths; a raw identifier names a handle.
pub struct Rng {
    pub thread_rng: u32,
}

#[orchestration]
async fn r#match(_ctx: OrchestrationContext, rng: u32) -> Result<String, TaskError> {
    let r = Rng { thread_rng: rng };
    Ok(format!("{}", r.thread_rng))
}

fn uses_match() {
    let _ = r#match;
    let _ = MatchOrchestration;
}
