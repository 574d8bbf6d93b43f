//! Your own node binary: register your functions and hand them to the `perdure-node` command
//! line (`dev` and `run`, with every configuration option). README.md shows this file from its
//! `use` line on (`tests/tests/docs_snippets.rs` checks that they match).
//!
//! ```sh
//! cargo run --example custom_node -p perdure-node -- dev --http 127.0.0.1:8080
//! curl -i -X POST http://127.0.0.1:8080/runtime/webhooks/durabletask/orchestrators/HelloSequence
//! ```

use perdure_core::{ActivityContext, FailureDetails, OrchestrationContext, Registry};

fn main() -> std::process::ExitCode {
    let mut registry = Registry::new();
    registry.add_activity("SayHello", |_ctx: ActivityContext, city: String| async move {
        Ok::<_, String>(format!("Hello {city}!"))
    });
    registry.add_orchestration(
        "HelloSequence",
        |ctx: OrchestrationContext, _: ()| async move {
            let mut out = Vec::new();
            for city in ["Tokyo", "Seattle", "London"] {
                out.push(ctx.call_activity::<String>("SayHello", city).await?);
            }
            Ok::<_, FailureDetails>(out)
        },
    );
    // A node binary of your own, with your functions (same `dev` / `run` commands):
    perdure_node::cli::main(registry)
}
