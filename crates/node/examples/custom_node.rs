//! Your own node binary: register your functions and hand them to the `perdure-node` command
//! line (`dev` and `run`, with every configuration option).
//!
//! ```sh
//! cargo run --example custom_node -p perdure-node -- dev --http 127.0.0.1:8080
//! curl -i -X POST http://127.0.0.1:8080/runtime/webhooks/durabletask/orchestrators/Greet \
//!      -H 'content-type: application/json' -d '"Ada"'
//! ```

use perdure_core::activity::ActivityContext;
use perdure_core::orchestration::{OrchestrationContext, TaskError};
use perdure_core::registry::Registry;

async fn greet(ctx: OrchestrationContext, name: String) -> Result<String, TaskError> {
    ctx.call_activity::<String>("SayHello", name).await
}

fn main() -> std::process::ExitCode {
    let mut registry = Registry::new();
    registry
        .add_orchestration("Greet", greet)
        .add_activity("SayHello", |_ctx: ActivityContext, name: String| async move {
            Ok::<_, String>(format!("Hello {name}!"))
        });
    perdure_node::cli::main(registry)
}
