//! Pattern 5, human interaction: `Approval` waits for the event `Approval` or a deadline
//! (the code: `crates/node/src/sample/human_interaction.rs`).
//!
//! ```sh
//! cargo run -p perdure-node --example human_interaction
//! ```

mod common;

use std::time::Duration;

use perdure_client::StartOptions;
use perdure_node::sample::ApprovalInput;
use perdure_node::sample::human_interaction::approval;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("with a decision: {}", demo(Some(true)).await?);
    println!("without one: {}", demo(None).await?);
    Ok(())
}

/// Starts an approval with a one-second deadline, sends `decision` (if any) as the event,
/// and returns the outcome.
pub(crate) async fn demo(decision: Option<bool>) -> anyhow::Result<String> {
    let (node, client) = common::node_and_client().await?;
    let input = ApprovalInput { timeout_seconds: 1 };
    let id = client
        .schedule_new(approval, input, StartOptions::default())
        .await?;
    if let Some(approved) = decision {
        client.raise_event(&id, "Approval", &approved).await?;
    }
    let done = client
        .wait_for_instance_completion(&id, Duration::from_secs(30))
        .await?;
    node.shutdown().await;
    Ok(done.read_output()?.unwrap_or_default())
}
