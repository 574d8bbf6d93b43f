//! Pattern 4, monitor: `Monitor` checks on a durable timer and starts over with
//! continue-as-new until it has checked enough (the code: `crates/node/src/sample/monitor.rs`).
//! Pattern 3, the async HTTP API, is the starter service in
//! `crates/client/examples/http_starter.rs`.
//!
//! ```sh
//! cargo run -p perdure-node --example monitor
//! ```

mod common;

use std::time::Duration;

use perdure_client::StartOptions;
use perdure_node::sample::MonitorInput;
use perdure_node::sample::monitor::monitor;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("{}", demo(1, 3).await?);
    Ok(())
}

/// Runs `Monitor` with `max_checks` checks `interval_seconds` apart; returns its output.
pub(crate) async fn demo(interval_seconds: u64, max_checks: u32) -> anyhow::Result<String> {
    let (node, client) = common::node_and_client().await?;
    let input = MonitorInput {
        interval_seconds,
        max_checks,
        checks: 0,
    };
    let id = client
        .schedule_new(monitor, input, StartOptions::default())
        .await?;
    let done = client
        .wait_for_instance_completion(&id, Duration::from_secs(60))
        .await?;
    node.shutdown().await;
    Ok(done.read_output()?.unwrap_or_default())
}
