//! Shared helpers of the runtime tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use perdure_core::management::{InstanceState, ManagementApi, StartRequest};
use perdure_core::registry::Registry;
use perdure_core::{InstanceId, OrchestrationStatus, Payload};
use perdure_node::node::{Node, NodeHandle};
use perdure_node::options::NodeOptions;
use perdure_node::store::Store;
use perdure_node::store::embedded::EmbeddedStore;
use perdure_node::store::memory::MemoryStore;

pub mod stores;

/// Small options for tests. One node per store here, so partition leases need not expire
/// soon: with paused time, tokio advances the clock whenever the runtime waits on the
/// embedded store's committer thread, and a 5 s lease would expire while a commit is in
/// flight (the node would then lose and re-acquire its partitions under the test).
pub fn options() -> NodeOptions {
    let mut o = NodeOptions {
        partitions: std::num::NonZeroU32::new(4).unwrap(),
        ..NodeOptions::default()
    };
    o.cluster.lease_ttl = std::time::Duration::from_secs(3600);
    o.cluster.heartbeat_interval = std::time::Duration::from_secs(600);
    o
}

/// A node with the sample app on a fresh memory store.
pub async fn start_memory() -> NodeHandle {
    start_on(Arc::new(MemoryStore::new())).await
}

/// A node with the sample app on a fresh embedded store in `dir`.
pub async fn start_embedded(dir: &std::path::Path) -> NodeHandle {
    start_on(Arc::new(EmbeddedStore::open(dir).expect("store opens"))).await
}

/// A node with the sample app on a given store.
pub async fn start_on(store: Arc<dyn Store>) -> NodeHandle {
    start_with(store, perdure_node::sample::sample_registry()).await
}

/// A node with a registry on a given store.
pub async fn start_with(store: Arc<dyn Store>, registry: Registry) -> NodeHandle {
    start_with_options(store, registry, options()).await
}

/// Options for a node that follows a killed node of the same name on the same store: the
/// default lease, so the newcomer waits only that long for the dead one's heartbeat to expire.
pub fn restart_options() -> NodeOptions {
    NodeOptions {
        partitions: std::num::NonZeroU32::new(4).unwrap(),
        ..NodeOptions::default()
    }
}

/// A node with `registry` on `store` with `opts`.
pub async fn start_with_options(
    store: Arc<dyn Store>,
    registry: Registry,
    opts: NodeOptions,
) -> NodeHandle {
    Node::builder()
        .registry(Arc::new(registry))
        .store(store)
        .options(opts)
        .start()
        .await
        .expect("node starts")
}

/// Starts `name` with `input` under `id`.
pub async fn start(node: &NodeHandle, name: &str, id: &str, input: Option<Payload>) -> InstanceId {
    let mut req = StartRequest::new(name);
    req.instance_id = Some(InstanceId::new(id).unwrap());
    req.input = input;
    node.start(req).await.expect("start accepted")
}

/// Waits for completion (up to 30 days of runtime time: tests on paused time jump ahead).
pub async fn wait(node: &NodeHandle, id: &InstanceId) -> InstanceState {
    node.wait_for_completion(id.clone(), Duration::from_secs(30 * 86_400))
        .await
        .expect("wait works")
        .expect("instance exists")
}

/// Waits and asserts Completed; returns the output decoded.
pub async fn output<T: serde::de::DeserializeOwned>(node: &NodeHandle, id: &InstanceId) -> T {
    let st = wait(node, id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
    st.output.expect("output").decode().expect("output decodes")
}

/// Polls the instance state through `get_instance` after yielding, until `pred` holds.
/// Used only where no notification exists (non-terminal statuses); bounded.
pub async fn until_status(node: &NodeHandle, id: &InstanceId, want: OrchestrationStatus) {
    for _ in 0..10_000 {
        if let Some(st) = node.get_instance(id.clone(), false).await.unwrap()
            && st.runtime_status == want
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("instance {id} never reached {want}");
}

/// Raises the `Approval` event with a bool.
pub async fn approve(node: &NodeHandle, id: &InstanceId, approved: bool) {
    node.raise_event(
        id.clone(),
        "Approval".into(),
        Some(Payload::json(&approved).unwrap()),
    )
    .await
    .expect("event accepted");
}

/// How many keys of the staged-episode keyspace (`"s"`) are left in the store.
pub async fn staged_keys(store: &Arc<dyn Store>) -> usize {
    keys_in(store, "s").await
}

/// The wall-clock time now: what the node's clock reads, for scheduled starts in tests.
#[allow(dead_code)]
pub fn wall_clock_now() -> perdure_core::Timestamp {
    perdure_core::Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

/// How many keys the store holds in keyspace `space` (`perdure_node::state::space`).
#[allow(dead_code)]
pub async fn keys_in(store: &Arc<dyn Store>, space: &'static str) -> usize {
    use perdure_node::state::keys::Key;
    use perdure_node::store::{KeyRange, RangeOptions, RetryOptions, StoreError, transact};
    transact(store.as_ref(), &RetryOptions::default(), |tx| {
        Box::pin(async move {
            let range = KeyRange::prefix(Key::new().str(space).as_bytes());
            Ok::<_, StoreError>(tx.get_range(&range, RangeOptions::default()).await?.len())
        })
    })
    .await
    .expect("the keyspace reads")
}

/// Checks a completed `FanOutFanIn` of `n`: its sum of squares, and each task scheduled and
/// completed exactly once in its history.
pub async fn check_fan_out(node: &NodeHandle, id: &InstanceId, n: u64) {
    use perdure_core::EventKind;
    use perdure_core::management::ManagementApi;
    let sum: u64 = output(node, id).await;
    let want = (1..=n)
        .map(|i| i.wrapping_mul(i))
        .fold(0u64, u64::wrapping_add);
    assert_eq!(sum, want);
    let hist = node.get_history(id.clone()).await.unwrap().unwrap();
    let mut scheduled = std::collections::BTreeSet::new();
    let mut completed = std::collections::BTreeSet::new();
    for e in &hist {
        match &e.kind {
            EventKind::TaskScheduled { .. } => assert!(scheduled.insert(e.event_id)),
            EventKind::TaskCompleted {
                task_scheduled_id, ..
            } => assert!(
                completed.insert(*task_scheduled_id),
                "a task completed twice"
            ),
            _ => {}
        }
    }
    assert_eq!(scheduled.len() as u64, n);
    assert_eq!(completed, scheduled);
}
