//! Recovery: a node that stops mid-flight resumes everything from the store on restart.

mod common;

use std::sync::Arc;

use perdure_core::management::ManagementApi;
use perdure_core::{EntityId, Payload};
use perdure_node::store::memory::MemoryStore;

#[tokio::test]
async fn a_restarted_node_finishes_what_was_in_flight() {
    let store = Arc::new(MemoryStore::new());
    let node = common::start_on(store.clone()).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(common::start(&node, "HelloSequence", &format!("rec-{i}"), None).await);
    }
    let fan = common::start(
        &node,
        "FanOutFanIn",
        "rec-fan",
        Some(Payload::json(&50u64).unwrap()),
    )
    .await;
    let c = EntityId::new("Counter", "rec").unwrap();
    for _ in 0..30 {
        node.signal_entity(
            c.clone(),
            "add".into(),
            Some(Payload::json(&1).unwrap()),
            None,
        )
        .await
        .unwrap();
    }
    node.shutdown().await;
    drop(node);

    let node = common::start_on(store).await;
    for id in &ids {
        let out: Vec<String> = common::output(&node, id).await;
        assert_eq!(out.len(), 3);
        let hist = node.get_history(id.clone()).await.unwrap().unwrap();
        assert_eq!(
            hist.iter().filter(|e| e.name() == "TaskCompleted").count(),
            3
        );
    }
    let sum: u64 = common::output(&node, &fan).await;
    assert_eq!(sum, (1..=50u64).map(|i| i * i).sum::<u64>());
    let read = common::start(&node, "HelloSequence", "after", None).await;
    common::wait(&node, &read).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_second_node_on_the_same_partitions_fences_the_first() {
    use perdure_node::node::Node;
    use perdure_node::options::{ClusterOptions, NodeOptions};

    let store = Arc::new(MemoryStore::new());
    let start = || {
        let opts = NodeOptions {
            cluster: ClusterOptions {
                name: "fenced".into(),
                lease_ttl: std::time::Duration::from_millis(600),
                heartbeat_interval: std::time::Duration::from_millis(100),
                ..ClusterOptions::default()
            },
            ..common::options()
        };
        Node::builder()
            .registry(Arc::new(perdure_node::sample::sample_registry()))
            .store(store.clone())
            .options(opts)
            .start()
    };
    let first = start().await.expect("first starts");
    // The first process freezes (no heartbeats, no renewals); a new process of the same
    // name takes every partition with a new epoch once the old heartbeat expired.
    first.abandon_for_test().await;
    let second = start().await.expect("second starts");
    let id = common::start(&second, "HelloSequence", "fence-1", None).await;
    let _: Vec<String> = common::output(&second, &id).await;
    // The first node's partitions are deposed: their commits fail with `Fenced` and they
    // stop, so the message stays in the store.
    let id2 = common::start(&first, "HelloSequence", "fence-2", None).await;
    second.shutdown().await;
    first.shutdown().await;
    // A node that acquires the partitions again finishes it, exactly once.
    let third = start().await.expect("third starts");
    let _: Vec<String> = common::output(&third, &id2).await;
    let hist = third.get_history(id2).await.unwrap().unwrap();
    assert_eq!(
        hist.iter()
            .filter(|e| e.name() == "ExecutionCompleted")
            .count(),
        1
    );
    third.shutdown().await;
}
