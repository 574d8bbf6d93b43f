//! Management operations: suspend, resume, terminate, rewind, restart, purge, id reuse.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use perdure_core::activity::ActivityContext;
use perdure_core::management::{
    IdReusePolicy, ManagementApi, ManagementError, PurgeFilter, StartRequest,
};
use perdure_core::orchestration::OrchestrationContext;
use perdure_core::{InstanceId, OrchestrationStatus, Payload};
use perdure_node::store::memory::MemoryStore;
use serde_json::json;

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

fn registry() -> perdure_core::registry::Registry {
    let mut r = perdure_node::sample::sample_registry();
    r.add_activity("Flaky", |_ctx: ActivityContext, _: ()| async move {
        // Fails the first two calls, then succeeds.
        if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) < 2 {
            Err("not yet".to_string())
        } else {
            Ok("done".to_string())
        }
    })
    .add_orchestration("UsesFlaky", |ctx: OrchestrationContext, _: ()| async move {
        let a: String = ctx.call_activity("SayHello", "before").await?;
        let b: String = ctx.call_activity("Flaky", ()).await?;
        Ok::<_, perdure_core::orchestration::TaskError>(format!("{a} {b}"))
    })
    .add_orchestration(
        "ParentOfApproval",
        |ctx: OrchestrationContext, _: ()| async move {
            let opts = perdure_core::orchestration::SubOrchestrationOptions {
                instance_id: Some(InstanceId::new("approval-child").map_err(|e| e.to_string())?),
                ..Default::default()
            };
            ctx.call_sub_orchestration_with_options::<String>(
                "Approval",
                json!({"timeoutSeconds": 100000}),
                opts,
            )
            .await
            .map_err(|e| e.to_string())
        },
    );
    r
}

fn approval_input() -> Option<Payload> {
    Some(Payload::json(&json!({"timeoutSeconds": 100000})).unwrap())
}

#[tokio::test(start_paused = true)]
async fn suspend_buffers_events_until_resume() {
    let node = common::start_with(Arc::new(MemoryStore::new()), registry()).await;
    let id = common::start(&node, "Approval", "susp-1", approval_input()).await;
    common::until_status(&node, &id, OrchestrationStatus::Running).await;
    node.suspend(id.clone(), Some("hold".into())).await.unwrap();
    // The status changes at once; a resume right after a suspend is accepted.
    let st = node.get_instance(id.clone(), false).await.unwrap().unwrap();
    assert_eq!(st.runtime_status, OrchestrationStatus::Suspended);
    node.resume(id.clone(), None).await.unwrap();
    node.suspend(id.clone(), None).await.unwrap();
    node.raise_event(
        id.clone(),
        "Approval".into(),
        Some(Payload::json(&true).unwrap()),
    )
    .await
    .unwrap();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let st = node.get_instance(id.clone(), false).await.unwrap().unwrap();
    assert_eq!(st.runtime_status, OrchestrationStatus::Suspended);
    assert!(matches!(
        node.resume(InstanceId::new("nope").unwrap(), None).await,
        Err(ManagementError::NotFound(_))
    ));
    node.resume(id.clone(), None).await.unwrap();
    let out: String = common::output(&node, &id).await;
    assert_eq!(out, "approved");
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn terminate_and_events_on_finished_or_unknown_instances() {
    let node = common::start_with(Arc::new(MemoryStore::new()), registry()).await;
    let id = common::start(&node, "Approval", "term-1", approval_input()).await;
    node.terminate(id.clone(), Some("stop".into()), false)
        .await
        .unwrap();
    let st = common::wait(&node, &id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Terminated);
    let err = node
        .raise_event(id.clone(), "Approval".into(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ManagementError::InvalidState { .. }),
        "{err:?}"
    );
    let err = node
        .raise_event(InstanceId::new("missing").unwrap(), "x".into(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ManagementError::NotFound(_)), "{err:?}");
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn recursive_terminate_reaches_sub_orchestrations() {
    let node = common::start_with(Arc::new(MemoryStore::new()), registry()).await;
    let id = common::start(&node, "ParentOfApproval", "rec-parent", None).await;
    let child = InstanceId::new("approval-child").unwrap();
    common::until_status(&node, &child, OrchestrationStatus::Running).await;
    node.terminate(id.clone(), None, true).await.unwrap();
    assert_eq!(
        common::wait(&node, &id).await.runtime_status,
        OrchestrationStatus::Terminated
    );
    assert_eq!(
        common::wait(&node, &child).await.runtime_status,
        OrchestrationStatus::Terminated
    );
    node.shutdown().await;
}

#[tokio::test]
async fn rewind_resumes_a_failed_instance_from_its_last_successful_step() {
    let node = common::start_with(Arc::new(MemoryStore::new()), registry()).await;
    let id = common::start(&node, "UsesFlaky", "rewind-1", None).await;
    let st = common::wait(&node, &id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Failed);
    assert!(st.failure.is_some());
    node.rewind(id.clone(), Some("again".into())).await.unwrap();
    let st = common::wait(&node, &id).await;
    // The second Flaky call fails too: rewind again.
    if st.runtime_status == OrchestrationStatus::Failed {
        node.rewind(id.clone(), None).await.unwrap();
    }
    let out: String = common::output(&node, &id).await;
    assert_eq!(out, "Hello before! done");
    // SayHello ran once: the successful step was kept.
    let hist = node.get_history(id.clone()).await.unwrap().unwrap();
    let hello = hist
        .iter()
        .filter(|e| matches!(&e.kind, perdure_core::EventKind::TaskScheduled { name, .. } if name == "SayHello"))
        .count();
    assert_eq!(hello, 1);
    let err = node.rewind(id, None).await.unwrap_err();
    assert!(matches!(err, ManagementError::InvalidState { .. }));
    node.shutdown().await;
}

#[tokio::test]
async fn restart_purge_and_id_reuse() {
    let node = common::start_with(Arc::new(MemoryStore::new()), registry()).await;
    let id = common::start(&node, "HelloSequence", "re-1", None).await;
    common::wait(&node, &id).await;
    // Reuse policies.
    let mut req = StartRequest::new("HelloSequence");
    req.instance_id = Some(id.clone());
    req.reuse_policy = IdReusePolicy::RejectExisting;
    assert!(matches!(
        node.start(req.clone()).await,
        Err(ManagementError::AlreadyExists { .. })
    ));
    req.reuse_policy = IdReusePolicy::ReplaceFinished;
    node.start(req).await.unwrap();
    let _: Vec<String> = common::output(&node, &id).await;
    // Restart with the same id and with a new one.
    let same = node.restart(id.clone(), false).await.unwrap();
    assert_eq!(same, id);
    let _: Vec<String> = common::output(&node, &id).await;
    let other = node.restart(id.clone(), true).await.unwrap();
    assert_ne!(other, id);
    let _: Vec<String> = common::output(&node, &other).await;
    // Purge one, then purge by filter.
    node.purge_instance(id.clone()).await.unwrap();
    assert!(
        node.get_instance(id.clone(), false)
            .await
            .unwrap()
            .is_none()
    );
    assert!(node.get_history(id.clone()).await.unwrap().is_none());
    let live = common::start(&node, "Approval", "live-1", approval_input()).await;
    assert!(matches!(
        node.purge_instance(live.clone()).await,
        Err(ManagementError::InvalidState { .. })
    ));
    let mut dup = StartRequest::new("Approval");
    dup.instance_id = Some(live.clone());
    assert!(matches!(
        node.start(dup).await,
        Err(ManagementError::AlreadyExists { .. })
    ));
    let r = node.purge_instances(PurgeFilter::default()).await.unwrap();
    assert_eq!(r.deleted, 1);
    assert!(r.complete);
    assert!(node.get_instance(other, false).await.unwrap().is_none());
    assert!(node.get_instance(live, false).await.unwrap().is_some());
    node.shutdown().await;
}
