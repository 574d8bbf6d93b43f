//! Staged episodes (issue 16) under injected store faults, on the memory store behind a
//! wrapper that can fail the publishing transaction of a staged episode: a rewind whose
//! publish fails leaves the history it rewinds untouched, a publish whose outcome is unknown
//! is written out by the partition's recovery, and a staged start that another start replaced
//! is dropped instead of being retried forever.

mod common;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use perdure_core::management::{IdReusePolicy, ManagementApi, StartRequest};
use perdure_core::{InstanceId, OrchestrationStatus, Payload};
use perdure_node::state::keys::{Elem, Key};
use perdure_node::store::memory::MemoryStore;
use perdure_node::store::{KeyRange, KeyValue, RangeOptions, Store, StoreError, Transaction};

const PASS: u8 = 0;
/// Every publish fails before it commits.
const FAIL_PUBLISH: u8 = 1;
/// The next publish commits, then reports `MaybeCommitted`.
const LOSE_PUBLISH_REPLY: u8 = 2;

struct Faulty {
    inner: Arc<dyn Store>,
    mode: AtomicU8,
    publishes: AtomicU64,
}

struct FaultyTx {
    inner: Box<dyn Transaction>,
    f: Arc<Faulty>,
    marker: bool,
    record: bool,
}

/// A write of a staged episode's marker (`("s", p, 0, id)`).
fn is_marker(key: &[u8]) -> bool {
    key.starts_with(Key::new().str("s").as_bytes())
        && Key::decode(key).ok().and_then(|e| e.get(2).cloned()) == Some(Elem::UInt(0))
}

#[async_trait::async_trait]
impl Transaction for FaultyTx {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(
        &mut self,
        r: &KeyRange,
        o: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.get_range(r, o).await
    }
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.marker |= is_marker(key);
        self.record |= key.starts_with(Key::new().str("i").as_bytes());
        self.inner.set(key, value)
    }
    fn clear(&mut self, key: &[u8]) {
        self.inner.clear(key)
    }
    fn clear_range(&mut self, r: &KeyRange) {
        self.inner.clear_range(r)
    }
    fn cached_reads(&mut self) {
        self.inner.cached_reads()
    }
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        // A publish writes the instance record and the marker.
        let publish = self.marker && self.record;
        let f = self.f.clone();
        if publish {
            f.publishes.fetch_add(1, Ordering::SeqCst);
            if f.mode.load(Ordering::SeqCst) == FAIL_PUBLISH {
                return Err(StoreError::Fatal("injected: the publish fails".into()));
            }
        }
        self.inner.commit().await?;
        if publish
            && f.mode
                .compare_exchange(LOSE_PUBLISH_REPLY, PASS, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            return Err(StoreError::MaybeCommitted(
                "injected: the reply to the publish is lost".into(),
            ));
        }
        Ok(())
    }
}

struct FaultyStore(Arc<Faulty>);

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError> {
        Ok(Box::new(FaultyTx {
            inner: self.0.inner.begin().await?,
            f: self.0.clone(),
            marker: false,
            record: false,
        }))
    }
    fn backend_name(&self) -> &'static str {
        "faulty"
    }
}

fn faulty() -> (Arc<Faulty>, Arc<dyn Store>) {
    let f = Arc::new(Faulty {
        inner: Arc::new(MemoryStore::new()),
        mode: AtomicU8::new(PASS),
        publishes: AtomicU64::new(0),
    });
    (f.clone(), Arc::new(FaultyStore(f)))
}

/// 50 items per transaction: a fan-out of 200 is staged.
fn staged_options() -> perdure_node::options::NodeOptions {
    let mut opts = common::options();
    opts.staged_commit_items = NonZeroUsize::new(50).unwrap();
    opts
}

async fn wait_bounded(
    node: &perdure_node::node::NodeHandle,
    id: &InstanceId,
) -> perdure_core::management::InstanceState {
    node.wait_for_completion(id.clone(), Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the instance exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_reply_is_lost_is_written_out_by_recovery() {
    let (f, store) = faulty();
    // The partition restarts after the lost reply: the node's next round (every heartbeat)
    // acquires it again.
    let mut opts = staged_options();
    opts.cluster.lease_ttl = Duration::from_secs(3);
    opts.cluster.heartbeat_interval = Duration::from_millis(200);
    let node =
        common::start_with_options(store.clone(), perdure_node::sample::sample_registry(), opts)
            .await;
    f.mode.store(LOSE_PUBLISH_REPLY, Ordering::SeqCst);
    let id = common::start(
        &node,
        "FanOutFanIn",
        "lost-reply",
        Some(Payload::json(&200u64).unwrap()),
    )
    .await;
    let st = wait_bounded(&node, &id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
    assert_eq!(
        f.mode.load(Ordering::SeqCst),
        PASS,
        "the fault was injected"
    );
    common::check_fan_out(&node, &id, 200).await;
    assert_eq!(common::staged_keys(&store).await, 0);
    node.shutdown().await;
}

static FAILED_ONCE: AtomicBool = AtomicBool::new(false);

/// `BigFail`: a fan-out of n `SquareFailing`, whose 150 fails the first time only.
fn rewind_registry() -> perdure_core::registry::Registry {
    use perdure_core::activity::ActivityContext;
    use perdure_core::orchestration::{OrchestrationContext, TaskError, when_all};
    let mut r = perdure_node::sample::sample_registry();
    r.add_activity(
        "SquareFailing",
        |_ctx: ActivityContext, n: u64| async move {
            if n == 150 && !FAILED_ONCE.swap(true, Ordering::SeqCst) {
                return Err("failed once on purpose".to_string());
            }
            Ok::<_, String>(n * n)
        },
    )
    .add_orchestration("BigFail", |ctx: OrchestrationContext, n: u64| async move {
        let tasks = (1..=n).map(|i| ctx.call_activity::<u64>("SquareFailing", i));
        let mut sum = 0u64;
        for r in when_all(tasks).await {
            sum = sum.wrapping_add(r?);
        }
        Ok::<_, TaskError>(sum)
    });
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_rewind_whose_publish_fails_leaves_the_history_untouched() {
    let (f, store) = faulty();
    let node = common::start_with_options(store.clone(), rewind_registry(), staged_options()).await;
    let id = common::start(
        &node,
        "BigFail",
        "rewind",
        Some(Payload::json(&200u64).unwrap()),
    )
    .await;
    let st = wait_bounded(&node, &id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Failed, "{st:?}");
    let before = node.get_history(id.clone()).await.unwrap().unwrap();
    f.mode.store(FAIL_PUBLISH, Ordering::SeqCst);
    let p0 = f.publishes.load(Ordering::SeqCst);
    node.rewind(id.clone(), None).await.unwrap();
    // The rewind's publish is tried (and fails) a few times.
    while f.publishes.load(Ordering::SeqCst) < p0 + 3 {
        tokio::task::yield_now().await;
    }
    let during = node.get_history(id.clone()).await.unwrap().unwrap();
    assert_eq!(
        during, before,
        "the history the record covers changed before the publish"
    );
    f.mode.store(PASS, Ordering::SeqCst);
    let st = wait_bounded(&node, &id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
    let sum: u64 = st.output.unwrap().decode().unwrap();
    assert_eq!(sum, (1..=200u64).map(|i| i * i).sum::<u64>());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_start_that_another_start_replaced_is_dropped() {
    let (_f, store) = faulty();
    let node = common::start_with_options(
        store,
        perdure_node::sample::sample_registry(),
        staged_options(),
    )
    .await;
    let metrics = node.metrics();
    let id = InstanceId::new("replaced").unwrap();
    // e1: a fan-out of 200 (staged), due in 300 ms; e2 replaces it at once.
    let now = common::wall_clock_now();
    let mut req = StartRequest::new("FanOutFanIn");
    req.instance_id = Some(id.clone());
    req.input = Some(Payload::json(&200u64).unwrap());
    req.scheduled_start = Some(now.add(Duration::from_millis(300)));
    node.start(req).await.unwrap();
    let mut req = StartRequest::new("FanOutFanIn");
    req.instance_id = Some(id.clone());
    req.input = Some(Payload::json(&3u64).unwrap());
    req.reuse_policy = IdReusePolicy::TerminateExisting;
    node.start(req).await.unwrap();
    let s: u64 = common::output(&node, &id).await;
    assert_eq!(s, 14);
    // e1's scheduled start fires (its timer leaves the armed set) and meets e2's record.
    while metrics.armed_timers.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // e3 after it: it runs only if e1's start was dropped (not retried forever before it).
    let mut req = StartRequest::new("FanOutFanIn");
    req.instance_id = Some(id.clone());
    req.input = Some(Payload::json(&4u64).unwrap());
    req.reuse_policy = IdReusePolicy::TerminateExisting;
    node.start(req).await.unwrap();
    let st = wait_bounded(&node, &id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
    let s: u64 = st.output.unwrap().decode().unwrap();
    assert_eq!(s, 30);
    node.shutdown().await;
}
