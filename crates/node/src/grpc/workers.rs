//! The workers connected over `GetWorkItems`: each open stream is a worker; the node hands it
//! the orchestrator, activity and entity work items of functions it does not run itself, and
//! waits for the matching `Complete*` call.
//!
//! Each delivery of a work item carries its own completion token, unique in this node's
//! process. A completion is taken once, for the current delivery of a work item still
//! waiting; any other (late, repeated, from a worker whose item was given to another since)
//! is refused without effect. A worker that
//! disconnects or abandons an item gives it back: it goes to another worker, or waits for the
//! next one that connects. Work items are not stored here: the runtime keeps the messages
//! they come from until their results commit, so an item lost with the node runs again after
//! a restart.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use super::peers::{RemoteOutcome, RemoteWorkers};
use super::proto;
use crate::cluster::transport::wire::WorkersSummary;

/// How long an abandoned item waits before it goes back to the worker that abandoned it
/// (when no other worker takes it).
pub(crate) const ABANDON_DELAY: Duration = Duration::from_secs(1);

/// How long a worker may hold an orchestrator or entity work item before it goes to another
/// worker (checked at each health ping, so it moves within one more ping interval).
pub(crate) const DELIVERY_LEASE: Duration = Duration::from_secs(60);

/// How often an idle stream carries a health ping (the Python SDK reconnects after 120 s of
/// silence).
pub(crate) const HEALTH_PING_EVERY: Duration = Duration::from_secs(30);

/// How long a peer's summary of its workers counts without a refresh (peers send theirs on
/// every change and every [`super::peers::PUBLISH_EVERY`]).
pub(crate) const PEER_SUMMARY_TTL: Duration = Duration::from_secs(15);

/// How soon an item that no worker anywhere took looks again (besides every change),
/// doubling up to [`REMOTE_RETRY_MAX`].
const REMOTE_RETRY: Duration = Duration::from_secs(1);
const REMOTE_RETRY_MAX: Duration = Duration::from_secs(30);

/// A completion that fails the work item with `error_type` and `message` (an item that cannot
/// be carried between nodes): the activity fails, the orchestration fails, the batch's
/// operations fail.
pub(crate) fn failed_completion(kind: ItemKind, error_type: &str, message: &str) -> Completion {
    let failure = Some(proto::TaskFailureDetails {
        error_type: error_type.to_string(),
        error_message: message.to_string(),
        is_non_retriable: true,
        ..Default::default()
    });
    match kind {
        ItemKind::Activity => Completion::Activity(proto::ActivityResponse {
            failure_details: failure,
            ..Default::default()
        }),
        ItemKind::Orchestration => {
            use proto::orchestrator_action::OrchestratorActionType as A;
            Completion::Orchestrator(proto::OrchestratorResponse {
                actions: vec![proto::OrchestratorAction {
                    id: 0,
                    orchestrator_action_type: Some(A::CompleteOrchestration(
                        proto::CompleteOrchestrationAction {
                            orchestration_status: proto::OrchestrationStatus::Failed as i32,
                            failure_details: failure,
                            ..Default::default()
                        },
                    )),
                }],
                ..Default::default()
            })
        }
        ItemKind::Entity => Completion::Entity(proto::EntityBatchResult {
            failure_details: failure,
            ..Default::default()
        }),
    }
}

/// What a work item asks for, for routing by a worker's filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ItemKind {
    /// An orchestrator episode.
    Orchestration,
    /// An activity attempt.
    Activity,
    /// An entity batch.
    Entity,
}

/// A worker's answer to a work item.
#[derive(Debug)]
pub(crate) enum Completion {
    /// `CompleteOrchestratorTask`.
    Orchestrator(proto::OrchestratorResponse),
    /// `CompleteActivityTask`.
    Activity(proto::ActivityResponse),
    /// `CompleteEntityTask`.
    Entity(proto::EntityBatchResult),
}

impl Completion {
    fn kind(&self) -> ItemKind {
        match self {
            Self::Orchestrator(_) => ItemKind::Orchestration,
            Self::Activity(_) => ItemKind::Activity,
            Self::Entity(_) => ItemKind::Entity,
        }
    }
}

/// The hub is closed (the node is stopping): no worker will complete the item.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("the node is stopping: no gRPC worker will take the work item")]
pub(crate) struct HubClosed;

/// Which functions a worker serves (`GetWorkItemsRequest.workItemFilters`); no filter at all
/// means every function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Filters {
    any: bool,
    orchestrations: Vec<String>,
    activities: Vec<String>,
    entities: Vec<String>,
}

impl Filters {
    fn of(f: Option<proto::WorkItemFilters>) -> Self {
        match f {
            None => Self {
                any: true,
                ..Self::default()
            },
            Some(f)
                if f.orchestrations.is_empty()
                    && f.activities.is_empty()
                    && f.entities.is_empty() =>
            {
                Self {
                    any: true,
                    ..Self::default()
                }
            }
            Some(f) => Self {
                any: false,
                orchestrations: f.orchestrations.into_iter().map(|o| o.name).collect(),
                activities: f.activities.into_iter().map(|a| a.name).collect(),
                entities: f.entities.into_iter().map(|e| e.name).collect(),
            },
        }
    }

    fn accepts(&self, kind: ItemKind, name: &str) -> bool {
        if self.any {
            return true;
        }
        match kind {
            ItemKind::Orchestration => self.orchestrations.iter().any(|n| n == name),
            ItemKind::Activity => self.activities.iter().any(|n| n == name),
            ItemKind::Entity => self.entities.iter().any(|n| n.eq_ignore_ascii_case(name)),
        }
    }
}

type ItemSender = mpsc::UnboundedSender<Result<proto::WorkItem, Status>>;

struct Worker {
    tx: ItemSender,
    filters: Filters,
}

struct Pending {
    kind: ItemKind,
    name: String,
    request: proto::work_item::Request,
    /// How many times it was handed out; the current delivery's token ends with it.
    delivery: u64,
    /// The worker holding it, if any.
    worker: Option<u64>,
    /// When the current delivery was handed out.
    since: tokio::time::Instant,
    /// Deliveries that the lease moved on while their worker still held them: the same
    /// request, so their completion is as good as the current one's (the first one wins).
    outlived: Vec<u64>,
    /// Handed back ([`Unserved::NoWorker`]) instead of queued when no worker here takes it
    /// (an item that other nodes' workers may take instead).
    give_back: bool,
    reply: oneshot::Sender<Result<Completion, Unserved>>,
}

/// Why a work item came back without a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unserved {
    /// The hub is closed (the node is stopping).
    Closed,
    /// No worker of this node serves the name (any more).
    NoWorker,
    /// A peer's item was not completed within the wait it came with (it may have run).
    TimedOut,
}

/// The token of delivery `delivery` of item `item` of the hub `nonce`.
fn token_of(nonce: u64, item: u64, delivery: u64) -> String {
    format!("perdure-{nonce:x}-{item}-{delivery}")
}

/// The item and delivery a token names (`None` for a token this hub did not make: another
/// process's, one from before a restart, garbage).
fn parse_token(nonce: u64, token: &str) -> Option<(u64, u64)> {
    let rest = token.strip_prefix("perdure-")?;
    let (n, rest) = rest.split_once('-')?;
    if u64::from_str_radix(n, 16).ok()? != nonce {
        return None;
    }
    let (item, delivery) = rest.split_once('-')?;
    Some((item.parse().ok()?, delivery.parse().ok()?))
}

#[derive(Default)]
struct State {
    /// Tells this hub's tokens from those of an earlier process (a restart counts items
    /// from 0 again).
    nonce: u64,
    closed: bool,
    workers: BTreeMap<u64, Worker>,
    next_worker: u64,
    /// The next worker to try first (round robin).
    cursor: u64,
    /// Work items no worker holds, oldest first.
    backlog: VecDeque<u64>,
    pending: BTreeMap<u64, Pending>,
    /// The names some work item waited for with no worker serving them (warned once).
    warned: std::collections::BTreeSet<(u8, String)>,
    /// What other nodes' workers serve, as they last said, and when they said it.
    peers: BTreeMap<String, (Filters, usize, tokio::time::Instant)>,
    /// Rotates the peers a forwarded item tries first.
    peer_cursor: usize,
}

impl State {
    /// Hands item `id` to a worker other than `except` that accepts it, round robin, under a
    /// new token (a completion under an earlier token of the same item is refused from then
    /// on); false when no worker takes it.
    fn assign(&mut self, id: u64, except: Option<u64>) -> bool {
        let Some(p) = self.pending.get(&id) else {
            return true;
        };
        let (kind, name) = (p.kind, p.name.clone());
        let workers: Vec<u64> = self
            .workers
            .range(self.cursor..)
            .chain(self.workers.range(..self.cursor))
            .filter(|(w, worker)| Some(**w) != except && worker.filters.accepts(kind, &name))
            .map(|(w, _)| *w)
            .collect();
        for w in workers {
            let Some(p) = self.pending.get_mut(&id) else {
                return true;
            };
            p.delivery = p.delivery.saturating_add(1);
            let item = proto::WorkItem {
                request: Some(p.request.clone()),
                completion_token: token_of(self.nonce, id, p.delivery),
            };
            let sent = self
                .workers
                .get(&w)
                .is_some_and(|worker| worker.tx.send(Ok(item)).is_ok());
            if sent {
                p.worker = Some(w);
                p.since = tokio::time::Instant::now();
                self.cursor = w.saturating_add(1);
                return true;
            }
            // Its stream is gone: the disconnect hands back what it held.
        }
        if let Some(p) = self.pending.get_mut(&id) {
            p.worker = None;
        }
        false
    }

    fn assign_or_queue(&mut self, id: u64) {
        if !self.assign(id, None) {
            if self.pending.get(&id).is_some_and(|p| p.give_back) {
                if let Some(p) = self.pending.remove(&id) {
                    let _ = p.reply.send(Err(Unserved::NoWorker));
                }
                return;
            }
            if let Some(p) = self.pending.get(&id)
                && self.warned.insert((p.kind as u8, p.name.clone()))
            {
                tracing::warn!(
                    kind = ?p.kind,
                    name = %p.name,
                    "no connected gRPC worker serves this name and the node's registry does not \
                     have it: its work waits until a worker that serves it connects"
                );
            }
            self.backlog.push_back(id);
        }
    }

    /// Offers the backlog again (a worker connected).
    fn drain_backlog(&mut self) {
        let waiting: Vec<u64> = self.backlog.drain(..).collect();
        for id in waiting {
            self.assign_or_queue(id);
        }
    }

    /// The item a token names, if that token is its current delivery's and the kinds match.
    fn current(&self, token: &str, kind: ItemKind) -> Result<u64, Status> {
        let (id, delivery) = parse_token(self.nonce, token).ok_or_else(|| stale(token))?;
        match self.pending.get(&id) {
            Some(p) if p.outlived.contains(&delivery) && p.kind == kind => Ok(id),
            Some(p) if p.delivery != delivery || p.worker.is_none() => Err(stale(token)),
            Some(p) if p.kind != kind => Err(Status::invalid_argument(format!(
                "completion token '{token}' belongs to a work item of another kind"
            ))),
            Some(_) => Ok(id),
            None => Err(stale(token)),
        }
    }
}

/// The connected workers and the work items they hold.
#[derive(Default)]
pub struct WorkerHub {
    state: Mutex<State>,
    next_item: AtomicU64,
    /// Woken when what the workers here or on peers serve changes, and at close.
    changed: Arc<tokio::sync::Notify>,
    /// Other nodes' workers, in a cluster (`super::peers`).
    remote: std::sync::OnceLock<Arc<dyn RemoteWorkers>>,
    /// Work items completed by another node's workers for this node.
    forwarded: AtomicU64,
    /// Work items of other nodes completed by this node's workers.
    for_peers: AtomicU64,
}

impl std::fmt::Debug for WorkerHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("WorkerHub")
            .field("workers", &st.workers.len())
            .field("pending", &st.pending.len())
            .field("backlog", &st.backlog.len())
            .finish()
    }
}

impl WorkerHub {
    /// An empty hub whose tokens differ from any earlier process's (they carry the start
    /// time in nanoseconds and the process id).
    pub fn new() -> Arc<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // The low 64 bits of the time, mixed with the process id.
        let nonce = (nanos as u64) ^ (u64::from(std::process::id()) << 48);
        Self::with_nonce(nonce)
    }

    /// An empty hub with a given token nonce (for tests and simulations).
    pub fn with_nonce(nonce: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                nonce,
                ..State::default()
            }),
            ..Self::default()
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step; a panic elsewhere does not poison it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many workers are connected.
    pub fn workers(&self) -> usize {
        self.lock().workers.len()
    }

    /// Whether a connected worker serves `name` (a worker without filters serves every
    /// name).
    pub(crate) fn serves(&self, kind: ItemKind, name: &str) -> bool {
        self.lock()
            .workers
            .values()
            .any(|w| w.filters.accepts(kind, name))
    }

    /// How many work items wait for a completion (held by a worker or not).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Stops handing out work: every waiting dispatch ends with [`HubClosed`], every stream
    /// ends.
    pub fn close(&self) {
        {
            let mut st = self.lock();
            st.closed = true;
            st.workers.clear();
            st.backlog.clear();
            st.pending.clear();
            st.peers.clear();
        }
        self.changed.notify_waiters();
    }

    /// Notified when what the workers here or on peers serve changes, and at close.
    pub(crate) fn change_signal(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// What tells this hub's process from earlier ones (its tokens carry it too).
    pub(crate) fn nonce(&self) -> u64 {
        self.lock().nonce
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Sends the work items no worker here serves to the workers of other nodes through
    /// `remote` (set once, when the node joins a cluster).
    pub(crate) fn set_remote(&self, remote: Arc<dyn RemoteWorkers>) {
        let _ = self.remote.set(remote);
    }

    /// What the workers connected here serve, as `node`'s summary for its peers.
    pub(crate) fn summary(&self, node: &str) -> WorkersSummary {
        let st = self.lock();
        let mut sum = WorkersSummary {
            node: node.to_string(),
            workers: u32::try_from(st.workers.len()).unwrap_or(u32::MAX),
            ..WorkersSummary::default()
        };
        let (mut o, mut a, mut e) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for w in st.workers.values() {
            sum.any |= w.filters.any;
            o.extend(w.filters.orchestrations.iter().cloned());
            a.extend(w.filters.activities.iter().cloned());
            e.extend(w.filters.entities.iter().cloned());
        }
        sum.orchestrations = o.into_iter().collect();
        sum.activities = a.into_iter().collect();
        sum.entities = e.into_iter().collect();
        sum
    }

    /// A peer's summary of its workers (replacing the one before); a peer without workers
    /// is forgotten.
    pub(crate) fn set_peer(&self, sum: WorkersSummary) {
        let changed = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            if sum.workers == 0 {
                st.peers.remove(&sum.node).is_some()
            } else {
                let filters = Filters {
                    any: sum.any,
                    orchestrations: sum.orchestrations,
                    activities: sum.activities,
                    entities: sum.entities,
                };
                let n = usize::try_from(sum.workers).unwrap_or(usize::MAX);
                let now = tokio::time::Instant::now();
                // A refresh of the same summary only renews it: nothing to wake.
                let same = st.peers.get(&sum.node).is_some_and(|(f, c, at)| {
                    *c == n && *f == filters && now.duration_since(*at) < PEER_SUMMARY_TTL
                });
                st.peers.insert(sum.node, (filters, n, now));
                !same
            }
        };
        if changed {
            self.changed.notify_waiters();
        }
    }

    /// Forgets the summaries of `gone` peers (their links closed).
    pub(crate) fn forget_peers(&self, gone: &BTreeSet<String>) {
        let forgot = {
            let mut st = self.lock();
            let before = st.peers.len();
            st.peers.retain(|n, _| !gone.contains(n));
            before != st.peers.len()
        };
        if forgot {
            self.changed.notify_waiters();
        }
    }

    /// Resolves once the hub is closed.
    async fn until_closed(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_closed() {
                return;
            }
            changed.await;
        }
    }

    /// The peers whose workers serve `name`, by their last fresh summary, rotated so that
    /// successive items start with different peers.
    fn peers_serving(&self, kind: ItemKind, name: &str) -> Vec<String> {
        let mut st = self.lock();
        let now = tokio::time::Instant::now();
        let mut nodes: Vec<String> = st
            .peers
            .iter()
            .filter(|(_, (f, _, at))| {
                now.duration_since(*at) < PEER_SUMMARY_TTL && f.accepts(kind, name)
            })
            .map(|(n, _)| n.clone())
            .collect();
        if !nodes.is_empty() {
            let k = st.peer_cursor % nodes.len();
            nodes.rotate_left(k);
            st.peer_cursor = st.peer_cursor.wrapping_add(1);
        }
        nodes
    }

    /// Whether a worker here or on a peer serves `name`.
    pub(crate) fn serves_anywhere(&self, kind: ItemKind, name: &str) -> bool {
        if self.serves(kind, name) {
            return true;
        }
        let now = tokio::time::Instant::now();
        self.lock()
            .peers
            .values()
            .any(|(f, _, at)| now.duration_since(*at) < PEER_SUMMARY_TTL && f.accepts(kind, name))
    }

    /// Work items completed by other nodes' workers for this node, and items of other nodes
    /// completed by this node's workers.
    pub fn forwarded(&self) -> (u64, u64) {
        (
            self.forwarded.load(Ordering::Relaxed),
            self.for_peers.load(Ordering::Relaxed),
        )
    }

    /// The hub's metrics in the Prometheus text format (appended to the node's `/metrics`).
    pub fn render_prometheus(&self) -> String {
        let (workers, pending) = {
            let st = self.lock();
            (st.workers.len(), st.pending.len())
        };
        let (out, served) = self.forwarded();
        format!(
            "# HELP perdure_grpc_workers gRPC workers connected to this node.\n\
             # TYPE perdure_grpc_workers gauge\n\
             perdure_grpc_workers {workers}\n\
             # HELP perdure_grpc_work_items_pending Work items waiting for a worker's completion on this node.\n\
             # TYPE perdure_grpc_work_items_pending gauge\n\
             perdure_grpc_work_items_pending {pending}\n\
             # HELP perdure_grpc_work_items_forwarded_total Work items of this node completed by the workers of another node.\n\
             # TYPE perdure_grpc_work_items_forwarded_total counter\n\
             perdure_grpc_work_items_forwarded_total {out}\n\
             # HELP perdure_grpc_work_items_for_peers_total Work items of other nodes completed by this node's workers.\n\
             # TYPE perdure_grpc_work_items_for_peers_total counter\n\
             perdure_grpc_work_items_for_peers_total {served}\n"
        )
    }

    /// Runs a peer's work item on the workers here, for at most `wait`; `NoWorker` when none
    /// serves it (or the last one that did left).
    pub(crate) async fn run_for_peer(
        self: &Arc<Self>,
        kind: ItemKind,
        name: &str,
        request: proto::work_item::Request,
        wait: Duration,
    ) -> Result<Completion, Unserved> {
        if !self.serves(kind, name) {
            return Err(Unserved::NoWorker);
        }
        match tokio::time::timeout(wait, self.dispatch_local(kind, name, request, true)).await {
            Ok(Ok(c)) => {
                self.for_peers.fetch_add(1, Ordering::Relaxed);
                Ok(c)
            }
            Ok(Err(u)) => Err(u),
            Err(_) => Err(Unserved::TimedOut),
        }
    }

    /// Hands `request` to a worker that serves `name` and waits for its completion. The item
    /// goes back to the others when its worker disconnects or abandons it. Dropping the
    /// future withdraws the item (a later completion is refused).
    ///
    /// In a cluster ([`WorkerHub::set_remote`]) an item that no worker here serves goes to a
    /// peer whose workers serve it; with none anywhere it waits until one connects, here or
    /// on a peer.
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        kind: ItemKind,
        name: &str,
        request: proto::work_item::Request,
    ) -> Result<Completion, HubClosed> {
        let Some(remote) = self.remote.get().cloned() else {
            return self
                .dispatch_local(kind, name, request, false)
                .await
                .map_err(|_| HubClosed);
        };
        let mut retry = REMOTE_RETRY;
        let mut warned_failure = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_closed() {
                return Err(HubClosed);
            }
            if self.serves(kind, name) {
                match self.dispatch_local(kind, name, request.clone(), true).await {
                    Ok(c) => return Ok(c),
                    Err(Unserved::Closed) => return Err(HubClosed),
                    // Its workers left: the peers, or a wait.
                    Err(Unserved::NoWorker | Unserved::TimedOut) => {}
                }
            }
            for node in self.peers_serving(kind, name) {
                // A stop does not wait for a peer's worker.
                let outcome = tokio::select! {
                    o = remote.run(&node, kind, name, &request) => o,
                    () = self.until_closed() => return Err(HubClosed),
                };
                match outcome {
                    RemoteOutcome::Done(c) => {
                        self.forwarded.fetch_add(1, Ordering::Relaxed);
                        return Ok(*c);
                    }
                    RemoteOutcome::Final {
                        error_type,
                        message,
                    } => {
                        tracing::warn!(
                            node,
                            name,
                            message,
                            "a work item cannot be run by a peer's workers; it fails"
                        );
                        return Ok(failed_completion(kind, error_type, &message));
                    }
                    RemoteOutcome::NoWorker(why) => {
                        tracing::debug!(
                            node,
                            name,
                            why,
                            "a peer's workers did not take a work item"
                        );
                    }
                    RemoteOutcome::Failed(why) if !warned_failure => {
                        warned_failure = true;
                        tracing::warn!(
                            node,
                            name,
                            why,
                            "a work item sent to a peer's workers came back without a completion; sending it again"
                        );
                    }
                    RemoteOutcome::Failed(why) => {
                        tracing::debug!(
                            node,
                            name,
                            why,
                            "a work item sent to a peer's workers came back without a completion again"
                        );
                    }
                }
            }
            let first = self.lock().warned.insert((kind as u8, name.to_string()));
            if first {
                tracing::warn!(
                    kind = ?kind,
                    name,
                    "no gRPC worker on this node or its peers serves this name: its work \
                     waits until a worker that serves it connects"
                );
            }
            // Woken by any change of the workers here or of a peer's summary; the timer
            // only covers a peer that refused an item its summary still offers.
            tokio::select! {
                () = &mut changed => retry = REMOTE_RETRY,
                () = tokio::time::sleep(retry) => retry = (retry * 2).min(REMOTE_RETRY_MAX),
            }
        }
    }

    /// [`WorkerHub::dispatch`] among the workers of this node only; with `give_back`, an
    /// item no worker here takes comes back as [`Unserved::NoWorker`] instead of waiting.
    async fn dispatch_local(
        self: &Arc<Self>,
        kind: ItemKind,
        name: &str,
        request: proto::work_item::Request,
        give_back: bool,
    ) -> Result<Completion, Unserved> {
        let id = self.next_item.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        {
            let mut st = self.lock();
            if st.closed {
                return Err(Unserved::Closed);
            }
            st.pending.insert(
                id,
                Pending {
                    kind,
                    name: name.to_string(),
                    request,
                    delivery: 0,
                    worker: None,
                    since: tokio::time::Instant::now(),
                    outlived: Vec::new(),
                    give_back,
                    reply,
                },
            );
            st.assign_or_queue(id);
        }
        let _withdraw = Withdraw {
            hub: self.clone(),
            id,
        };
        rx.await.unwrap_or(Err(Unserved::Closed))
    }

    /// A new worker's stream; the backlog is offered to it at once.
    pub(crate) fn connect(
        self: &Arc<Self>,
        filters: Option<proto::WorkItemFilters>,
    ) -> Result<WorkItemStream, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        // Only the hub holds the sender: the stream ends when the hub lets the worker go.
        let id = {
            let mut st = self.lock();
            if st.closed {
                return Err(Status::unavailable("the node is stopping"));
            }
            let id = st.next_worker;
            st.next_worker = st.next_worker.saturating_add(1);
            st.workers.insert(
                id,
                Worker {
                    tx,
                    filters: Filters::of(filters),
                },
            );
            st.drain_backlog();
            id
        };
        self.changed.notify_waiters();
        tracing::info!(worker = id, "gRPC worker connected");
        let hub = Arc::downgrade(self);
        let pings = tokio::spawn(async move {
            let mut every = tokio::time::interval(HEALTH_PING_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(hub) = hub.upgrade() else { break };
                if !hub.ping(id) {
                    break;
                }
                hub.expire(id);
            }
        });
        Ok(WorkItemStream {
            hub: self.clone(),
            id,
            rx,
            pings,
        })
    }

    /// Sends a health ping to worker `id`; false when it is gone.
    fn ping(&self, id: u64) -> bool {
        let st = self.lock();
        st.workers.get(&id).is_some_and(|w| {
            w.tx.send(Ok(proto::WorkItem {
                request: Some(proto::work_item::Request::HealthPing(proto::HealthPing {})),
                completion_token: String::new(),
            }))
            .is_ok()
        })
    }

    /// Hands the orchestrator and entity items that `worker` has held for longer than
    /// [`DELIVERY_LEASE`] to another worker as well, under new tokens; whichever completes
    /// first wins (the same request), the other is refused. Without another worker that takes
    /// them they stay where they are. Activities are left alone: the runtime's activity
    /// lease already runs a slow one again.
    fn expire(&self, worker: u64) {
        let mut st = self.lock();
        let now = tokio::time::Instant::now();
        let late: Vec<u64> = st
            .pending
            .iter()
            .filter(|(_, p)| {
                p.worker == Some(worker)
                    && p.kind != ItemKind::Activity
                    && now.duration_since(p.since) >= DELIVERY_LEASE
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            // Only when another worker takes it: `assign` withdraws the delivery even when
            // nobody takes the item, and the holder must keep it then.
            let Some(p) = st.pending.get(&id) else {
                continue;
            };
            let (kind, name) = (p.kind, p.name.clone());
            let others = st
                .workers
                .iter()
                .any(|(w, wk)| *w != worker && wk.filters.accepts(kind, &name));
            if !others {
                continue;
            }
            let held = st.pending.get(&id).map(|p| p.delivery);
            if st.assign(id, Some(worker)) {
                if let (Some(p), Some(d)) = (st.pending.get_mut(&id), held) {
                    p.outlived.push(d);
                }
                tracing::warn!(
                    worker,
                    item = id,
                    "a gRPC worker held a work item past its lease; handed to another worker"
                );
            } else {
                // The others' streams were gone: it waits for the next worker (or goes back
                // to the peer that sent it).
                st.assign_or_queue(id);
            }
        }
    }

    fn disconnect(&self, worker: u64) {
        let mut st = self.lock();
        if st.workers.remove(&worker).is_none() {
            return;
        }
        let held: Vec<u64> = st
            .pending
            .iter()
            .filter(|(_, p)| p.worker == Some(worker))
            .map(|(id, _)| *id)
            .collect();
        tracing::info!(worker, handed_back = held.len(), "gRPC worker disconnected");
        for id in held {
            if let Some(p) = st.pending.get_mut(&id) {
                p.worker = None;
            }
            st.assign_or_queue(id);
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Takes a worker's completion: the work item's waiter gets it. Refused (and without
    /// effect) unless the token is the current delivery of a waiting item of that kind.
    pub(crate) fn complete(&self, token: &str, completion: Completion) -> Result<(), Status> {
        let mut st = self.lock();
        let id = st.current(token, completion.kind())?;
        let Some(p) = st.pending.remove(&id) else {
            return Err(stale(token));
        };
        drop(st);
        // The waiter may have gone meanwhile (its run was cancelled): nothing to do then.
        let _ = p.reply.send(Ok(completion));
        Ok(())
    }

    /// A worker gives an item back: it goes to another worker under a new token, or, when
    /// no other worker takes it, back to the same one after [`ABANDON_DELAY`] (an SDK that
    /// abandons what it cannot run would otherwise get it back at once, in a loop).
    pub(crate) fn abandon(self: &Arc<Self>, token: &str, kind: ItemKind) -> Result<(), Status> {
        let mut st = self.lock();
        let id = st.current(token, kind)?;
        let from = st.pending.get_mut(&id).and_then(|p| p.worker.take());
        tracing::info!(token, worker = ?from, "gRPC work item abandoned; handed out again");
        // Another worker first: the round robin starts after the one that gave it back.
        if let Some(w) = from {
            st.cursor = w.saturating_add(1);
        }
        if st.assign(id, from) {
            return Ok(());
        }
        // Only the same worker would take it: later. Its current delivery is withdrawn
        // meanwhile (a completion under the abandoned token stays refused).
        if let Some(p) = st.pending.get_mut(&id) {
            p.worker = None;
            p.delivery = p.delivery.saturating_add(1);
        }
        drop(st);
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(ABANDON_DELAY).await;
            if let Some(hub) = hub.upgrade() {
                let mut st = hub.lock();
                if st.pending.get(&id).is_some_and(|p| p.worker.is_none()) {
                    st.assign_or_queue(id);
                }
            }
        });
        Ok(())
    }

    fn withdraw(&self, id: u64) {
        let mut st = self.lock();
        if st.pending.remove(&id).is_some() {
            st.backlog.retain(|t| *t != id);
        }
    }
}

/// How long a start or signal of a name that nothing serves yet waits for a worker that
/// serves it: an SDK's `worker.start()` returns before the worker's stream is open, and the
/// SDKs' samples start an orchestration right after.
pub(crate) const WORKER_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `call`; with workers, a call refused because nothing serves `name` yet is made again
/// as soon as a worker serves it, for up to [`WORKER_GRACE`], and then refused as before.
pub(crate) async fn when_served<T, F, Fut>(
    workers: Option<&WorkerHub>,
    kind: ItemKind,
    name: &str,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = perdure_core::management::ManagementResult<T>>,
{
    use perdure_core::management::ManagementError;
    let deadline = tokio::time::Instant::now() + WORKER_GRACE;
    loop {
        let r = call().await;
        let (Err(ManagementError::UnknownName { .. }), Some(hub)) = (&r, workers) else {
            return r.map_err(super::error::status);
        };
        if tokio::time::Instant::now() >= deadline {
            return r.map_err(super::error::status);
        }
        // At least a pause between calls: this node may count a peer's worker that the
        // instance's owner has not heard of yet.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        while !hub.serves_anywhere(kind, name) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

fn stale(token: &str) -> Status {
    Status::not_found(format!(
        "no work item waits for completion token '{token}' (already completed, handed to \
         another worker, withdrawn, or from before a restart): the completion was ignored"
    ))
}

/// Withdraws a dispatched item when its waiter goes away.
struct Withdraw {
    hub: Arc<WorkerHub>,
    id: u64,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.hub.withdraw(self.id);
    }
}

/// The `GetWorkItems` response stream of one worker; dropping it (the worker disconnected)
/// hands its items to the others.
pub(crate) struct WorkItemStream {
    hub: Arc<WorkerHub>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Result<proto::WorkItem, Status>>,
    pings: tokio::task::JoinHandle<()>,
}

impl futures::Stream for WorkItemStream {
    type Item = Result<proto::WorkItem, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for WorkItemStream {
    fn drop(&mut self) {
        self.pings.abort();
        self.hub.disconnect(self.id);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures::StreamExt;

    fn activity(name: &str) -> proto::work_item::Request {
        proto::work_item::Request::ActivityRequest(proto::ActivityRequest {
            name: name.into(),
            ..Default::default()
        })
    }

    /// The token of the next work item `s` gets (health pings skipped).
    pub(crate) async fn next_token(s: &mut WorkItemStream) -> String {
        loop {
            let item = s.next().await.expect("stream open").expect("item");
            if !matches!(item.request, Some(proto::work_item::Request::HealthPing(_))) {
                return item.completion_token;
            }
        }
    }

    fn done(token: &str) -> Completion {
        let _ = token;
        Completion::Activity(proto::ActivityResponse::default())
    }

    #[tokio::test]
    async fn an_item_waits_for_a_worker_and_is_completed_once() {
        let hub = WorkerHub::new();
        let h = hub.clone();
        let waiter =
            tokio::spawn(
                async move { h.dispatch(ItemKind::Activity, "Say", activity("Say")).await },
            );
        while hub.pending() == 0 {
            tokio::task::yield_now().await;
        }
        let mut w = hub.connect(None).expect("connect");
        let token = next_token(&mut w).await;
        hub.complete(&token, done(&token))
            .expect("first completion");
        let err = hub
            .complete(&token, done(&token))
            .expect_err("second completion");
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(matches!(
            waiter.await.expect("join"),
            Ok(Completion::Activity(_))
        ));
        assert_eq!(hub.pending(), 0);
    }

    #[tokio::test]
    async fn a_disconnected_workers_item_goes_to_another() {
        let hub = WorkerHub::new();
        let mut a = hub.connect(None).expect("a");
        let h = hub.clone();
        let waiter =
            tokio::spawn(
                async move { h.dispatch(ItemKind::Activity, "Say", activity("Say")).await },
            );
        let token = next_token(&mut a).await;
        let mut b = hub.connect(None).expect("b");
        drop(a);
        let again = next_token(&mut b).await;
        assert_ne!(token, again, "a new delivery, a new token");
        let late = hub
            .complete(&token, done(&token))
            .expect_err("the first worker's token");
        assert_eq!(late.code(), tonic::Code::NotFound);
        hub.complete(&again, done(&again)).expect("complete");
        assert!(waiter.await.expect("join").is_ok());
    }

    #[tokio::test]
    async fn an_abandoned_item_is_handed_out_again_and_kinds_are_checked() {
        let hub = WorkerHub::new();
        let mut a = hub.connect(None).expect("a");
        let h = hub.clone();
        let waiter =
            tokio::spawn(
                async move { h.dispatch(ItemKind::Activity, "Say", activity("Say")).await },
            );
        let token = next_token(&mut a).await;
        let wrong = hub
            .abandon(&token, ItemKind::Orchestration)
            .expect_err("kind");
        assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
        hub.abandon(&token, ItemKind::Activity).expect("abandon");
        let again = next_token(&mut a).await;
        assert_ne!(token, again);
        let garbage = hub.complete("not-a-token", done("")).expect_err("garbage");
        assert_eq!(garbage.code(), tonic::Code::NotFound);
        let wrong = hub
            .complete(
                &again,
                Completion::Orchestrator(proto::OrchestratorResponse::default()),
            )
            .expect_err("kind");
        assert_eq!(wrong.code(), tonic::Code::InvalidArgument);
        hub.complete(&again, done(&again)).expect("complete");
        assert!(waiter.await.expect("join").is_ok());
    }

    /// Dispatches an orchestrator item named "O" in a task of its own.
    fn dispatch_orchestration(
        hub: &Arc<WorkerHub>,
    ) -> tokio::task::JoinHandle<Result<Completion, HubClosed>> {
        let h = hub.clone();
        tokio::spawn(async move {
            h.dispatch(
                ItemKind::Orchestration,
                "O",
                proto::work_item::Request::OrchestratorRequest(Default::default()),
            )
            .await
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_held_past_its_lease_goes_to_another_worker() {
        let hub = WorkerHub::new();
        let mut a = hub.connect(None).expect("a");
        let waiter = dispatch_orchestration(&hub);
        let held = next_token(&mut a).await;
        let mut b = hub.connect(None).expect("b");
        // Time passes (paused clock): past the lease, at a health ping, the item moves.
        let moved = tokio::time::timeout(DELIVERY_LEASE * 3, next_token(&mut b))
            .await
            .expect("moved within the lease and two ping intervals");
        assert_ne!(held, moved);
        // The slow holder still finishes first: its work counts (the same request); the
        // new holder's completion then comes too late.
        hub.complete(&held, Completion::Orchestrator(Default::default()))
            .expect("the slow holder's completion is taken");
        let late = hub
            .complete(&moved, Completion::Orchestrator(Default::default()))
            .expect_err("completed already");
        assert_eq!(late.code(), tonic::Code::NotFound);
        assert!(waiter.await.expect("join").is_ok());
        drop(a);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_worker_keeps_an_item_past_its_lease() {
        let hub = WorkerHub::new();
        let mut a = hub.connect(None).expect("a");
        let waiter = dispatch_orchestration(&hub);
        let held = next_token(&mut a).await;
        // Past the lease and several pings (paused clock), with no other worker.
        tokio::time::sleep(DELIVERY_LEASE * 3).await;
        hub.complete(&held, Completion::Orchestrator(Default::default()))
            .expect("the only worker's completion is still current");
        assert!(waiter.await.expect("join").is_ok());
    }

    #[tokio::test]
    async fn a_withdrawn_item_refuses_its_completion_and_filters_route() {
        let hub = WorkerHub::new();
        let mut only_b = hub
            .connect(Some(proto::WorkItemFilters {
                activities: vec![proto::ActivityFilter {
                    name: "B".into(),
                    versions: vec![],
                }],
                ..Default::default()
            }))
            .expect("filtered");
        let h = hub.clone();
        let a =
            tokio::spawn(async move { h.dispatch(ItemKind::Activity, "A", activity("A")).await });
        let h = hub.clone();
        let _b =
            tokio::spawn(async move { h.dispatch(ItemKind::Activity, "B", activity("B")).await });
        let token_b = next_token(&mut only_b).await;
        while hub.pending() < 2 {
            tokio::task::yield_now().await;
        }
        // "A" waits in the backlog: nobody serves it, and no token of it was handed out.
        assert_eq!(hub.lock().backlog.len(), 1);
        a.abort();
        let _ = a.await;
        assert_eq!(hub.pending(), 1);
        assert_eq!(hub.lock().backlog.len(), 0);
        hub.close();
        let err = hub.complete(&token_b, done(&token_b)).expect_err("closed");
        assert_eq!(err.code(), tonic::Code::NotFound);
    }
}
