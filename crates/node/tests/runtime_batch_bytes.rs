//! Batches bounded by bytes as well as by count (issue 12): starts taken together, results
//! of a fan-out that arrive together, and entity operations that run together may each
//! total more than the store's transaction limit; they are split, nothing else fails and
//! nothing is dropped; a start too large alone is refused with 413.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use perdure_core::activity::ActivityContext;
use perdure_core::entity::EntityContext;
use perdure_core::management::{ManagementApi, StartRequest};
use perdure_core::orchestration::{OrchestrationContext, when_all};
use perdure_core::registry::Registry;
use perdure_core::{EntityId, FailureDetails, InstanceId, OrchestrationStatus, Payload};
use perdure_node::node::{Node, NodeHandle};
use perdure_node::store::memory::MemoryStore;
use tower::ServiceExt;

/// Bytes of each big payload: under the default 1 MiB payload limit, and a dozen of them
/// over the 10 MB transaction limit.
const BIG: usize = 900_000;

/// Lets the `Big` activities finish (none may before the test says so).
static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);
/// How many `Big` activities passed the gate, and a wake-up for each.
static PASSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PASSED_NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();

fn registry() -> Registry {
    let mut r = perdure_node::sample::sample_registry();
    r.add_orchestration("Echo", |_ctx: OrchestrationContext, s: String| async move {
        Ok::<_, String>(s.len())
    })
    .add_activity("Big", |_ctx: ActivityContext, _: ()| async move {
        GATE.acquire().await.map_err(|e| e.to_string())?.forget();
        PASSED.fetch_add(1, Ordering::SeqCst);
        PASSED_NOTIFY.notify_waiters();
        Ok::<_, String>("b".repeat(BIG))
    })
    .add_orchestration(
        "FanOutBig",
        |ctx: OrchestrationContext, n: usize| async move {
            let tasks: Vec<_> = (0..n)
                .map(|_| ctx.call_activity::<String>("Big", ()))
                .collect();
            let mut total = 0usize;
            for r in when_all(tasks).await {
                total += r.map_err(|e| e.to_string())?.len();
            }
            Ok::<_, String>(total)
        },
    )
    // Forwards what it is given to the Sink of the same key, and counts.
    .add_entity("Relay", |ctx: &mut EntityContext<u64>| {
        match ctx.operation_name() {
            "put" => {
                let s: String = ctx.input()?;
                let sink = EntityId::new("Sink", ctx.entity_id().key())
                    .map_err(|e| FailureDetails::new("BadId", e.to_string()))?;
                ctx.signal_entity(&sink, "put", s)?;
                *ctx.state_or_default() += 1;
                Ok(0)
            }
            "count" => Ok(ctx.state().copied().unwrap_or(0)),
            _ => Err(ctx.unknown_operation()),
        }
    })
    .add_entity("Sink", |ctx: &mut EntityContext<u64>| {
        match ctx.operation_name() {
            "put" => {
                let _: String = ctx.input()?;
                *ctx.state_or_default() += 1;
                Ok(0u64)
            }
            "count" => Ok(ctx.state().copied().unwrap_or(0)),
            _ => Err(ctx.unknown_operation()),
        }
    })
    // Holds the Relay's lock until the event Go (signals meanwhile wait, then run together),
    // then reports how many operations the Relay ran.
    .add_orchestration(
        "HoldRelay",
        |ctx: OrchestrationContext, key: String| async move {
            let relay = EntityId::new("Relay", &key).map_err(|e| e.to_string())?;
            let section = ctx
                .lock_entities(std::slice::from_ref(&relay))
                .await
                .map_err(|e| e.to_string())?;
            ctx.set_custom_status("locked");
            ctx.wait_for_external_event::<bool>("Go")
                .await
                .map_err(|e| e.to_string())?;
            section.release();
            let relayed: u64 = ctx
                .call_entity(&relay, "count", ())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(relayed)
        },
    );
    r
}

async fn node_with(max_payload_bytes: usize) -> NodeHandle {
    let mut opts = common::options();
    opts.max_payload_bytes = std::num::NonZeroUsize::new(max_payload_bytes).unwrap();
    Node::builder()
        .registry(Arc::new(registry()))
        .store(Arc::new(MemoryStore::new()))
        .options(opts)
        .start()
        .await
        .expect("node starts")
}

fn big(n: usize) -> Payload {
    Payload::json(&"s".repeat(n)).unwrap()
}

/// Polls (yielding, no sleeps) until `f` holds, for at most a minute (only a failing test
/// waits that long).
async fn until(mut f: impl AsyncFnMut() -> bool, what: &str) {
    let polled = tokio::time::timeout(Duration::from_secs(60), async {
        while !f().await {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(polled.is_ok(), "never: {what}");
}

/// Starts taken in one intake batch total over the transaction limit: each is written, none
/// fails. Before issue 12 the batch was one transaction and every start got an internal
/// error (500 over HTTP).
#[tokio::test]
async fn starts_over_the_transaction_limit_together_all_succeed() {
    let node = node_with(1 << 20).await;
    let starts = (0..6).map(|i| {
        let mut req = StartRequest::new("Echo");
        req.instance_id = Some(InstanceId::new(format!("big-start-{i}")).unwrap());
        req.input = Some(big(BIG));
        node.start(req)
    });
    for r in futures::future::join_all(starts).await {
        r.expect("start accepted");
    }
    for i in 0..6 {
        let id = InstanceId::new(format!("big-start-{i}")).unwrap();
        let n: usize = common::output(&node, &id).await;
        assert_eq!(n, BIG);
    }
    node.shutdown().await;
}

/// A start too large alone is refused with 413 at intake; a small start sent with it is
/// accepted. Before issue 12 the oversized start's batch failed in the store: 500 for
/// every start in it.
#[tokio::test]
async fn a_start_too_large_alone_gets_413_and_nothing_else_fails() {
    let node = node_with(8 << 20).await;
    let router = perdure_node::http::router(
        Arc::new(node.clone()),
        perdure_node::http::HttpOptions {
            max_payload_bytes: 16 << 20,
            ..Default::default()
        },
    );
    let post = |id: &str, body: String| {
        let req = Request::builder()
            .method("POST")
            .uri(format!(
                "/runtime/webhooks/durabletask/orchestrators/Echo/{id}"
            ))
            .header("host", "node1:8080")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        router.clone().oneshot(req)
    };
    let huge = serde_json::to_string(&"h".repeat(4_000_000)).unwrap();
    let (a, b) = tokio::join!(post("huge", huge), post("small", "\"hi\"".into()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = axum::body::to_bytes(a.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("PayloadTooLarge"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(b.status(), StatusCode::ACCEPTED);
    let n: usize = common::output(&node, &InstanceId::new("small").unwrap()).await;
    assert_eq!(n, 2);
    assert!(
        node.get_instance(InstanceId::new("huge").unwrap(), false)
            .await
            .unwrap()
            .is_none()
    );
    node.shutdown().await;
}

/// Fan-out results that arrive together (held back while the instance is suspended) total
/// over the transaction limit: they are taken in several episodes and the orchestration
/// completes. Before issue 12 they went into one episode, which failed the orchestration
/// with TransactionTooLarge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_results_over_the_limit_together_complete() {
    let n = 14;
    let node = node_with(1 << 20).await;
    let id = common::start(
        &node,
        "FanOutBig",
        "fan-out-big",
        Some(Payload::json(&n).unwrap()),
    )
    .await;
    common::until_status(&node, &id, OrchestrationStatus::Running).await;
    node.suspend(id.clone(), None).await.expect("suspended");
    common::until_status(&node, &id, OrchestrationStatus::Suspended).await;
    let metrics = node.metrics();
    let before = metrics.activities.load(Ordering::Relaxed);
    GATE.add_permits(n);
    loop {
        let woken = PASSED_NOTIFY.notified();
        if PASSED.load(Ordering::SeqCst) >= n {
            break;
        }
        woken.await;
    }
    until(
        async || metrics.activities.load(Ordering::Relaxed) >= before + n as u64,
        "every activity finished",
    )
    .await;
    node.resume(id.clone(), None).await.expect("resumed");
    let st = node
        .wait_for_completion(id.clone(), Duration::from_secs(120))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
    let total: usize = st.output.unwrap().decode().unwrap();
    assert_eq!(total, n * BIG);
    node.shutdown().await;
}

/// Signals held back by an entity lock run together once it is released; together their
/// effects (each forwards its input) are over the transaction limit. They run in smaller
/// batches and none is dropped. Before issue 12 the whole batch was dropped, signals
/// included (and with it the unlock, so the entity stayed locked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_batch_over_the_limit_is_split_and_nothing_is_dropped() {
    let n = 12u64;
    let node = node_with(1 << 20).await;
    let id = common::start(
        &node,
        "HoldRelay",
        "hold-relay",
        Some(Payload::json(&"k").unwrap()),
    )
    .await;
    until(
        async || {
            node.get_instance(id.clone(), false)
                .await
                .unwrap()
                .and_then(|s| s.custom_status)
                .is_some()
        },
        "the relay is locked",
    )
    .await;
    let relay = EntityId::new("Relay", "k").unwrap();
    for _ in 0..n {
        node.signal_entity(relay.clone(), "put".into(), Some(big(BIG)), None)
            .await
            .expect("signal accepted");
    }
    node.raise_event(id.clone(), "Go".into(), Some(Payload::json(&true).unwrap()))
        .await
        .unwrap();
    let st = node
        .wait_for_completion(id.clone(), Duration::from_secs(120))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
    let relayed: u64 = st.output.unwrap().decode().unwrap();
    assert_eq!(relayed, n);
    // What the Relay forwarded reaches the Sink (another sender than the test's, so in no
    // order with anything the test sends: wait for it).
    let sink = EntityId::new("Sink", "k").unwrap();
    until(
        async || {
            node.get_entity(sink.clone())
                .await
                .unwrap()
                .and_then(|e| e.state)
                .and_then(|p| p.decode::<u64>().ok())
                == Some(n)
        },
        "every forwarded signal ran on the Sink",
    )
    .await;
    node.shutdown().await;
}
