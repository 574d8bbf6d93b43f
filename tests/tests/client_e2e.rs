//! `perdure-client` over HTTP (against the spawned binary, with failover) and in process
//! (against an embedded node): the same scenarios through both transports, on the test app
//! (`perdure_tests::app`: the sample app plus `FailsOnce` for rewind).

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use perdure_client::Timestamp;
use perdure_client::{
    ClientError, DurableClient, EntityId, EntityQuery, InstanceQuery, OrchestrationStatus,
    PurgeFilter, StartOptions,
};
use perdure_node::node::Node;
use perdure_node::store::memory::MemoryStore;
use perdure_tests::NodeProcess;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn scenario(client: &DurableClient, tag: &str) {
    // Start + wait (long poll) + typed output.
    let id = client
        .schedule_new_orchestration(
            "HelloSequence",
            &(),
            StartOptions::with_id(format!("{tag}-hello")),
        )
        .await
        .unwrap();
    assert_eq!(id.as_str(), format!("{tag}-hello"));
    let done = client
        .wait_for_instance_completion(&id, WAIT)
        .await
        .unwrap();
    assert_eq!(done.runtime_status(), OrchestrationStatus::Completed);
    let out: Vec<String> = done.read_output().unwrap().unwrap();
    assert_eq!(out, ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]);

    // With history, without payloads.
    let m = client
        .get_instance(&id, false, true)
        .await
        .unwrap()
        .unwrap();
    assert!(m.state.output.is_none());
    let history = m.history.unwrap();
    assert!(history.iter().any(|e| e.name() == "TaskCompleted"));
    assert!(
        client
            .get_instance(
                &perdure_client::InstanceId::new("nobody").unwrap(),
                true,
                false
            )
            .await
            .unwrap()
            .is_none()
    );

    // Human interaction with a typed event.
    let a = client
        .schedule_new_orchestration(
            "Approval",
            &json!({"timeoutSeconds": 300}),
            StartOptions::with_id(format!("{tag}-approval")),
        )
        .await
        .unwrap();
    let err = client
        .wait_for_instance_completion(&a, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    client.raise_event(&a, "Approval", &false).await.unwrap();
    let done = client.wait_for_instance_completion(&a, WAIT).await.unwrap();
    assert_eq!(done.read_output::<String>().unwrap().unwrap(), "rejected");
    let err = client.raise_event(&a, "Approval", &true).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Management(perdure_core::management::ManagementError::InvalidState { .. })
        ),
        "{err}"
    );
    let ghost = perdure_client::InstanceId::new("ghost").unwrap();
    assert!(
        client
            .terminate(&ghost, None, false)
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Lifecycle.
    let t = client
        .schedule_new_orchestration(
            "Approval",
            &json!({"timeoutSeconds": 300}),
            StartOptions::with_id(format!("{tag}-term")),
        )
        .await
        .unwrap();
    client.suspend(&t, Some("hold")).await.unwrap();
    // Suspension is applied by the instance after the 202; wait until it shows.
    let mut suspended = false;
    for _ in 0..300 {
        let m = client
            .get_instance(&t, false, false)
            .await
            .unwrap()
            .unwrap();
        if m.runtime_status() == OrchestrationStatus::Suspended {
            suspended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(suspended);
    client.resume(&t, Some("go")).await.unwrap();
    client.terminate(&t, Some("enough"), false).await.unwrap();
    let done = client.wait_for_instance_completion(&t, WAIT).await.unwrap();
    assert_eq!(done.runtime_status(), OrchestrationStatus::Terminated);
    let r = client.restart(&id, true).await.unwrap();
    assert_ne!(r, id);
    client.wait_for_instance_completion(&r, WAIT).await.unwrap();

    // Paging as a stream over more than one page.
    for i in 0..30 {
        client
            .schedule_new_orchestration(
                "HelloSequence",
                &(),
                StartOptions::with_id(format!("{tag}-bulk-{i:02}")),
            )
            .await
            .unwrap();
    }
    for i in 0..30 {
        let id = perdure_client::InstanceId::new(format!("{tag}-bulk-{i:02}")).unwrap();
        client
            .wait_for_instance_completion(&id, WAIT)
            .await
            .unwrap();
    }
    let all: Vec<_> = client
        .query_instances(InstanceQuery {
            instance_id_prefix: Some(format!("{tag}-bulk-")),
            page_size: 7,
            ..InstanceQuery::default()
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 30);
    let counts = client
        .count_instances(InstanceQuery {
            instance_id_prefix: Some(format!("{tag}-bulk-")),
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(counts.get(&OrchestrationStatus::Completed), Some(&30));

    // Purge one, then by filter with progress.
    assert_eq!(client.purge_instance(&id).await.unwrap(), 1);
    assert_eq!(client.purge_instance(&id).await.unwrap(), 0);
    let mut seen = Vec::new();
    let n = client
        .purge_instances_with_progress(
            PurgeFilter {
                statuses: vec![OrchestrationStatus::Completed],
                ..PurgeFilter::default()
            },
            |n| seen.push(n),
        )
        .await
        .unwrap();
    assert!(n >= 30, "{n}");
    assert_eq!(seen.last(), Some(&n));

    // Entities.
    let c = EntityId::new("Counter", format!("{tag}-c")).unwrap();
    client.signal_entity(&c, "add", &4, None).await.unwrap();
    client.signal_entity(&c, "add", &6, None).await.unwrap();
    let mut value = None;
    for _ in 0..300 {
        value = client.get_entity_state::<i64>(&c).await.unwrap();
        if value == Some(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(value, Some(10));
    let listed: Vec<_> = client
        .query_entities(EntityQuery {
            name: Some("counter".into()),
            fetch_state: true,
            ..EntityQuery::default()
        })
        .try_collect()
        .await
        .unwrap();
    assert!(listed.iter().any(|e| e.id == c));
    client.clean_entity_storage(true, true).await.unwrap();
}

/// A start in the future stays Pending until its time; a version is kept on the instance; a
/// rewind runs a failed instance again from its failed activity.
async fn start_options_and_rewind(client: &DurableClient, tag: &str) {
    let at = Timestamp::from_system_time(std::time::SystemTime::now() + Duration::from_secs(2));
    let id = client
        .schedule_new_orchestration(
            "Versioned",
            &(),
            StartOptions {
                instance_id: Some(format!("{tag}-later")),
                scheduled_start: Some(at),
                version: Some("2".into()),
                trace_parent: None,
            },
        )
        .await
        .unwrap();
    let m = client
        .get_instance(&id, false, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.runtime_status(), OrchestrationStatus::Pending);
    assert_eq!(m.state.version.as_deref(), Some("2"));
    let done = client
        .wait_for_instance_completion(&id, WAIT)
        .await
        .unwrap();
    assert_eq!(done.runtime_status(), OrchestrationStatus::Completed);
    assert_eq!(done.state.version.as_deref(), Some("2"));
    assert_eq!(
        done.read_output::<String>().unwrap().unwrap(),
        "Hello version 2!"
    );
    assert!(
        done.state.last_updated_at >= at,
        "finished at {:?}, before its scheduled start {at:?}",
        done.state.last_updated_at
    );
    let history = client.get_history(&id).await.unwrap().unwrap();
    let ran_at = history
        .iter()
        .find(|e| e.name() == "TaskScheduled")
        .map(|e| e.timestamp)
        .unwrap();
    assert!(ran_at >= at, "ran at {ran_at:?}, before {at:?}");

    // Rewind: FailsOnce's activity fails on its first call only.
    let f = client
        .schedule_new_orchestration(
            "FailsOnce",
            &(),
            StartOptions::with_id(format!("{tag}-fail")),
        )
        .await
        .unwrap();
    let failed = client.wait_for_instance_completion(&f, WAIT).await.unwrap();
    assert_eq!(failed.runtime_status(), OrchestrationStatus::Failed);
    assert!(failed.state.failure.is_some());
    client.rewind(&f, Some("fixed")).await.unwrap();
    let done = client.wait_for_instance_completion(&f, WAIT).await.unwrap();
    assert_eq!(done.runtime_status(), OrchestrationStatus::Completed);
    assert_eq!(
        done.read_output::<String>().unwrap().unwrap(),
        "Hello before! cured"
    );
    // The history was kept: SayHello ran once, FailFirstCall twice (failed, then completed).
    let history = client.get_history(&f).await.unwrap().unwrap();
    let scheduled = history
        .iter()
        .filter(|e| e.name() == "TaskScheduled")
        .count();
    assert_eq!(scheduled, 2, "{history:?}");
    let err = client.rewind(&f, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Management(perdure_core::management::ManagementError::InvalidState { .. })
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_over_http_with_failover() {
    let node = NodeProcess::spawn_test_app().unwrap();
    // The first node does not exist: requests fail over to the second.
    let dead = "http://127.0.0.1:9".to_string();
    let client = DurableClient::http([dead, node.origin.clone()]).unwrap();
    scenario(&client, "http").await;
    start_options_and_rewind(&client, "http").await;

    // The HTTP starter's answer.
    let id = perdure_client::InstanceId::new("x 1").unwrap();
    let r = client.create_check_status_response("http://example.test:8080", &id);
    assert_eq!(r.status, 202);
    assert_eq!(
        r.location,
        "http://example.test:8080/runtime/webhooks/durabletask/instances/x%201"
    );
    assert_eq!(r.body["id"], "x 1");

    // No node at all: a typed, retryable error.
    let none = DurableClient::http(["http://127.0.0.1:9"]).unwrap();
    let err = none.get_instance(&id, true, false).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Unreachable { .. }) && err.is_retryable(),
        "{err}"
    );
    let bad = DurableClient::http(["ftp://x"]).unwrap_err();
    assert!(matches!(bad, ClientError::Config(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_in_process() {
    let node = Node::builder()
        .registry(Arc::new(perdure_tests::app::test_registry()))
        .store(Arc::new(MemoryStore::new()))
        .start()
        .await
        .unwrap();
    let client = DurableClient::in_process(Arc::new(node.clone()));
    scenario(&client, "local").await;
    start_options_and_rewind(&client, "local").await;
    node.shutdown().await;
}
