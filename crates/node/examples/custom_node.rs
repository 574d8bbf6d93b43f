//! Your own node binary: register your functions and hand them to the `perdure-node` command
//! line (`dev` and `run`, with every configuration option). README.md shows this file from its
//! `use` line on (`tests/tests/docs_snippets.rs` checks that they match).
//!
//! ```sh
//! cargo run --example custom_node -p perdure-node -- dev --http 127.0.0.1:8080
//! curl -i -X POST http://127.0.0.1:8080/runtime/webhooks/durabletask/orchestrators/HelloSequence
//! ```

use perdure_core::{OrchestrationContext, Registry, TaskError, activity, orchestration};

#[activity(name = "SayHello")]
async fn say_hello(city: String) -> Result<String, String> {
    Ok(format!("Hello {city}!"))
}

#[orchestration(name = "HelloSequence")]
async fn hello_sequence(ctx: OrchestrationContext) -> Result<Vec<String>, TaskError> {
    let mut out = Vec::new();
    for city in ["Tokyo", "Seattle", "London"] {
        // Input and output types come from `say_hello`'s signature.
        out.push(ctx.call(say_hello, city).await?);
    }
    Ok(out)
}

fn main() -> std::process::ExitCode {
    let mut registry = Registry::new();
    registry.register(say_hello).register(hello_sequence);
    // A node binary of your own, with your functions (same `dev` / `run` commands):
    perdure_node::cli::main(registry)
}
