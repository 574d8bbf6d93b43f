//! Pattern 1, function chaining: `HelloSequence` calls `SayHello` three times in turn
//! (the code: `crates/node/src/sample/chaining.rs`).
//!
//! ```sh
//! cargo run -p perdure-node --example chaining
//! ```

mod common;

use std::time::Duration;

use perdure_client::StartOptions;
use perdure_node::sample::chaining::hello_sequence;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("{:?}", demo().await?);
    Ok(())
}

/// Runs `HelloSequence` and returns its output.
pub(crate) async fn demo() -> anyhow::Result<Vec<String>> {
    let (node, client) = common::node_and_client().await?;
    let id = client
        .schedule_new(hello_sequence, (), StartOptions::default())
        .await?;
    let done = client
        .wait_for_instance_completion(&id, Duration::from_secs(30))
        .await?;
    node.shutdown().await;
    Ok(done.read_output()?.unwrap_or_default())
}
