//! Bad input: each gets a clear error or fails only its own instance; the node keeps running.

mod common;

use std::sync::Arc;

use perdure_core::activity::ActivityContext;
use perdure_core::management::{FunctionKind, ManagementApi, ManagementError, StartRequest};
use perdure_core::orchestration::OrchestrationContext;
use perdure_core::{EntityId, InstanceId, OrchestrationStatus, Payload};
use perdure_node::store::memory::MemoryStore;

fn registry() -> perdure_core::registry::Registry {
    let mut r = perdure_node::sample::sample_registry();
    r.add_activity("Huge", |_ctx: ActivityContext, _: ()| async move {
        Ok::<_, String>("x".repeat(2 << 20))
    })
    .add_orchestration("CallsHuge", |ctx: OrchestrationContext, _: ()| async move {
        ctx.call_activity::<String>("Huge", ()).await.map(|s| s.len())
    })
    .add_orchestration("ReturnsHuge", |_ctx: OrchestrationContext, _: ()| async move {
        Ok::<_, String>("y".repeat(2 << 20))
    })
    .add_orchestration("TooManyActions", |ctx: OrchestrationContext, _: ()| async move {
        // 2,000 tasks with 6 kB inputs: one episode over the 10 MB transaction limit.
        let big = "z".repeat(6000);
        let tasks: Vec<_> = (0..2000)
            .map(|_| ctx.call_activity::<String>("SayHello", big.clone()))
            .collect();
        perdure_core::orchestration::when_all(tasks).await;
        Ok::<_, String>(())
    })
    .add_activity("Panics", |_ctx: ActivityContext, _: ()| async move {
        if true {
            panic!("activity panicked on purpose");
        }
        Ok::<(), String>(())
    })
    .add_orchestration("CallsPanickingActivity", |ctx: OrchestrationContext, _: ()| async move {
        ctx.call_activity::<()>("Panics", ()).await
    })
    .add_orchestration("PanickingOrchestrator", |_ctx: OrchestrationContext, _: ()| async move {
        if true {
            panic!("orchestrator panicked on purpose");
        }
        Ok::<(), String>(())
    })
    .add_orchestration("CallsUnknownActivity", |ctx: OrchestrationContext, _: ()| async move {
        ctx.call_activity::<()>("NoSuchActivity", ()).await
    })
    .add_orchestration("CallsUnknownChild", |ctx: OrchestrationContext, _: ()| async move {
        ctx.call_sub_orchestration::<()>("NoSuchOrchestration", ()).await
    });
    r
}

async fn failed_with(node: &perdure_node::node::NodeHandle, id: &InstanceId) -> String {
    let st = common::wait(node, id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Failed, "{st:?}");
    st.failure.expect("failure details").to_string()
}

#[tokio::test]
async fn bad_input_is_refused_or_fails_one_instance() {
    let node = common::start_with(Arc::new(MemoryStore::new()), registry()).await;

    let err = node.start(StartRequest::new("Nope")).await.unwrap_err();
    match err {
        ManagementError::UnknownName {
            kind,
            name,
            registered,
        } => {
            assert_eq!(kind, FunctionKind::Orchestration);
            assert_eq!(name, "Nope");
            assert!(registered.contains(&"HelloSequence".to_string()));
        }
        other => panic!("{other:?}"),
    }
    let err = node
        .signal_entity(
            EntityId::new("Nope", "k").unwrap(),
            "add".into(),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ManagementError::UnknownName {
            kind: FunctionKind::Entity,
            ..
        }
    ));

    let mut big = StartRequest::new("HelloSequence");
    big.input = Some(Payload::json(&"x".repeat(2 << 20)).unwrap());
    assert!(matches!(
        node.start(big).await,
        Err(ManagementError::PayloadTooLarge { .. })
    ));

    let id = common::start(
        &node,
        "FanOutFanIn",
        "bad-input",
        Some(Payload::json(&"abc").unwrap()),
    )
    .await;
    let f = failed_with(&node, &id).await;
    assert!(
        f.contains("u64") || f.to_lowercase().contains("input"),
        "{f}"
    );

    let id = common::start(&node, "CallsPanickingActivity", "panic-act", None).await;
    let f = failed_with(&node, &id).await;
    assert!(f.contains("activity panicked on purpose"), "{f}");

    let id = common::start(&node, "PanickingOrchestrator", "panic-orch", None).await;
    let f = failed_with(&node, &id).await;
    assert!(f.contains("orchestrator panicked on purpose"), "{f}");

    let id = common::start(&node, "CallsUnknownActivity", "unknown-act", None).await;
    let f = failed_with(&node, &id).await;
    assert!(f.contains("NoSuchActivity"), "{f}");

    let id = common::start(&node, "CallsUnknownChild", "unknown-child", None).await;
    let f = failed_with(&node, &id).await;
    assert!(f.contains("NoSuchOrchestration"), "{f}");

    // An entity operation that fails does not break the entity.
    let c = EntityId::new("Counter", "bad").unwrap();
    node.signal_entity(
        c.clone(),
        "add".into(),
        Some(Payload::json(&"not a number").unwrap()),
        None,
    )
    .await
    .unwrap();
    node.signal_entity(
        c.clone(),
        "add".into(),
        Some(Payload::json(&2).unwrap()),
        None,
    )
    .await
    .unwrap();

    let id = common::start(&node, "CallsHuge", "huge-activity", None).await;
    let f = failed_with(&node, &id).await;
    assert!(f.contains("PayloadTooLarge"), "{f}");

    let id = common::start(&node, "ReturnsHuge", "huge-output", None).await;
    let f = failed_with(&node, &id).await;
    assert!(f.contains("PayloadTooLarge"), "{f}");

    let id = common::start(&node, "TooManyActions", "too-many", None).await;
    let f = failed_with(&node, &id).await;
    assert!(f.contains("TransactionTooLarge"), "{f}");

    // The node keeps running.
    let id = common::start(&node, "HelloSequence", "still-alive", None).await;
    let out: Vec<String> = common::output(&node, &id).await;
    assert_eq!(out.len(), 3);
    node.shutdown().await;
}
