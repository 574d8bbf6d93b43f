//! Pattern 6, aggregator: the `Counter` entity sums what it is sent, one operation at a time
//! (the code: `crates/node/src/sample/aggregator.rs`). Signals are one-way, so the client
//! reads the state until every signal has been applied.
//!
//! ```sh
//! cargo run -p perdure-node --example aggregator
//! ```

mod common;

use std::time::Duration;

use perdure_node::sample::Counter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("counter: {}", demo(&[5, 10, -3]).await?);
    Ok(())
}

/// Signals `add` for each amount to counter `demo`, then reads its value once all arrived.
pub(crate) async fn demo(amounts: &[i64]) -> anyhow::Result<i64> {
    let (node, client) = common::node_and_client().await?;
    let counter = client.entity::<Counter>("demo");
    for &n in amounts {
        counter.signal().add(n).await?;
    }
    let expected: i64 = amounts.iter().sum();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let value = loop {
        let value = counter.state().await?.map_or(0, |c| c.0);
        if value == expected || tokio::time::Instant::now() > deadline {
            break value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    node.shutdown().await;
    Ok(value)
}
