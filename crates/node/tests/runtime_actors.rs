//! Instance and entity actors: activation on demand, passivation when idle and at the
//! partition's bound, reactivation by replay with nothing lost.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use perdure_core::management::ManagementApi;
use perdure_core::{EntityId, OrchestrationStatus, Payload};
use perdure_node::metrics::Metrics;
use perdure_node::node::Node;
use perdure_node::options::NodeOptions;
use perdure_node::store::memory::MemoryStore;
use serde_json::json;

fn approval_input() -> Option<Payload> {
    Some(Payload::json(&json!({"timeoutSeconds": 3600})).unwrap())
}

/// Yields to the runtime until `pred` holds on the metrics (bounded).
/// Polls the metrics up to 20,000 times, each after a real millisecond and then a paused
/// millisecond. The real one is a blocking task, which keeps a paused clock still while the
/// store's I/O runs (a wait on a socket lets it jump to the next timer); the paused one lets
/// the node's short timers (a retry's backoff) fire, and being the nearest timer it bounds
/// how far the clock moves: at most 20 s over the whole poll.
async fn until(metrics: &Metrics, what: &str, pred: impl Fn(&Metrics) -> bool) {
    for _ in 0..20_000 {
        if pred(metrics) {
            return;
        }
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
            .await
            .expect("sleep");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never reached: {what}");
}

every_store! {
    #[tokio::test(start_paused = true)]
    async fn an_idle_instance_is_passivated_and_resumes_by_replay(ts) {
        let node = common::start_on(ts.store.clone()).await;
        let m = node.metrics();
        let id = common::start(&node, "Approval", "idle-1", approval_input()).await;
        common::until_status(&node, &id, OrchestrationStatus::Running).await;
        assert_eq!(m.active_instances.load(Ordering::Relaxed), 1);
        let replays = m.replays.load(Ordering::Relaxed);

        // Past the idle time (60 s by default) the sweep stops the actor; the timer stays armed.
        tokio::time::sleep(Duration::from_secs(150)).await;
        until(&m, "instance passivated", |m| {
            m.active_instances.load(Ordering::Relaxed) == 0
        })
        .await;

        common::approve(&node, &id, true).await;
        let out: String = common::output(&node, &id).await;
        assert_eq!(out, "approved");
        assert_eq!(
            m.replays.load(Ordering::Relaxed),
            replays + 1,
            "the new actor replays the stored history once"
        );
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_bound_passivates_idle_instances_and_each_still_finishes() {
    let node = Node::builder()
        .registry(Arc::new(perdure_node::sample::sample_registry()))
        .store(Arc::new(MemoryStore::new()))
        .options(NodeOptions {
            max_active_per_partition: std::num::NonZeroUsize::new(2).unwrap(),
            ..common::options()
        })
        .start()
        .await
        .expect("node starts");
    let m = node.metrics();
    let partitions = node.partitions() as i64;
    let mut ids = Vec::new();
    for i in 0..40 {
        let id = common::start(&node, "Approval", &format!("bound-{i}"), approval_input()).await;
        ids.push(id);
    }
    for id in &ids {
        common::until_status(&node, id, OrchestrationStatus::Running).await;
    }
    let live = m.active_instances.load(Ordering::Relaxed);
    assert!(
        live <= 2 * partitions,
        "{live} instance actors alive; the bound is {}",
        2 * partitions
    );
    for (i, id) in ids.iter().enumerate() {
        common::approve(&node, id, i % 2 == 0).await;
    }
    for (i, id) in ids.iter().enumerate() {
        let out: String = common::output(&node, id).await;
        assert_eq!(out, if i % 2 == 0 { "approved" } else { "rejected" });
    }
    assert!(
        m.replays.load(Ordering::Relaxed) >= 40 - 2 * partitions as u64,
        "passivated instances were reactivated by replay"
    );
    node.shutdown().await;
}

every_store! {
    #[tokio::test(start_paused = true)]
    async fn an_idle_entity_is_passivated_and_keeps_its_state(ts) {
        let node = common::start_on(ts.store.clone()).await;
        let m = node.metrics();
        let id = EntityId::new("Counter", "passivated").unwrap();
        node.signal_entity(
            id.clone(),
            "add".into(),
            Some(Payload::json(&5).unwrap()),
            None,
        )
        .await
        .unwrap();
        until(&m, "entity batch committed", |m| {
            m.entity_operations.load(Ordering::Relaxed) >= 1
        })
        .await;
        assert_eq!(m.active_entities.load(Ordering::Relaxed), 1);

        tokio::time::sleep(Duration::from_secs(150)).await;
        until(&m, "entity passivated", |m| {
            m.active_entities.load(Ordering::Relaxed) == 0
        })
        .await;

        node.signal_entity(
            id.clone(),
            "add".into(),
            Some(Payload::json(&3).unwrap()),
            None,
        )
        .await
        .unwrap();
        until(&m, "second batch committed", |m| {
            m.entity_operations.load(Ordering::Relaxed) >= 2
        })
        .await;
        let state = node.get_entity(id).await.unwrap().expect("entity exists");
        let value: i64 = state.state.expect("state").decode().unwrap();
        assert_eq!(value, 8);
        node.shutdown().await;
    }
}
