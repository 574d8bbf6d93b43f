//! Dynamic partition ownership with several nodes in one process over one shared store (the
//! memory store and PostgreSQL): joins, graceful leaves, a node that dies without releasing,
//! fencing of the deposed owner, and name uniqueness.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use perdure_core::management::ManagementApi;
use perdure_core::{InstanceId, OrchestrationStatus, Timestamp};
use perdure_node::cluster::{ClusterView, LocalPeers, PeerNudge};
use perdure_node::node::{Node, NodeError, NodeHandle};
use perdure_node::options::{ClusterOptions, NodeOptions};
use perdure_node::store::Store;
use perdure_node::store::memory::MemoryStore;
use perdure_node::store::postgres::PostgresStore;

const P: u32 = 16;

fn opts(name: &str, ttl_ms: u64) -> NodeOptions {
    NodeOptions {
        partitions: std::num::NonZeroU32::new(P).unwrap(),
        cluster: ClusterOptions {
            name: name.to_string(),
            lease_ttl: Duration::from_millis(ttl_ms),
            heartbeat_interval: Duration::from_millis(ttl_ms / 5),
            ..ClusterOptions::default()
        },
        ..common::options()
    }
}

async fn node(
    store: &Arc<dyn Store>,
    peers: &Arc<LocalPeers>,
    name: &str,
    ttl_ms: u64,
) -> Result<NodeHandle, NodeError> {
    Node::builder()
        .registry(Arc::new(perdure_node::sample::sample_registry()))
        .store(store.clone())
        .options(opts(name, ttl_ms))
        .peer_nudge(peers.clone() as Arc<dyn PeerNudge>)
        .start()
        .await
}

/// Waits (on the node's published view, no polling) until `pred` holds.
async fn until(n: &NodeHandle, what: &str, pred: impl Fn(&ClusterView) -> bool) {
    let mut rx = n.cluster();
    let r = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|v| pred(v))).await;
    match r {
        Ok(r) => {
            r.expect("view published");
        }
        Err(_) => panic!(
            "{}: timed out waiting for {what}; its view: {:?}",
            n.name(),
            n.cluster().borrow()
        ),
    }
}

async fn history_once(n: &NodeHandle, id: &InstanceId) {
    let st = tokio::time::timeout(Duration::from_secs(30), common::wait(n, id))
        .await
        .unwrap_or_else(|_| panic!("{id} did not complete (asked {})", n.name()));
    assert_eq!(
        st.runtime_status,
        OrchestrationStatus::Completed,
        "{id}: {st:?}"
    );
    let hist = n.get_history(id.clone()).await.unwrap().unwrap();
    for name in ["ExecutionStarted", "ExecutionCompleted"] {
        assert_eq!(
            hist.iter().filter(|e| e.name() == name).count(),
            1,
            "{id}: {name} once"
        );
    }
    assert_eq!(
        hist.iter().filter(|e| e.name() == "TaskCompleted").count(),
        3,
        "{id}"
    );
}

async fn postgres(test: &str) -> Option<Arc<dyn Store>> {
    let url = match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            eprintln!("\n*** SKIPPED {test}: PERDURE_TEST_POSTGRES_URL is not set ***\n");
            return None;
        }
    };
    let table = format!("{test}_{}", std::process::id());
    let store = PostgresStore::connect_with_table(&url, 16, &table)
        .await
        .expect("connect");
    store.drop_table(&table).await.expect("drop");
    let store = PostgresStore::connect_with_table(&url, 16, &table)
        .await
        .expect("connect");
    Some(Arc::new(store))
}

/// A second node joins while orchestrations run: it takes its share (drained by the first
/// node), and every orchestration started before, during and after completes exactly once.
async fn join_then_leave(store: Arc<dyn Store>) {
    let peers = LocalPeers::new();
    let a = node(&store, &peers, "node-a", 3000)
        .await
        .expect("a starts");
    assert_eq!(a.cluster().borrow().owned.len(), P as usize);
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(common::start(&a, "HelloSequence", &format!("before-{i}"), None).await);
    }
    let b = node(&store, &peers, "node-b", 3000)
        .await
        .expect("b starts");
    for i in 0..40 {
        let via = if i % 2 == 0 { &a } else { &b };
        ids.push(common::start(via, "HelloSequence", &format!("during-{i}"), None).await);
    }
    // Placement over {a, b}: each ends up with exactly its desired share.
    let want_b = perdure_node::cluster::placement::placement(&["node-a", "node-b"], P)
        .iter()
        .filter(|o| **o == Some("node-b"))
        .count();
    assert!(want_b > 0 && want_b < P as usize);
    until(&b, "b holds its share", |v| v.owned.len() == want_b).await;
    until(&a, "a drained", |v| v.owned.len() == P as usize - want_b).await;
    until(&a, "a sees 2 live nodes", |v| v.live_nodes().len() == 2).await;
    assert_eq!(
        a.metrics()
            .partitions_owned
            .load(std::sync::atomic::Ordering::Relaxed),
        (P as usize - want_b) as i64
    );
    for i in 0..20 {
        let via = if i % 2 == 0 { &a } else { &b };
        ids.push(common::start(via, "HelloSequence", &format!("after-{i}"), None).await);
    }
    for id in &ids {
        history_once(if id.as_str().len() % 2 == 0 { &a } else { &b }, id).await;
    }

    // A graceful leave hands everything to the other node at once.
    a.shutdown().await;
    until(&b, "b holds everything", |v| v.owned.len() == P as usize).await;
    let id = common::start(&b, "HelloSequence", "after-leave", None).await;
    history_once(&b, &id).await;
    until(&b, "b sees only itself", |v| v.live_nodes() == ["node-b"]).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_leave_memory() {
    join_then_leave(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_leave_postgres() {
    if let Some(s) = postgres("cluster_join_leave").await {
        join_then_leave(s).await;
    }
}

/// A node dies (stops renewing without releasing): after the lease lifetime the survivor
/// takes its partitions, recovers what was in flight, and the dead node's partition actors
/// commit nothing more (fenced).
async fn failover(store: Arc<dyn Store>) {
    let peers = LocalPeers::new();
    let a = node(&store, &peers, "node-a", 1000)
        .await
        .expect("a starts");
    let b = node(&store, &peers, "node-b", 1000)
        .await
        .expect("b starts");
    until(&a, "a sees b", |v| v.live_nodes().len() == 2).await;
    until(&a, "a drained", |v| v.owned.len() < P as usize).await;
    let a_held = a.cluster().borrow().owned.clone();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(common::start(&b, "HelloSequence", &format!("fo-{i}"), None).await);
    }
    a.abandon_for_test().await;
    until(&b, "b holds everything", |v| v.owned.len() == P as usize).await;
    // The partitions b took from a have higher epochs now.
    let view = b.cluster().borrow().clone();
    for p in &a_held {
        let row = &view.partitions[*p as usize];
        assert_eq!(row.owner.as_deref(), Some("node-b"));
        assert!(row.epoch >= 2, "{row:?}");
    }
    // The frozen node still runs its old actors; whatever they try is fenced.
    let fenced = common::start(&a, "HelloSequence", "fo-after", None).await;
    for id in ids.iter().chain(std::iter::once(&fenced)) {
        history_once(&b, id).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_memory() {
    failover(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_postgres() {
    if let Some(s) = postgres("cluster_failover").await {
        failover(s).await;
    }
}

/// A live node's name is refused; a crashed node's name is taken once its heartbeat expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_among_live_nodes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let peers = LocalPeers::new();
    let a = node(&store, &peers, "same", 1000).await.expect("a starts");
    let err = node(&store, &peers, "same", 1000).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("\"same\" is in use by a live node"),
        "{err}"
    );
    // After a crash (no heartbeat, nothing released) the same name starts again, once the
    // old heartbeat expired, and takes every partition back with a new epoch.
    let id = common::start(&a, "HelloSequence", "names-1", None).await;
    common::wait(&a, &id).await;
    a.abandon_for_test().await;
    let t = tokio::time::Instant::now();
    let again = node(&store, &peers, "same", 1000).await.expect("restart");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(again.cluster().borrow().owned.len(), P as usize);
    let id = common::start(&again, "HelloSequence", "names-2", None).await;
    history_once(&again, &id).await;
    a.shutdown().await;
    again.shutdown().await;
}

/// A store that can be cut off: every new transaction fails as unavailable while `down`.
struct Switchable {
    inner: MemoryStore,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Store for Switchable {
    async fn begin(
        &self,
    ) -> Result<Box<dyn perdure_node::store::Transaction>, perdure_node::store::StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(perdure_node::store::StoreError::Unavailable(
                "switched off by the test".into(),
            ));
        }
        self.inner.begin().await
    }

    fn backend_name(&self) -> &'static str {
        "switchable"
    }
}

/// While the store is unreachable the node reports not ready with the reason, and becomes
/// ready again by itself when the store returns, still holding (or re-acquiring) every
/// partition; work started before the outage completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_makes_the_node_unready_until_the_store_returns() {
    let sw = Arc::new(Switchable {
        inner: MemoryStore::new(),
        down: false.into(),
    });
    let store: Arc<dyn Store> = sw.clone();
    let peers = LocalPeers::new();
    let a = node(&store, &peers, "outage", 1000).await.expect("starts");
    assert_eq!(a.cluster().borrow().not_ready, None);
    let id = common::start(&a, "HelloSequence", "outage-1", None).await;
    sw.down.store(true, std::sync::atomic::Ordering::SeqCst);
    until(&a, "not ready", |v| {
        v.not_ready
            .as_deref()
            .is_some_and(|r| r.contains("the store is unreachable"))
    })
    .await;
    sw.down.store(false, std::sync::atomic::Ordering::SeqCst);
    until(&a, "ready again with every partition", |v| {
        v.not_ready.is_none() && v.owned.len() == P as usize
    })
    .await;
    history_once(&a, &id).await;
    let id = common::start(&a, "HelloSequence", "outage-2", None).await;
    history_once(&a, &id).await;
    a.shutdown().await;
}

/// A partition actor that stops on an error (here: fenced, because its lease was taken with
/// a new epoch behind its back) is restarted by the node after a backoff: the node acquires
/// the partition again (a higher epoch) and serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_partition_actor_is_restarted() {
    use perdure_node::state::leases;
    use perdure_node::store::transact;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let peers = LocalPeers::new();
    let a = node(&store, &peers, "sup", 1000).await.expect("starts");
    let p = 0u32;
    let before = a.cluster().borrow().partitions[p as usize].epoch;
    // Another acquisition under the same name (as a restarted process would do) deposes the
    // running actor: its next renewal is fenced and it stops.
    let now = perdure_core::Timestamp::from_system_time(std::time::SystemTime::now());
    let bumped = transact(store.as_ref(), &Default::default(), move |tx| {
        Box::pin(async move { leases::acquire(tx, p, "sup", now, Duration::from_secs(1)).await })
    })
    .await
    .expect("acquire");
    assert_eq!(bumped, Some(before + 1));
    until(&a, "partition 0 restarted with a new epoch", |v| {
        v.owned.contains(&p) && v.partitions[p as usize].epoch > before + 1
    })
    .await;
    // It serves: an instance of partition 0 completes.
    let id = (0..)
        .map(|i| format!("sup-{i}"))
        .find(|id| perdure_node::state::partition_of(id, P) == p)
        .expect("an id of partition 0");
    let id = common::start(&a, "HelloSequence", &id, None).await;
    history_once(&a, &id).await;
    a.shutdown().await;
}

/// Activity attempts of `GateAfterMove` that started, and a gate they wait at: the first
/// attempt of each returns "first" once the gate opens; any later attempt (a new owner
/// re-running the task) never returns, so only the first attempt's result can complete it.
struct Gate {
    started: std::sync::atomic::AtomicUsize,
    open: tokio::sync::Semaphore,
}

static GATE: Gate = Gate {
    started: std::sync::atomic::AtomicUsize::new(0),
    open: tokio::sync::Semaphore::const_new(0),
};

async fn gated(ctx: perdure_core::activity::ActivityContext, _: ()) -> Result<String, String> {
    if ctx.attempt() > 1 {
        std::future::pending::<()>().await;
    }
    GATE.started
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _permit = GATE.open.acquire().await.map_err(|e| e.to_string())?;
    Ok("first".to_string())
}

async fn gate_after_move(
    ctx: perdure_core::orchestration::OrchestrationContext,
    _: (),
) -> Result<String, perdure_core::orchestration::TaskError> {
    ctx.call_activity("Gated", ()).await
}

/// An activity that was running on a node when its instance's partition moved to another
/// node: its result goes to the instance's inbox and the new owner records it, exactly once
/// (the new owner's re-run of the task never finishes here, so only the moved result can
/// complete the instance).
async fn an_activity_result_follows_its_partition(store: Arc<dyn Store>) {
    let mut registry = perdure_node::sample::sample_registry();
    registry
        .add_orchestration("GateAfterMove", gate_after_move)
        .add_activity("Gated", gated);
    let registry = Arc::new(registry);
    let peers = LocalPeers::new();
    let start = |name: &'static str| {
        Node::builder()
            .registry(registry.clone())
            .store(store.clone())
            .options(opts(name, 3000))
            .peer_nudge(peers.clone() as Arc<dyn PeerNudge>)
            .start()
    };
    let a = start("node-a").await.expect("a starts");
    // Instances on partitions that will move to node-b, and one that stays on node-a.
    let owners = perdure_node::cluster::placement::placement(&["node-a", "node-b"], P);
    let on = |owner: &str, n: usize| -> Vec<String> {
        (0..)
            .map(|i| format!("gate-{}-{i}", std::process::id()))
            .filter(|id| owners[perdure_node::state::partition_of(id, P) as usize] == Some(owner))
            .take(n)
            .collect()
    };
    let moving = on("node-b", 4);
    let staying = on("node-a", 2);
    let before = GATE.started.load(std::sync::atomic::Ordering::SeqCst);
    let mut ids = Vec::new();
    for id in moving.iter().chain(&staying) {
        ids.push(common::start(&a, "GateAfterMove", id, None).await);
    }
    let all = ids.len();
    tokio::time::timeout(Duration::from_secs(30), async {
        while GATE.started.load(std::sync::atomic::Ordering::SeqCst) < before + all {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every first attempt started on node-a");
    let b = start("node-b").await.expect("b starts");
    let want_b = owners.iter().filter(|o| **o == Some("node-b")).count();
    until(&b, "b holds its share", |v| v.owned.len() == want_b).await;
    until(&a, "a drained", |v| v.owned.len() == P as usize - want_b).await;
    // The first attempts finish now, on node-a, after the move.
    GATE.open.add_permits(all);
    for id in &ids {
        let owner = if moving.contains(&id.as_str().to_string()) {
            &b
        } else {
            &a
        };
        let st = tokio::time::timeout(Duration::from_secs(30), common::wait(owner, id))
            .await
            .unwrap_or_else(|_| panic!("{id}: the first attempt's result never arrived"));
        assert_eq!(
            st.runtime_status,
            OrchestrationStatus::Completed,
            "{id}: {st:?}"
        );
        assert_eq!(common::output::<String>(owner, id).await, "first", "{id}");
        let hist = owner.get_history(id.clone()).await.unwrap().unwrap();
        assert_eq!(
            hist.iter().filter(|e| e.name() == "TaskCompleted").count(),
            1,
            "{id}: one result recorded"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_result_follows_its_partition_memory() {
    an_activity_result_follows_its_partition(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_result_follows_its_partition_postgres() {
    if let Some(s) = postgres("cluster_activity_moves").await {
        an_activity_result_follows_its_partition(s).await;
    }
}

/// A long poll that began while this node ran the instance's partition answers as soon as
/// the instance completes on the partition's new owner, not at the poll's timeout.
async fn a_long_poll_follows_its_partition(store: Arc<dyn Store>) {
    let peers = LocalPeers::new();
    let a = node(&store, &peers, "node-a", 3000)
        .await
        .expect("a starts");
    let owners = perdure_node::cluster::placement::placement(&["node-a", "node-b"], P);
    let id = (0..)
        .map(|i| format!("poll-{}-{i}", std::process::id()))
        .find(|id| owners[perdure_node::state::partition_of(id, P) as usize] == Some("node-b"))
        .expect("an id that moves to node-b");
    let input =
        perdure_core::Payload::json(&serde_json::json!({"timeoutSeconds": 600})).expect("input");
    let id = common::start(&a, "Approval", &id, Some(input)).await;
    common::until_status(&a, &id, OrchestrationStatus::Running).await;
    let poll = {
        let (a, id) = (a.clone(), id.clone());
        tokio::spawn(async move { a.wait_for_completion(id, Duration::from_secs(120)).await })
    };
    let b = node(&store, &peers, "node-b", 3000)
        .await
        .expect("b starts");
    let want_b = owners.iter().filter(|o| **o == Some("node-b")).count();
    until(&b, "b holds its share", |v| v.owned.len() == want_b).await;
    common::approve(&b, &id, true).await;
    let st = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("the long poll on node-a answered within 20 s of the completion on node-b")
        .expect("poll task")
        .expect("wait")
        .expect("instance exists");
    assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_follows_its_partition_memory() {
    a_long_poll_follows_its_partition(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_follows_its_partition_postgres() {
    if let Some(s) = postgres("cluster_long_poll_moves").await {
        a_long_poll_follows_its_partition(s).await;
    }
}

/// Two tests, `$embedded` and `$postgres`: the async fn `$test(store)` on a fresh embedded
/// store and on a fresh PostgreSQL table named after `$table`.
macro_rules! on_real_stores {
    ($test:ident, $embedded:ident, $postgres:ident, $table:literal) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $embedded() {
            let dir = tempfile::tempdir().expect("tempdir");
            let store =
                perdure_node::store::embedded::EmbeddedStore::open(dir.path()).expect("opens");
            $test(Arc::new(store)).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            if let Some(store) = postgres($table).await {
                $test(store).await;
            }
        }
    };
}

/// A store whose scans of the inboxes and of the activity task queues (a partition's
/// recovery reads both) take `delay_ms` each, counted in `slowed`: the first scan from each
/// start key only (a recovery; the periodic re-reads that follow are not slowed). Over the embedded store or PostgreSQL: the memory
/// store runs one transaction at a time, so a slow one would stall every other.
struct SlowRecovery {
    inner: Arc<dyn Store>,
    delay_ms: std::sync::atomic::AtomicU64,
    slowed: std::sync::atomic::AtomicUsize,
    seen: std::sync::Mutex<std::collections::BTreeSet<Vec<u8>>>,
    /// While set, a transaction that writes a membership record fails as unavailable.
    fail_beats: std::sync::atomic::AtomicBool,
    /// While set, a transaction that writes a membership record never commits (a store that
    /// does not answer).
    hang_beats: std::sync::atomic::AtomicBool,
    /// Notified when a scan starts being slowed.
    slowing: tokio::sync::Notify,
    /// Slowed scans that have finished.
    finished: std::sync::atomic::AtomicUsize,
}

struct SlowRecoveryTx {
    inner: Box<dyn perdure_node::store::Transaction>,
    store: Arc<SlowRecovery>,
    beats: bool,
}

#[async_trait::async_trait]
impl perdure_node::store::Transaction for SlowRecoveryTx {
    async fn get(
        &mut self,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, perdure_node::store::StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(
        &mut self,
        range: &perdure_node::store::KeyRange,
        opts: perdure_node::store::RangeOptions,
    ) -> Result<Vec<perdure_node::store::KeyValue>, perdure_node::store::StoreError> {
        use perdure_node::state::{keys::Key, space};
        use std::sync::atomic::Ordering::SeqCst;
        let slowed = [space::INBOX, space::TASK].map(|s| Key::new().str(s).into_bytes());
        let delay = self.store.delay_ms.load(SeqCst);
        if delay > 0
            && slowed.iter().any(|p| range.begin.starts_with(p))
            && self
                .store
                .seen
                .lock()
                .expect("seen")
                .insert(range.begin.clone())
        {
            self.store.slowed.fetch_add(1, SeqCst);
            self.store.slowing.notify_one();
            tokio::time::sleep(Duration::from_millis(delay)).await;
            self.store.finished.fetch_add(1, SeqCst);
        }
        self.inner.get_range(range, opts).await
    }
    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), perdure_node::store::StoreError> {
        use perdure_node::state::{keys::Key, space};
        self.beats |= key.starts_with(&Key::new().str(space::NODE).into_bytes());
        self.inner.set(key, value)
    }
    fn clear(&mut self, key: &[u8]) {
        self.inner.clear(key)
    }
    fn clear_range(&mut self, range: &perdure_node::store::KeyRange) {
        self.inner.clear_range(range)
    }
    async fn commit(self: Box<Self>) -> Result<(), perdure_node::store::StoreError> {
        if self.beats
            && self
                .store
                .hang_beats
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return std::future::pending().await;
        }
        if self.beats
            && self
                .store
                .fail_beats
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(perdure_node::store::StoreError::Unavailable(
                "heartbeats switched off by the test".into(),
            ));
        }
        self.inner.commit().await
    }
}

struct SlowRecoveryStore(Arc<SlowRecovery>);

/// `inner` behind a [`SlowRecoveryStore`] (not slowed yet), and its controls.
fn slow_recovery(inner: &Arc<dyn Store>) -> (Arc<SlowRecovery>, Arc<dyn Store>) {
    let slow = Arc::new(SlowRecovery {
        inner: inner.clone(),
        delay_ms: 0.into(),
        slowed: 0.into(),
        seen: Default::default(),
        fail_beats: false.into(),
        hang_beats: false.into(),
        slowing: tokio::sync::Notify::new(),
        finished: 0.into(),
    });
    let store: Arc<dyn Store> = Arc::new(SlowRecoveryStore(slow.clone()));
    (slow, store)
}

#[async_trait::async_trait]
impl Store for SlowRecoveryStore {
    async fn begin(
        &self,
    ) -> Result<Box<dyn perdure_node::store::Transaction>, perdure_node::store::StoreError> {
        Ok(Box::new(SlowRecoveryTx {
            inner: self.0.inner.begin().await?,
            store: self.0.clone(),
            beats: false,
        }))
    }

    fn backend_name(&self) -> &'static str {
        "slow-recovery"
    }
}

/// A node whose round takes longer than the lease (here: the recovery of the partitions it
/// acquires, 1.4 leases long: two reads of 0.7 leases each) keeps its heartbeat and its
/// leases: the other node never counts it dead, no lease it took lapses, and it keeps every
/// partition at the epoch it took it with.
async fn a_slow_round_keeps_the_heartbeat_and_the_leases(inner: Arc<dyn Store>) {
    use std::sync::atomic::Ordering::SeqCst;
    const TTL_MS: u64 = 2000;
    let (slow, store) = slow_recovery(&inner);
    let peers = LocalPeers::new();
    // Only `b` reads through the slow store (`a`'s own re-reads would otherwise use up the
    // slow first scans of the partitions `b` is about to recover).
    let a = node(&inner, &peers, "steady", TTL_MS)
        .await
        .expect("a starts");
    let mut seen = a.cluster();
    slow.delay_ms.store(TTL_MS * 7 / 10, SeqCst);
    let b = node(&store, &peers, "slow", TTL_MS)
        .await
        .expect("b starts");
    let mut b_view = b.cluster();
    // Every view `a` publishes, from `b`'s start until `b` has heartbeated for a whole lease
    // after recovering its share: `b` is live, and a partition once owned by `b` stays so
    // (at the same epoch, never lapsing) while placement gives it to `b`.
    let mut taken: BTreeMap<u32, u64> = BTreeMap::new();
    let mut recovered: Option<Timestamp> = None;
    let watch = async {
        loop {
            tokio::select! {
                r = seen.changed() => {
                    r.expect("a's view");
                    let v = seen.borrow_and_update().clone();
                    let Some(n) = v.nodes.iter().find(|n| n.name == "slow") else { continue };
                    assert!(n.live, "a counted b dead during b's slow round: {n:?}");
                    for row in &v.partitions {
                        // A partition that placement gives to another node may move (under
                        // load a node's own heartbeat can miss a round and placement flaps).
                        if row.desired.as_deref() != Some("slow") {
                            taken.remove(&row.partition);
                            continue;
                        }
                        if let Some(epoch) = taken.get(&row.partition) {
                            assert_eq!(
                                (row.owner.as_deref(), row.epoch),
                                (Some("slow"), *epoch),
                                "a partition of b lapsed or moved: {row:?}"
                            );
                        } else if row.owner.as_deref() == Some("slow") {
                            taken.insert(row.partition, row.epoch);
                        }
                    }
                    if recovered.is_some_and(|t| n.last_seen > t.add(Duration::from_millis(TTL_MS))) {
                        return;
                    }
                }
                r = b_view.wait_for(|v| v.owned.len() == P as usize / 2), if recovered.is_none() => {
                    r.expect("b's view");
                    recovered = Some(Timestamp::from_system_time(std::time::SystemTime::now()));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .expect("b recovers its share and keeps it");
    assert!(slow.slowed.load(SeqCst) > 0, "no recovery was slowed");
    assert!(!taken.is_empty(), "b never owned a partition in a's views");
    slow.delay_ms.store(0, SeqCst);
    let id = common::start(&b, "HelloSequence", "slow-1", None).await;
    history_once(&b, &id).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Node `steady` on `inner`, then node `name` on `inner` behind a [`SlowRecoveryStore`]
/// whose recovery scans take `delay_ms`; both with leases of `ttl_ms`.
async fn steady_and_slow(
    inner: &Arc<dyn Store>,
    ttl_ms: u64,
    name: &str,
    delay_ms: u64,
) -> (Arc<SlowRecovery>, NodeHandle, NodeHandle) {
    let (slow, store) = slow_recovery(inner);
    let peers = LocalPeers::new();
    let a = node(inner, &peers, "steady", ttl_ms)
        .await
        .expect("a starts");
    slow.delay_ms
        .store(delay_ms, std::sync::atomic::Ordering::SeqCst);
    let b = node(&store, &peers, name, ttl_ms).await.expect("b starts");
    (slow, a, b)
}

on_real_stores!(
    a_slow_round_keeps_the_heartbeat_and_the_leases,
    a_slow_round_keeps_the_heartbeat_and_the_leases_embedded,
    a_slow_round_keeps_the_heartbeat_and_the_leases_postgres,
    "slow_round"
);

/// A node whose round is stuck (here: the first page of every partition it acquires takes 9
/// s to read, past five 1 s leases without progress) reports not ready and stops heartbeating, so the other node counts it
/// dead and takes over the partitions whose leases lapsed. When the slow reads end, the node
/// heartbeats again, is ready, and takes partitions again (its whole share may take longer:
/// the actors that were fenced restart after a backoff); orchestrations complete once.
async fn a_stuck_round_makes_the_node_unready_and_lets_others_take_over(inner: Arc<dyn Store>) {
    use std::sync::atomic::Ordering::SeqCst;
    let (slow, a, b) = steady_and_slow(&inner, 1000, "stuck", 9000).await;
    until(&b, "b not ready: its round is stuck", |v| {
        v.not_ready
            .as_deref()
            .is_some_and(|r| r.contains("a cluster round has made no progress"))
    })
    .await;
    // Only the first recoveries are slow: what b recovers when it comes back is not.
    slow.delay_ms.store(0, SeqCst);
    until(&a, "a counts b dead and holds every partition", |v| {
        v.owned.len() == P as usize && v.nodes.iter().all(|n| n.name != "stuck" || !n.live)
    })
    .await;
    assert!(slow.slowed.load(SeqCst) > 0, "no recovery was slowed");
    let id = common::start(&a, "HelloSequence", "stuck-1", None).await;
    history_once(&a, &id).await;
    // Ready again only from a round after the stuck one (its view is fresh), holding
    // partitions.
    until(&b, "b ready again, holding partitions", |v| {
        v.not_ready.is_none() && !v.owned.is_empty()
    })
    .await;
    assert!(
        slow.finished.load(SeqCst) > 0,
        "b was ready before its stuck round ended"
    );
    until(&a, "a sees b live and gave partitions back", |v| {
        v.owned.len() < P as usize && v.nodes.iter().any(|n| n.name == "stuck" && n.live)
    })
    .await;
    let id = common::start(&b, "HelloSequence", "stuck-2", None).await;
    history_once(&b, &id).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_real_stores!(
    a_stuck_round_makes_the_node_unready_and_lets_others_take_over,
    a_stuck_round_makes_the_node_unready_and_lets_others_take_over_embedded,
    a_stuck_round_makes_the_node_unready_and_lets_others_take_over_postgres,
    "stuck_round"
);

/// Heartbeats that fail, or get no answer, during a long round (here: the recovery of the
/// partitions the node acquires, whose first page takes 10 s) make the node not ready with
/// the reason; the next heartbeat that gets through makes it ready again, while the round
/// is still running.
async fn failing_heartbeats_in_a_long_round_make_the_node_unready(inner: Arc<dyn Store>) {
    use std::sync::atomic::Ordering::SeqCst;
    let (slow, a, b) = steady_and_slow(&inner, 3000, "beats", 10_000).await;
    tokio::time::timeout(Duration::from_secs(30), slow.slowing.notified())
        .await
        .expect("b starts recovering a partition");
    for (switch, reason) in [
        (&slow.fail_beats, "heartbeats have failed"),
        (&slow.hang_beats, "did not answer"),
    ] {
        switch.store(true, SeqCst);
        until(&b, reason, |v| {
            v.not_ready.as_deref().is_some_and(|r| r.contains(reason))
        })
        .await;
        switch.store(false, SeqCst);
        until(&b, "b ready again", |v| v.not_ready.is_none()).await;
        assert_eq!(
            slow.finished.load(SeqCst),
            0,
            "the round ended before the test was done with it ({reason})"
        );
    }
    slow.delay_ms.store(0, SeqCst);
    let id = common::start(&b, "HelloSequence", "beats-1", None).await;
    history_once(&b, &id).await;
    a.shutdown().await;
    b.shutdown().await;
}

on_real_stores!(
    failing_heartbeats_in_a_long_round_make_the_node_unready,
    failing_heartbeats_in_a_long_round_make_the_node_unready_embedded,
    failing_heartbeats_in_a_long_round_make_the_node_unready_postgres,
    "failing_beats"
);
