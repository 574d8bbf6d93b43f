//! Races between an instance's episode and writes to its record from outside the episode
//! (a start with `TerminateExisting`, suspend), made deterministic by a store wrapper that
//! holds the episode's transaction at its commit while the test writes.
//!
//! The embedded store and PostgreSQL (when `PERDURE_TEST_POSTGRES_URL` is set) run them; the
//! memory store cannot: its transactions hold one global lock from begin to commit, so the
//! outside write would wait for the held commit.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use perdure_core::management::{IdReusePolicy, ManagementApi, StartRequest};
use perdure_core::{InstanceId, OrchestrationStatus, Payload, Timestamp};
use perdure_node::node::NodeHandle;
use perdure_node::sample::ApprovalInput;
use perdure_node::state::instances;
use perdure_node::store::embedded::EmbeddedStore;
use perdure_node::store::{KeyRange, KeyValue, RangeOptions, Store, StoreError, Transaction};
use tokio::sync::{Notify, mpsc};

/// What the gate reports to the test.
#[derive(Debug, PartialEq)]
enum Event {
    /// An episode's transaction of the watched instance is held at its commit.
    Held,
    /// After the release, a transaction that read the watched record committed.
    Settled,
}

/// Holds the first committing transaction that writes the watched record and removes a
/// message (an episode's), until released.
struct Gate {
    key: Mutex<Option<Vec<u8>>>,
    armed: Mutex<bool>,
    /// Matching transactions to let through before the one held.
    skip: Mutex<usize>,
    released: Mutex<bool>,
    release: Notify,
    events: mpsc::UnboundedSender<Event>,
}

struct GateStore {
    inner: Arc<dyn Store>,
    gate: Arc<Gate>,
}

struct GateTx {
    inner: Box<dyn Transaction>,
    gate: Arc<Gate>,
    key: Option<Vec<u8>>,
    read_key: bool,
    set_key: bool,
    cleared: bool,
}

#[async_trait]
impl Store for GateStore {
    async fn begin(&self) -> Result<Box<dyn Transaction>, StoreError> {
        let key = self.gate.key.lock().unwrap().clone();
        Ok(Box::new(GateTx {
            inner: self.inner.begin().await?,
            gate: self.gate.clone(),
            key,
            read_key: false,
            set_key: false,
            cleared: false,
        }))
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

#[async_trait]
impl Transaction for GateTx {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if self.key.as_deref() == Some(key) {
            self.read_key = true;
        }
        self.inner.get(key).await
    }

    async fn get_range(
        &mut self,
        range: &KeyRange,
        opts: RangeOptions,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.inner.get_range(range, opts).await
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if self.key.as_deref() == Some(key) {
            self.set_key = true;
        }
        self.inner.set(key, value)
    }

    fn clear(&mut self, key: &[u8]) {
        self.cleared = true;
        self.inner.clear(key)
    }

    fn clear_range(&mut self, range: &KeyRange) {
        self.inner.clear_range(range)
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let gate = self.gate.clone();
        let hold = self.set_key && self.cleared && {
            let mut armed = gate.armed.lock().unwrap();
            let mut skip = gate.skip.lock().unwrap();
            if !*armed {
                false
            } else if *skip > 0 {
                *skip -= 1;
                false
            } else {
                *armed = false;
                true
            }
        };
        if hold {
            let _ = gate.events.send(Event::Held);
            gate.release.notified().await;
        }
        let watched = self.read_key && !hold && *gate.released.lock().unwrap();
        let r = self.inner.commit().await;
        if watched && r.is_ok() {
            let _ = gate.events.send(Event::Settled);
        }
        r
    }
}

impl Gate {
    fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        let gate = Arc::new(Self {
            key: Mutex::new(None),
            armed: Mutex::new(false),
            skip: Mutex::new(0),
            released: Mutex::new(false),
            release: Notify::new(),
            events,
        });
        (gate, rx)
    }

    fn arm(&self, id: &InstanceId) {
        *self.key.lock().unwrap() = Some(instances::record_key(id));
        *self.armed.lock().unwrap() = true;
    }

    /// Like [`arm`](Self::arm), letting the first `skip` matching transactions through.
    fn arm_after(&self, id: &InstanceId, skip: usize) {
        *self.skip.lock().unwrap() = skip;
        self.arm(id);
    }

    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.release.notify_one();
    }
}

fn approval(timeout_seconds: u64) -> Payload {
    Payload::json(&ApprovalInput { timeout_seconds }).unwrap()
}

/// Starts an `Approval`, lets its first episode commit, and holds the episode that the
/// approval event runs at its commit. Returns the instance's first execution id.
async fn hold_episode(
    node: &NodeHandle,
    gate: &Gate,
    events: &mut mpsc::UnboundedReceiver<Event>,
    name: &str,
) -> (InstanceId, perdure_core::ExecutionId) {
    let id = common::start(node, "Approval", name, Some(approval(3600))).await;
    common::until_status(node, &id, OrchestrationStatus::Running).await;
    let first = node.get_instance(id.clone(), false).await.unwrap().unwrap();
    gate.arm(&id);
    common::approve(node, &id, true).await;
    assert_eq!(events.recv().await, Some(Event::Held));
    (id, first.execution_id)
}

/// A start with `TerminateExisting` commits while an episode of the old execution (which
/// completes it) waits at its commit: the episode must not restore the old execution's
/// record over the new one. Before the fix the stored record became the old execution's
/// Completed record ("approved") again.
async fn terminate_existing_during_episode(store: Arc<dyn Store>) {
    let (gate, mut events) = Gate::new();
    let node = common::start_on(Arc::new(GateStore {
        inner: store,
        gate: gate.clone(),
    }))
    .await;
    let (id, old_exec) = hold_episode(&node, &gate, &mut events, "race-terminate").await;

    // The new execution starts a day later: its record stays Pending meanwhile.
    let mut req = StartRequest::new("Approval");
    req.instance_id = Some(id.clone());
    req.input = Some(approval(7200));
    req.reuse_policy = IdReusePolicy::TerminateExisting;
    req.scheduled_start =
        Some(Timestamp::from_system_time(SystemTime::now()).add(Duration::from_secs(86_400)));
    node.start(req).await.expect("start replaces the instance");

    gate.release();
    assert_eq!(events.recv().await, Some(Event::Settled));
    let st = node.get_instance(id.clone(), true).await.unwrap().unwrap();
    assert_ne!(
        st.execution_id, old_exec,
        "the old execution's episode overwrote the new start: {st:?}"
    );
    assert_eq!(st.runtime_status, OrchestrationStatus::Pending, "{st:?}");
    assert_eq!(st.input, Some(approval(7200)));
    node.shutdown().await;
}

/// Suspend sets the stored status at once while an episode that completes the instance
/// waits at its commit: the instance stays suspended and, resumed, completes with the
/// event it had received (nothing lost). Before the fix the episode wrote Completed over
/// Suspended.
async fn suspend_during_episode(store: Arc<dyn Store>) {
    let (gate, mut events) = Gate::new();
    let node = common::start_on(Arc::new(GateStore {
        inner: store,
        gate: gate.clone(),
    }))
    .await;
    let (id, _) = hold_episode(&node, &gate, &mut events, "race-suspend").await;

    node.suspend(id.clone(), Some("hold".into()))
        .await
        .expect("suspend accepted");
    gate.release();
    assert_eq!(events.recv().await, Some(Event::Settled));
    let st = node.get_instance(id.clone(), false).await.unwrap().unwrap();
    assert_eq!(
        st.runtime_status,
        OrchestrationStatus::Suspended,
        "the episode overwrote the suspension: {st:?}"
    );

    node.resume(id.clone(), None)
        .await
        .expect("resume accepted");
    let out: String = common::output(&node, &id).await;
    assert_eq!(out, "approved");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_existing_during_episode_embedded() {
    let dir = tempfile::tempdir().unwrap();
    terminate_existing_during_episode(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_during_episode_embedded() {
    let dir = tempfile::tempdir().unwrap();
    suspend_during_episode(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

/// A fresh PostgreSQL table per test (None, with a loud note, without the variable).
async fn postgres(test: &str) -> Option<(perdure_node::store::postgres::PostgresStore, String)> {
    let url = match std::env::var("PERDURE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!("\n*** SKIPPED {test}: PERDURE_TEST_POSTGRES_URL is not set ***\n");
            return None;
        }
    };
    let table = format!("{test}_{}", std::process::id());
    let store = perdure_node::store::postgres::PostgresStore::connect_with_table(&url, 8, &table)
        .await
        .expect("postgres connects");
    Some((store, table))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_existing_during_episode_postgres() {
    let Some((store, table)) = postgres("race_terminate").await else {
        return;
    };
    let store = Arc::new(store);
    terminate_existing_during_episode(store.clone()).await;
    store.drop_table(&table).await.expect("drop table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_during_episode_postgres() {
    let Some((store, table)) = postgres("race_suspend").await else {
        return;
    };
    let store = Arc::new(store);
    suspend_during_episode(store.clone()).await;
    store.drop_table(&table).await.expect("drop table");
}

/// Suspend is accepted while an instance is Pending and sets Suspended at once; the new
/// execution's first episode, held at its commit meanwhile, must keep the suspension.
/// Before the fix it stored Running until the suspend message ran (a resume in between was
/// refused with InvalidState).
async fn suspend_while_pending(store: Arc<dyn Store>) {
    let (gate, mut events) = Gate::new();
    let node = common::start_on(Arc::new(GateStore {
        inner: store,
        gate: gate.clone(),
    }))
    .await;
    let id = InstanceId::new("race-pending").unwrap();
    // The start's own transaction clears nothing: the first one held is the episode.
    gate.arm(&id);
    common::start(&node, "Approval", id.as_str(), Some(approval(3600))).await;
    assert_eq!(events.recv().await, Some(Event::Held));
    node.suspend(id.clone(), Some("hold".into()))
        .await
        .expect("suspend accepted (the record is Pending)");
    gate.release();
    assert_eq!(events.recv().await, Some(Event::Settled));
    let st = node.get_instance(id.clone(), false).await.unwrap().unwrap();
    assert_eq!(
        st.runtime_status,
        OrchestrationStatus::Suspended,
        "the new execution overwrote the suspension: {st:?}"
    );
    node.resume(id.clone(), None)
        .await
        .expect("resume accepted");
    common::approve(&node, &id, true).await;
    let out: String = common::output(&node, &id).await;
    assert_eq!(out, "approved");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_while_pending_embedded() {
    let dir = tempfile::tempdir().unwrap();
    suspend_while_pending(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_while_pending_postgres() {
    let Some((store, table)) = postgres("race_pending").await else {
        return;
    };
    let store = Arc::new(store);
    suspend_while_pending(store.clone()).await;
    store.drop_table(&table).await.expect("drop table");
}

/// Suspend, resume, suspend: each call sets the status at once, and the queued messages
/// must not replay the older statuses over it. The first suspend's episode is held while
/// the resume and the second suspend commit; the episode after the resume's is held next,
/// so the status the resume's message left is seen. Before the fix it was Running (the
/// queued resume undid the later suspend, and a resume then was refused).
async fn queued_resume_after_a_later_suspend(store: Arc<dyn Store>) {
    let (gate, mut events) = Gate::new();
    let node = common::start_on(Arc::new(GateStore {
        inner: store,
        gate: gate.clone(),
    }))
    .await;
    let id = common::start(&node, "Approval", "race-resume", Some(approval(3600))).await;
    common::until_status(&node, &id, OrchestrationStatus::Running).await;
    // The suspend's own transaction (it moves an index entry) goes through.
    gate.arm_after(&id, 1);
    node.suspend(id.clone(), None).await.expect("suspend");
    assert_eq!(events.recv().await, Some(Event::Held));
    node.resume(id.clone(), None).await.expect("resume");
    node.suspend(id.clone(), None).await.expect("suspend again");
    // Through: the first suspend's episode (run again) and the resume's; held: the next.
    gate.arm_after(&id, 2);
    gate.release();
    while events.recv().await.expect("the gate reports") != Event::Held {}
    let st = node.get_instance(id.clone(), false).await.unwrap().unwrap();
    let status = st.runtime_status;
    gate.release();
    assert_eq!(
        status,
        OrchestrationStatus::Suspended,
        "a queued resume undid the later suspend: {st:?}"
    );
    node.resume(id.clone(), None)
        .await
        .expect("resume accepted");
    common::approve(&node, &id, true).await;
    let out: String = common::output(&node, &id).await;
    assert_eq!(out, "approved");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_resume_after_a_later_suspend_embedded() {
    let dir = tempfile::tempdir().unwrap();
    queued_resume_after_a_later_suspend(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_resume_after_a_later_suspend_postgres() {
    let Some((store, table)) = postgres("race_resume").await else {
        return;
    };
    let store = Arc::new(store);
    queued_resume_after_a_later_suspend(store.clone()).await;
    store.drop_table(&table).await.expect("drop table");
}

/// Calls of `FailsOnce` so far (its first call fails).
static FAILS_ONCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn rewind_registry() -> perdure_core::registry::Registry {
    use perdure_core::activity::ActivityContext;
    use perdure_core::orchestration::{OrchestrationContext, TaskError};
    let mut r = perdure_node::sample::sample_registry();
    r.add_activity("FailsOnce", |_ctx: ActivityContext, _: ()| async move {
        if FAILS_ONCE.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Err("first call".to_string())
        } else {
            Ok("done".to_string())
        }
    })
    .add_orchestration(
        "UsesFailsOnce",
        |ctx: OrchestrationContext, _: ()| async move {
            let b: String = ctx.call_activity("FailsOnce", ()).await?;
            Ok::<_, TaskError>(b)
        },
    );
    r
}

/// Rewind sets the record Pending at once; a suspend accepted before the instance's actor
/// runs the rewind message turns it Suspended. The rewind message must still rewind the
/// instance (which, resumed, completes). Before the fix the message found Suspended, was
/// dropped, and the resumed instance stayed Running forever on its failed history.
async fn suspend_before_rewind_runs(store: Arc<dyn Store>) {
    let (gate, mut events) = Gate::new();
    let node = common::start_with(
        Arc::new(GateStore {
            inner: store,
            gate: gate.clone(),
        }),
        rewind_registry(),
    )
    .await;
    let id = common::start(&node, "UsesFailsOnce", "race-rewind", None).await;
    let st = common::wait(&node, &id).await;
    assert_eq!(st.runtime_status, OrchestrationStatus::Failed, "{st:?}");

    // The rewind's episode (it writes the record and removes the message) waits at its
    // commit while the suspend commits.
    // (The rewind's own transaction, which also writes the record and clears its old
    // index entry, goes through.)
    gate.arm_after(&id, 1);
    node.rewind(id.clone(), Some("again".into()))
        .await
        .expect("rewind accepted");
    assert_eq!(events.recv().await, Some(Event::Held));
    node.suspend(id.clone(), Some("hold".into()))
        .await
        .expect("suspend accepted (the record is Pending)");
    gate.release();
    node.resume(id.clone(), None)
        .await
        .expect("resume accepted");
    let Ok(st) = tokio::time::timeout(Duration::from_secs(60), common::wait(&node, &id)).await
    else {
        let st = node.get_instance(id.clone(), false).await.unwrap();
        let hist = node
            .get_history(id.clone())
            .await
            .unwrap()
            .unwrap_or_default();
        let kinds: Vec<&str> = hist.iter().map(|e| e.name()).collect();
        panic!("the rewound instance never completes (the rewind was dropped): {st:?} {kinds:?}");
    };
    assert_eq!(st.runtime_status, OrchestrationStatus::Completed, "{st:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_before_rewind_runs_embedded() {
    let dir = tempfile::tempdir().unwrap();
    suspend_before_rewind_runs(Arc::new(EmbeddedStore::open(dir.path()).unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_before_rewind_runs_postgres() {
    let Some((store, table)) = postgres("race_rewind").await else {
        return;
    };
    let store = Arc::new(store);
    suspend_before_rewind_runs(store.clone()).await;
    store.drop_table(&table).await.expect("drop table");
}
