//! Activities: at-least-once delivery when a lease expires, on paused time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use perdure_core::activity::ActivityContext;
use perdure_core::orchestration::OrchestrationContext;
use perdure_node::store::memory::MemoryStore;

every_store! {
    #[tokio::test(start_paused = true)]
    async fn a_task_whose_lease_expires_runs_again(ts) {
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
        let node = common::start_with(ts.store.clone(), r).await;
        let t0 = tokio::time::Instant::now();
        let id = common::start(&node, "CallsHangsFirst", "hangs", None).await;
        let attempt: u32 = common::output(&node, &id).await;
        assert_eq!(attempt, 2);
        // Not before the lease (5 minutes by default) expired.
        assert!(t0.elapsed() >= Duration::from_secs(300));
        node.shutdown().await;
    }
}

/// At most `max_concurrent_activities` activities run at once; the others wait in the pool's
/// queue and run when a worker is free.
#[tokio::test(start_paused = true)]
async fn the_pool_bounds_running_activities() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use perdure_core::orchestration::when_all;
    use perdure_core::registry::Registry;
    use perdure_node::node::Node;
    use perdure_node::options::NodeOptions;

    let running = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started) = tokio::sync::watch::channel(0usize);
    let started_tx = Arc::new(started_tx);
    let max_seen = Arc::new(AtomicUsize::new(0));
    let (open_tx, open_rx) = tokio::sync::watch::channel(false);
    let mut r = Registry::new();
    let (run, st, mx) = (running.clone(), started_tx.clone(), max_seen.clone());
    r.add_activity("Gated", move |_ctx: ActivityContext, i: u64| {
        let (run, st, mx, mut open) = (run.clone(), st.clone(), mx.clone(), open_rx.clone());
        async move {
            let now = run.fetch_add(1, Ordering::SeqCst) + 1;
            mx.fetch_max(now, Ordering::SeqCst);
            st.send_modify(|n| *n += 1);
            let _ = open.wait_for(|o| *o).await;
            run.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, String>(i)
        }
    })
    .add_orchestration(
        "FansOutGated",
        |ctx: OrchestrationContext, n: u64| async move {
            let tasks = (1..=n).map(|i| ctx.call_activity::<u64>("Gated", i));
            let mut sum = 0u64;
            for r in when_all(tasks).await {
                sum += r?;
            }
            Ok::<_, perdure_core::orchestration::TaskError>(sum)
        },
    );
    let node = Node::builder()
        .registry(Arc::new(r))
        .store(Arc::new(MemoryStore::new()))
        .options(NodeOptions {
            max_concurrent_activities: std::num::NonZeroUsize::new(2).unwrap(),
            ..common::options()
        })
        .start()
        .await
        .expect("node starts");
    let input = perdure_core::Payload::json(&6u64).unwrap();
    let id = common::start(&node, "FansOutGated", "gated", Some(input)).await;
    let _ = started.wait_for(|n| *n >= 2).await;
    // Paused time only advances when every task is idle: a third activity would have started.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(*started.borrow(), 2);
    open_tx.send_replace(true);
    let sum: u64 = common::output(&node, &id).await;
    assert_eq!(sum, 21);
    assert_eq!(*started.borrow(), 6);
    assert_eq!(max_seen.load(Ordering::SeqCst), 2);
    node.shutdown().await;
}
