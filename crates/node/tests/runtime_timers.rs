//! Durable timers and external events, on paused time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use perdure_core::management::ManagementApi;
use perdure_core::{OrchestrationStatus, Payload};
use perdure_node::store::memory::MemoryStore;
use serde_json::json;

every_store! {
    #[tokio::test(start_paused = true)]
    async fn approval_times_out_after_its_timer_and_not_before(ts) {
        let node = common::start_on(ts.store.clone()).await;
        let t0 = tokio::time::Instant::now();
        let id = common::start(
            &node,
            "Approval",
            "appr-timeout",
            Some(Payload::json(&json!({"timeoutSeconds": 3600})).unwrap()),
        )
        .await;
        let out: String = common::output(&node, &id).await;
        assert_eq!(out, "timed out");
        assert!(t0.elapsed() >= Duration::from_secs(3600), "fired early");
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test(start_paused = true)]
    async fn approval_receives_the_event(ts) {
        let node = common::start_on(ts.store.clone()).await;
        for (key, value, want) in [("a1", true, "approved"), ("a2", false, "rejected")] {
            let id = common::start(
                &node,
                "Approval",
                key,
                Some(Payload::json(&json!({"timeoutSeconds": 3600})).unwrap()),
            )
            .await;
            common::until_status(&node, &id, OrchestrationStatus::Running).await;
            node.raise_event(
                id.clone(),
                "Approval".into(),
                Some(Payload::json(&value).unwrap()),
            )
            .await
            .unwrap();
            let out: String = common::output(&node, &id).await;
            assert_eq!(out, want);
        }
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test(start_paused = true)]
    async fn monitor_continues_as_new_and_shows_checks(ts) {
        let node = common::start_on(ts.store.clone()).await;
        let id = common::start(
            &node,
            "Monitor",
            "mon-1",
            Some(Payload::json(&json!({"intervalSeconds": 60, "maxChecks": 4})).unwrap()),
        )
        .await;
        let st = common::wait(&node, &id).await;
        assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
        let out: String = st.output.unwrap().decode().unwrap();
        assert_eq!(out, "finished after 4 checks");
        let cs: serde_json::Value = st.custom_status.unwrap().decode().unwrap();
        assert_eq!(cs["checks"], 4);
        // The history holds only the last execution.
        let hist = node.get_history(id).await.unwrap().unwrap();
        assert_eq!(
            hist.iter()
                .filter(|e| e.name() == "ExecutionStarted")
                .count(),
            1
        );
        node.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn timers_survive_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let node = common::start_on(store.clone()).await;
    let id = common::start(
        &node,
        "Approval",
        "appr-restart",
        Some(Payload::json(&json!({"timeoutSeconds": 600})).unwrap()),
    )
    .await;
    common::until_status(&node, &id, OrchestrationStatus::Running).await;
    node.shutdown().await;
    let node = common::start_on(store).await;
    let out: String = common::output(&node, &id).await;
    assert_eq!(out, "timed out");
    node.shutdown().await;
}
