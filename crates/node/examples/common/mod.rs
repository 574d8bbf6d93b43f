//! What every pattern example does first: a node with the sample app on the memory store,
//! and a client in the same process. A real deployment runs `perdure-node` and connects
//! with `DurableClient::http` instead; the calls are the same.

use std::sync::Arc;

use perdure_client::DurableClient;
use perdure_node::node::{Node, NodeHandle};
use perdure_node::sample::sample_registry;
use perdure_node::store::memory::MemoryStore;

/// Starts a node with the sample app and returns it with a client.
pub(crate) async fn node_and_client() -> anyhow::Result<(NodeHandle, DurableClient)> {
    let node = Node::builder()
        .registry(Arc::new(sample_registry()))
        .store(Arc::new(MemoryStore::new()))
        .start()
        .await?;
    let client = DurableClient::in_process(Arc::new(node.clone()));
    Ok((node, client))
}
