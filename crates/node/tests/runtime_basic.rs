//! End-to-end runtime tests on one node: starts, activities, completion, waiting, queries.

mod common;

use perdure_core::management::{FunctionKind, InstanceQuery, ManagementApi, StartRequest};
use perdure_core::{OrchestrationStatus, Payload};

#[tokio::test]
async fn hello_sequence_completes_on_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_embedded(dir.path()).await;
    let id = common::start(&node, "HelloSequence", "hello-1", None).await;
    let out: Vec<String> = common::output(&node, &id).await;
    assert_eq!(out, ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]);
    let hist = node.get_history(id).await.unwrap().unwrap();
    let completed = hist.iter().filter(|e| e.name() == "TaskCompleted").count();
    assert_eq!(completed, 3);
    assert_eq!(
        hist.iter()
            .filter(|e| e.name() == "ExecutionCompleted")
            .count(),
        1
    );
    node.shutdown().await;
}

every_store! {
    #[tokio::test]
    async fn fan_out_fan_in_sums_squares(ts) {
        let node = common::start_on(ts.store.clone()).await;
        let id = common::start(
            &node,
            "FanOutFanIn",
            "fan-1",
            Some(Payload::json(&100u64).unwrap()),
        )
        .await;
        let sum: u64 = common::output(&node, &id).await;
        assert_eq!(sum, (1..=100u64).map(|i| i * i).sum::<u64>());
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test]
    async fn many_instances_complete_and_queries_page_and_count(ts) {
        let node = common::start_on(ts.store.clone()).await;
        let mut ids = Vec::new();
        for i in 0..50 {
            ids.push(common::start(&node, "HelloSequence", &format!("q-{i:02}"), None).await);
        }
        for id in &ids {
            common::wait(&node, id).await;
        }
        let counts = node
            .count_instances(InstanceQuery::default())
            .await
            .unwrap();
        assert_eq!(counts.get(&OrchestrationStatus::Completed), Some(&50));
        // Paging by prefix.
        let mut q = InstanceQuery {
            instance_id_prefix: Some("q-".into()),
            page_size: 20,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = node.query_instances(q.clone()).await.unwrap();
            seen.extend(page.instances.into_iter().map(|s| s.instance_id));
            match page.continuation {
                Some(c) => q.continuation = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, ids);
        let by_status = node
            .query_instances(InstanceQuery {
                statuses: vec![OrchestrationStatus::Running],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(by_status.instances.is_empty());
        let by_name = node
            .count_instances(InstanceQuery {
                name: Some("HelloSequence".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_name.get(&OrchestrationStatus::Completed), Some(&50));
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test]
    async fn registered_names_and_metrics(ts) {
        let node = common::start_on(ts.store.clone()).await;
        let names = node.registered_names(FunctionKind::Orchestration);
        for n in [
            "Approval",
            "FanOutFanIn",
            "HelloSequence",
            "Monitor",
            "Transfer",
        ] {
            assert!(names.contains(&n.to_string()), "{names:?}");
        }
        assert_eq!(
            node.registered_names(FunctionKind::Entity),
            vec!["account".to_string(), "counter".to_string()]
        );
        let id = node
            .start(StartRequest::new("HelloSequence"))
            .await
            .unwrap();
        common::wait(&node, &id).await;
        let text = node.metrics().render_prometheus();
        assert!(text.contains("perdure_activities_total 3"), "{text}");
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test]
    async fn every_accepted_start_is_counted_once(ts) {
        let node = common::start_on(ts.store.clone()).await;
        for i in 0..3 {
            let id = common::start(&node, "HelloSequence", &format!("count-{i}"), None).await;
            common::wait(&node, &id).await;
        }
        let text = node.metrics().render_prometheus();
        let line = text
            .lines()
            .find(|l| l.starts_with("perdure_starts_total "))
            .expect("perdure_starts_total is exported");
        assert_eq!(line, "perdure_starts_total 3");
        node.shutdown().await;
    }
}
