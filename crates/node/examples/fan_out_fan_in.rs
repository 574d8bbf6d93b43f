//! Pattern 2, fan-out/fan-in: `FanOutFanIn` squares 1..=n in parallel activities and sums
//! them (the code: `crates/node/src/sample/fan_out_fan_in.rs`).
//!
//! ```sh
//! cargo run -p perdure-node --example fan_out_fan_in
//! ```

mod common;

use std::time::Duration;

use perdure_client::StartOptions;
use perdure_node::sample::fan_out_fan_in::fan_out_fan_in;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("sum of squares 1..=100: {}", demo(100).await?);
    Ok(())
}

/// Runs `FanOutFanIn` over 1..=n and returns the sum of the squares.
pub(crate) async fn demo(n: u64) -> anyhow::Result<u64> {
    let (node, client) = common::node_and_client().await?;
    let id = client
        .schedule_new(fan_out_fan_in, n, StartOptions::default())
        .await?;
    let done = client
        .wait_for_instance_completion(&id, Duration::from_secs(60))
        .await?;
    node.shutdown().await;
    Ok(done.read_output()?.unwrap_or_default())
}
