//! Sub-orchestrations and continue-as-new with carried events.

mod common;

use perdure_core::management::ManagementApi;
use perdure_core::orchestration::{OrchestrationContext, SubOrchestrationOptions};
use perdure_core::{InstanceId, OrchestrationStatus, Payload};

fn registry() -> perdure_core::registry::Registry {
    let mut r = perdure_node::sample::sample_registry();
    r.add_orchestration("Parent", |ctx: OrchestrationContext, _: ()| async move {
        let a: Vec<String> = ctx
            .call_sub_orchestration("HelloSequence", ())
            .await
            .map_err(|e| e.to_string())?;
        let failed = ctx
            .call_sub_orchestration::<String>("Failing", ())
            .await
            .is_err();
        let opts = SubOrchestrationOptions {
            instance_id: Some(InstanceId::new("explicit-child").map_err(|e| e.to_string())?),
            ..Default::default()
        };
        let b: u64 = ctx
            .call_sub_orchestration_with_options("FanOutFanIn", 3u64, opts)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((a.len(), failed, b))
    })
    .add_orchestration("Failing", |_ctx: OrchestrationContext, _: ()| async move {
        Err::<String, _>("child failed on purpose".to_string())
    })
    .add_orchestration(
        "Collect",
        |ctx: OrchestrationContext, total: i64| async move {
            let v: i64 = ctx
                .wait_for_external_event("add")
                .await
                .map_err(|e| e.to_string())?;
            let total = total + v;
            if total >= 6 {
                return Ok::<_, String>(total);
            }
            ctx.continue_as_new(total, true);
            Ok(0)
        },
    );
    r
}

every_store! {
    #[tokio::test]
    async fn sub_orchestrations_report_results_and_failures(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;
        let id = common::start(&node, "Parent", "parent-1", None).await;
        let out: (usize, bool, u64) = common::output(&node, &id).await;
        assert_eq!(out, (3, true, 14));
        let child = node
            .get_instance(InstanceId::new("explicit-child").unwrap(), false)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(child.runtime_status, OrchestrationStatus::Completed);
        assert_eq!(child.parent_instance_id, Some(id));
        node.shutdown().await;
    }
}

every_store! {
    #[tokio::test]
    async fn continue_as_new_carries_unprocessed_events(ts) {
        let node = common::start_with(ts.store.clone(), registry()).await;
        let id = common::start(
            &node,
            "Collect",
            "collect-1",
            Some(Payload::json(&0).unwrap()),
        )
        .await;
        // Three events at once: the first execution consumes one, the rest are carried.
        for v in [1, 2, 3] {
            node.raise_event(id.clone(), "add".into(), Some(Payload::json(&v).unwrap()))
                .await
                .unwrap();
        }
        let total: i64 = common::output(&node, &id).await;
        assert_eq!(total, 6);
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
