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
    let store = Arc::new(MemoryStore::new());
    let first = common::start_on(store.clone()).await;
    // Same node name: takes every partition at once with a new epoch.
    let second = common::start_on(store.clone()).await;
    let id = common::start(&second, "HelloSequence", "fence-1", None).await;
    let _: Vec<String> = common::output(&second, &id).await;
    // The first node's partitions are deposed: their commits fail with `Fenced` and they
    // stop, so the message stays in the store.
    let id2 = common::start(&first, "HelloSequence", "fence-2", None).await;
    second.shutdown().await;
    first.shutdown().await;
    // A node that acquires the partitions again finishes it, exactly once.
    let third = common::start_on(store).await;
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

#[tokio::test]
async fn a_stopped_node_hands_its_partitions_over_at_once() {
    use perdure_node::node::Node;
    use perdure_node::options::NodeOptions;

    let store = Arc::new(MemoryStore::new());
    let start = |name: &str| {
        let opts = NodeOptions {
            node_name: name.to_string(),
            // Far longer than the test: only the release lets the second node in.
            partition_lease: std::time::Duration::from_secs(3600),
            ..common::options()
        };
        Node::builder()
            .registry(Arc::new(perdure_node::sample::sample_registry()))
            .store(store.clone())
            .options(opts)
            .start()
    };
    let first = start("first").await.expect("first node starts");
    let id = common::start(&first, "HelloSequence", "handed-over", None).await;
    common::wait(&first, &id).await;
    // While the first node runs, its leases keep another node out.
    assert!(start("second").await.is_err());
    first.shutdown().await;
    drop(first);

    let second = start("second")
        .await
        .expect("the released partitions are free");
    let st = common::wait(&second, &id).await;
    assert_eq!(
        st.runtime_status,
        perdure_core::OrchestrationStatus::Completed
    );
    second.shutdown().await;
}
