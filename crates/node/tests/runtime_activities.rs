//! Activities: at-least-once delivery when a lease expires, on paused time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use perdure_core::activity::ActivityContext;
use perdure_core::orchestration::OrchestrationContext;
use perdure_node::store::memory::MemoryStore;

#[tokio::test(start_paused = true)]
async fn a_task_whose_lease_expires_runs_again() {
    let mut r = perdure_node::sample::sample_registry();
    r.add_activity("HangsFirst", |ctx: ActivityContext, _: ()| async move {
        if ctx.attempt() == 1 {
            // The first attempt never finishes (a stuck worker).
            futures::future::pending::<()>().await;
        }
        Ok::<_, String>(ctx.attempt())
    })
    .add_orchestration(
        "CallsHangsFirst",
        |ctx: OrchestrationContext, _: ()| async move {
            ctx.call_activity::<u32>("HangsFirst", ()).await
        },
    );
    let node = common::start_with(Arc::new(MemoryStore::new()), r).await;
    let t0 = tokio::time::Instant::now();
    let id = common::start(&node, "CallsHangsFirst", "hangs", None).await;
    let attempt: u32 = common::output(&node, &id).await;
    assert_eq!(attempt, 2);
    // Not before the lease (5 minutes by default) expired.
    assert!(t0.elapsed() >= Duration::from_secs(300));
    node.shutdown().await;
}
