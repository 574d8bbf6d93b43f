//! Work items for the gRPC workers of other nodes (`docs/grpc.md`, "In a cluster").
//!
//! A node runs the episodes, activities and entity batches of the partitions it owns. When
//! no worker connected to it serves a name, it sends the work item to a peer whose workers
//! do (`PeerRequest::WorkItem`), which hands it to one of them and answers with the worker's
//! completion; the owner then commits it as if its own worker had answered. Completions
//! therefore always reach the partition's owner, whichever node the worker is connected to.
//!
//! Each node tells its peers what its workers serve (`PeerCast::Workers`) whenever that
//! changes, when a peer links, and every [`PUBLISH_EVERY`]; a summary not refreshed within
//! [`super::workers::PEER_SUMMARY_TTL`], or of a peer whose link is gone, no longer counts.
//! Summaries only route: a peer whose workers left answers `NoWorker` and the item goes
//! elsewhere or waits. Nothing is kept only in memory: the owner keeps the messages a work
//! item comes from in the store until its results commit, as for its own workers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use prost::Message;
use tokio::sync::oneshot;

use super::proto;
use super::workers::{Completion, ItemKind, Unserved, WorkerHub};
use crate::cluster::transport::wire::{
    PeerCast, PeerReply, PeerRequest, WorkItemRequest, WorkersSummary,
};
use crate::cluster::transport::{LinkError, Links, PeerWork, Transport};

/// How often a node repeats its workers' summary to its peers (besides every change).
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_secs(5);

/// How long a peer's workers may take to complete a forwarded work item before the owner
/// sends it again (a lost link fails the call sooner: the transport's pings close it).
pub(crate) const REMOTE_WAIT: Duration = Duration::from_secs(3600);

/// What became of a work item sent to a peer.
#[derive(Debug)]
pub(crate) enum RemoteOutcome {
    /// A worker of the peer completed it.
    Done(Box<Completion>),
    /// No worker of the peer serves it (nothing was done).
    NoWorker(String),
    /// The call failed or the answer was not usable: it may or may not have run.
    Failed(String),
    /// The item cannot be run by another node's workers (too large to carry, or its
    /// completion does not decode): sending it again would fail the same way.
    Final {
        /// The failure's type (`WorkItemTooLarge`, `WorkerProtocolError`).
        error_type: &'static str,
        /// What happened.
        message: String,
    },
}

/// The largest work item or completion carried between nodes: the codec's decode limit less
/// room for the envelope (a larger frame would close the link).
pub(crate) const FORWARD_LIMIT: usize = perdure_core::codec::MAX_DECODE_BYTES - 64 * 1024;

/// The seam to other nodes' workers (the cluster links, or a simulation).
pub(crate) trait RemoteWorkers: Send + Sync + 'static {
    /// Sends a work item to `node`'s workers and waits for the outcome.
    fn run(
        &self,
        node: &str,
        kind: ItemKind,
        name: &str,
        request: &proto::work_item::Request,
    ) -> BoxFuture<'static, RemoteOutcome>;
}

fn kind_code(kind: ItemKind) -> u8 {
    match kind {
        ItemKind::Orchestration => 0,
        ItemKind::Activity => 1,
        ItemKind::Entity => 2,
    }
}

fn kind_of(code: u8) -> Option<ItemKind> {
    match code {
        0 => Some(ItemKind::Orchestration),
        1 => Some(ItemKind::Activity),
        2 => Some(ItemKind::Entity),
        _ => None,
    }
}

fn encode_completion(c: &Completion) -> (u8, Vec<u8>) {
    match c {
        Completion::Orchestrator(r) => (0, r.encode_to_vec()),
        Completion::Activity(r) => (1, r.encode_to_vec()),
        Completion::Entity(r) => (2, r.encode_to_vec()),
    }
}

fn decode_completion(kind: u8, bytes: &[u8]) -> Result<Completion, String> {
    let bad = |e: prost::DecodeError| format!("a peer's completion does not decode: {e}");
    match kind {
        0 => proto::OrchestratorResponse::decode(bytes)
            .map(Completion::Orchestrator)
            .map_err(bad),
        1 => proto::ActivityResponse::decode(bytes)
            .map(Completion::Activity)
            .map_err(bad),
        2 => proto::EntityBatchResult::decode(bytes)
            .map(Completion::Entity)
            .map_err(bad),
        k => Err(format!("a peer's completion has an unknown kind {k}")),
    }
}

/// The request a peer's work item carries, checked against its kind.
fn request_of(item: &WorkItemRequest) -> Result<(ItemKind, proto::work_item::Request), String> {
    use proto::work_item::Request as R;
    let kind = kind_of(item.kind).ok_or_else(|| format!("unknown work item kind {}", item.kind))?;
    let decoded = proto::WorkItem::decode(item.item.as_slice())
        .map_err(|e| format!("the work item does not decode: {e}"))?;
    match (kind, decoded.request) {
        (ItemKind::Orchestration, Some(r @ R::OrchestratorRequest(_)))
        | (ItemKind::Activity, Some(r @ R::ActivityRequest(_)))
        | (ItemKind::Entity, Some(r @ R::EntityRequest(_))) => Ok((kind, r)),
        (kind, _) => Err(format!("the work item is not a {kind:?} request")),
    }
}

/// [`RemoteWorkers`] over the cluster links.
struct LinkedWorkers {
    links: Arc<dyn Links>,
    /// This process among the node's restarts.
    incarnation: u64,
    /// Numbers this process's forwarded items (with the node's name and the incarnation,
    /// what a withdrawal names).
    next_id: AtomicU64,
}

/// Casts [`PeerCast::WithdrawWorkItem`] when dropped while armed: the owner stopped waiting
/// for the item (its episode was cancelled, the node stops, the call failed).
struct WithdrawOnDrop {
    links: Arc<dyn Links>,
    node: String,
    origin: String,
    incarnation: u64,
    id: u64,
    armed: bool,
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let cast = PeerCast::WithdrawWorkItem {
                origin: std::mem::take(&mut self.origin),
                incarnation: self.incarnation,
                id: self.id,
            };
            if let Err(e) = self.links.cast(&self.node, &cast) {
                tracing::debug!(node = %self.node, error = %e, "work item withdrawal not sent");
            }
        }
    }
}

impl RemoteWorkers for LinkedWorkers {
    fn run(
        &self,
        node: &str,
        kind: ItemKind,
        name: &str,
        request: &proto::work_item::Request,
    ) -> BoxFuture<'static, RemoteOutcome> {
        let links = self.links.clone();
        let node = node.to_string();
        let item = proto::WorkItem {
            request: Some(request.clone()),
            completion_token: String::new(),
        }
        .encode_to_vec();
        if item.len().saturating_add(name.len()) > FORWARD_LIMIT {
            let why = format!(
                "the work item is {} bytes, over the {FORWARD_LIMIT} bytes that can be sent to \
                 another node's workers (connect a worker to the node that owns the instance)",
                item.len()
            );
            return Box::pin(std::future::ready(RemoteOutcome::Final {
                error_type: "WorkItemTooLarge",
                message: why,
            }));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let origin = links.local_node().to_string();
        let incarnation = self.incarnation;
        let req = PeerRequest::WorkItem(WorkItemRequest {
            origin: origin.clone(),
            incarnation,
            id,
            kind: kind_code(kind),
            name: name.to_string(),
            item,
            wait_ms: u64::try_from(REMOTE_WAIT.as_millis()).unwrap_or(u64::MAX),
        });
        Box::pin(async move {
            let mut guard = WithdrawOnDrop {
                links: links.clone(),
                node: node.clone(),
                origin,
                incarnation,
                id,
                armed: true,
            };
            // The peer gives up a little before the caller does, so its answer arrives.
            let timeout = REMOTE_WAIT + Duration::from_secs(30);
            let reply = links.call(&node, &req, timeout).await;
            // An answer means the peer let the item go; a failed call may have left it there.
            guard.armed = reply.is_err();
            match reply {
                Ok(PeerReply::WorkItemDone { kind, completion }) => {
                    match decode_completion(kind, &completion) {
                        Ok(c) => RemoteOutcome::Done(Box::new(c)),
                        Err(e) => RemoteOutcome::Final {
                            error_type: "WorkerProtocolError",
                            message: e,
                        },
                    }
                }
                Ok(PeerReply::NoWorker(why)) => RemoteOutcome::NoWorker(why),
                Ok(PeerReply::NotReady) => RemoteOutcome::NoWorker("the peer is not ready".into()),
                Ok(PeerReply::WorkItemUnfinished(why)) => RemoteOutcome::Failed(why),
                Ok(PeerReply::WorkItemFailed(why)) => RemoteOutcome::Final {
                    error_type: "WorkItemTooLarge",
                    message: format!("node {node} could not run the work item: {why}"),
                },
                // A peer of another build (unsupported): asked again, with back-off.
                Ok(PeerReply::Undecodable(why)) => RemoteOutcome::Failed(format!(
                    "node {node} could not read the work item: {why}"
                )),
                Ok(other) => RemoteOutcome::Failed(format!("node {node} answered {other:?}")),
                Err(e @ LinkError::NoRoute(_)) => RemoteOutcome::NoWorker(e.to_string()),
                Err(e) => RemoteOutcome::Failed(e.to_string()),
            }
        })
    }
}

/// A peer's item: (origin node, its incarnation, item number).
type ItemKey = (String, u64, u64);

/// How long a withdrawal that arrived before its item is remembered, and how many at most.
const EARLY_WITHDRAWAL_KEEP: Duration = Duration::from_secs(60);
const EARLY_WITHDRAWALS_MAX: usize = 10_000;

/// The peers' items being run on this node.
#[derive(Default)]
struct PeerItems {
    /// Each with what cancels its run.
    running: BTreeMap<ItemKey, oneshot::Sender<()>>,
    /// Withdrawals that arrived before their item (a cast may overtake a call: they go to
    /// different routers), with when they arrived.
    early: BTreeMap<ItemKey, tokio::time::Instant>,
}

impl PeerItems {
    /// Cancels the runs of the items of `origins` (their links closed: no withdrawal could
    /// arrive).
    fn cancel_origins(&mut self, origins: &BTreeSet<String>) {
        let keys: Vec<ItemKey> = self
            .running
            .keys()
            .filter(|k| origins.contains(&k.0))
            .cloned()
            .collect();
        for k in keys {
            if let Some(c) = self.running.remove(&k) {
                let _ = c.send(());
            }
        }
    }
}

type SharedItems = Arc<Mutex<PeerItems>>;

fn lock_items(items: &SharedItems) -> std::sync::MutexGuard<'_, PeerItems> {
    items.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`PeerWork`] over a hub: peers' work items go to its workers, peers' summaries into its
/// routing.
struct HubPeerWork {
    hub: Arc<WorkerHub>,
    items: SharedItems,
}

/// Forgets a running peer item when its run ends.
struct Running {
    items: SharedItems,
    key: ItemKey,
}

impl Drop for Running {
    fn drop(&mut self) {
        lock_items(&self.items).running.remove(&self.key);
    }
}

impl PeerWork for HubPeerWork {
    fn run(&self, item: WorkItemRequest) -> BoxFuture<'static, PeerReply> {
        let hub = self.hub.clone();
        let items = self.items.clone();
        Box::pin(async move {
            let (kind, request) = match request_of(&item) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "a peer's work item was refused");
                    return PeerReply::WorkItemFailed(e);
                }
            };
            let key = (item.origin.clone(), item.incarnation, item.id);
            let (cancel, cancelled) = oneshot::channel();
            {
                let mut it = lock_items(&items);
                if it.early.remove(&key).is_some() {
                    return PeerReply::NoWorker("withdrawn by its owner".into());
                }
                it.running.insert(key.clone(), cancel);
            }
            let _running = Running { items, key };
            let wait = Duration::from_millis(item.wait_ms).min(REMOTE_WAIT);
            // A withdrawal drops the item here (its worker's later completion is refused).
            let done = tokio::select! {
                r = hub.run_for_peer(kind, &item.name, request, wait) => r,
                Ok(()) = cancelled => return PeerReply::NoWorker("withdrawn by its owner".into()),
            };
            match done {
                Ok(c) => {
                    let (kind, completion) = encode_completion(&c);
                    if completion.len() > FORWARD_LIMIT {
                        return PeerReply::WorkItemFailed(format!(
                            "the worker's completion is {} bytes, over the {FORWARD_LIMIT} bytes \
                             that can be sent back to the owner's node",
                            completion.len()
                        ));
                    }
                    PeerReply::WorkItemDone { kind, completion }
                }
                Err(Unserved::NoWorker) => PeerReply::NoWorker(format!(
                    "no gRPC worker of this node serves '{}'",
                    item.name
                )),
                Err(Unserved::TimedOut) => {
                    PeerReply::WorkItemUnfinished(format!("no worker completed it within {wait:?}"))
                }
                Err(Unserved::Closed) => PeerReply::NoWorker("this node is stopping".into()),
            }
        })
    }

    fn workers(&self, summary: WorkersSummary) {
        self.hub.set_peer(summary);
    }

    fn withdraw(&self, origin: String, incarnation: u64, id: u64) {
        let key = (origin, incarnation, id);
        let mut it = lock_items(&self.items);
        if let Some(c) = it.running.remove(&key) {
            let _ = c.send(());
            return;
        }
        // Its item has not arrived yet (or is long gone): remembered for a while.
        let now = tokio::time::Instant::now();
        it.early
            .retain(|_, at| now.duration_since(*at) < EARLY_WITHDRAWAL_KEEP);
        if it.early.len() < EARLY_WITHDRAWALS_MAX {
            it.early.insert(key, now);
        }
    }
}

/// Joins `hub` to the cluster of `transport`: work items no worker here serves go to peers'
/// workers, and the peers learn what this node's workers serve. Returns what answers the
/// peers' work items (for `ServePeers::with_work`).
pub fn join_cluster(hub: &Arc<WorkerHub>, transport: &Transport) -> Arc<dyn PeerWork> {
    let (work, items) = linked(hub, Arc::new(transport.clone()));
    spawn_publisher(hub, transport, items);
    work
}

/// Sends `hub`'s unserved work items over `links`; what answers peers' items.
fn linked(hub: &Arc<WorkerHub>, links: Arc<dyn Links>) -> (Arc<dyn PeerWork>, SharedItems) {
    hub.set_remote(Arc::new(LinkedWorkers {
        links,
        incarnation: hub.nonce(),
        next_id: AtomicU64::new(0),
    }));
    let items = SharedItems::default();
    let work = Arc::new(HubPeerWork {
        hub: hub.clone(),
        items: items.clone(),
    });
    (work, items)
}

/// Casts this node's summary to every linked peer on every change of its workers or of the
/// peers, and every [`PUBLISH_EVERY`]; forgets the summaries of peers whose links are gone.
fn spawn_publisher(hub: &Arc<WorkerHub>, transport: &Transport, items: SharedItems) {
    let weak = Arc::downgrade(hub);
    let transport = transport.clone();
    let me = transport.local_node().to_string();
    let mut peers = transport.watch_peers();
    tokio::spawn(async move {
        let mut last: Option<WorkersSummary> = None;
        let mut linked: BTreeSet<String> = BTreeSet::new();
        // Peers that still need the current summary (new, or a cast that failed).
        let mut owed: BTreeSet<String> = BTreeSet::new();
        let mut next_full = tokio::time::Instant::now();
        loop {
            let Some(hub) = weak.upgrade() else { return };
            let signal = hub.change_signal();
            let changed = signal.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now_linked: BTreeSet<String> = peers
                .borrow_and_update()
                .keys()
                .filter(|n| **n != me)
                .cloned()
                .collect();
            // Only peers whose links closed are forgotten: a summary may arrive before this
            // node sees the link it came over.
            let gone: BTreeSet<String> = linked.difference(&now_linked).cloned().collect();
            if !gone.is_empty() {
                hub.forget_peers(&gone);
                // Their withdrawals cannot arrive any more: their items here are dropped.
                lock_items(&items).cancel_origins(&gone);
            }
            owed.extend(now_linked.difference(&linked).cloned());
            owed.retain(|n| now_linked.contains(n));
            linked = now_linked;
            let sum = hub.summary(&me);
            let now = tokio::time::Instant::now();
            if last.as_ref() != Some(&sum) || now >= next_full {
                owed = linked.clone();
                next_full = now + PUBLISH_EVERY;
            }
            owed.retain(|node| {
                match transport.cast(node, &PeerCast::Workers(sum.clone())) {
                    Ok(()) => false,
                    Err(e) => {
                        // A new session's routers appear a moment after it is ready.
                        tracing::debug!(node, error = %e, "workers summary not sent");
                        true
                    }
                }
            });
            last = Some(sum);
            let wake = if owed.is_empty() {
                next_full
            } else {
                now + Duration::from_millis(200)
            };
            drop(hub);
            tokio::select! {
                () = &mut changed => {}
                r = peers.changed() => {
                    if r.is_err() { return }
                    // A peer that came back between two looks gets the summary again too.
                    next_full = tokio::time::Instant::now();
                }
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::transport::wire;
    use crate::grpc::workers::tests::next_token;

    /// Links inside one process; every message goes through the codec both ways.
    #[derive(Default)]
    struct Mesh {
        me: String,
        peers: Mutex<BTreeMap<String, Arc<dyn PeerWork>>>,
    }

    impl Mesh {
        fn peer(&self, node: &str) -> Result<Arc<dyn PeerWork>, LinkError> {
            self.peers
                .lock()
                .unwrap()
                .get(node)
                .cloned()
                .ok_or_else(|| LinkError::NoRoute(node.to_string()))
        }
    }

    impl Links for Mesh {
        fn local_node(&self) -> &str {
            &self.me
        }

        fn call<'a>(
            &'a self,
            node: &'a str,
            request: &'a PeerRequest,
            _timeout: Duration,
        ) -> BoxFuture<'a, Result<PeerReply, LinkError>> {
            Box::pin(async move {
                let w = self.peer(node)?;
                let req: PeerRequest = wire::decode(&wire::encode(request).unwrap()).unwrap();
                let PeerRequest::WorkItem(item) = req else {
                    panic!("only work items here: {req:?}");
                };
                let reply = w.run(item).await;
                Ok(wire::decode(&wire::encode(&reply).unwrap()).unwrap())
            })
        }

        fn cast(&self, node: &str, message: &PeerCast) -> Result<(), LinkError> {
            let w = self.peer(node)?;
            match wire::decode(&wire::encode(message).unwrap()).unwrap() {
                PeerCast::WithdrawWorkItem {
                    origin,
                    incarnation,
                    id,
                } => w.withdraw(origin, incarnation, id),
                PeerCast::Workers(sum) => w.workers(sum),
                PeerCast::Nudge { .. } => {}
            }
            Ok(())
        }
    }

    /// Hub "a" (the owner, linked to "b") and hub "b" (serving a's items).
    fn two_hubs() -> (Arc<WorkerHub>, Arc<WorkerHub>) {
        let (a, b) = (WorkerHub::with_nonce(1), WorkerHub::with_nonce(2));
        let mesh = Arc::new(Mesh {
            me: "a".into(),
            ..Mesh::default()
        });
        let (b_work, _) = linked(&b, Arc::new(Mesh::default()));
        mesh.peers.lock().unwrap().insert("b".into(), b_work);
        let _ = linked(&a, mesh);
        (a, b)
    }

    fn say() -> proto::work_item::Request {
        proto::work_item::Request::ActivityRequest(proto::ActivityRequest {
            name: "Say".into(),
            ..Default::default()
        })
    }

    fn answer(text: &str) -> Completion {
        Completion::Activity(proto::ActivityResponse {
            result: Some(text.to_string()),
            ..Default::default()
        })
    }

    fn result_of(c: Result<Completion, super::super::workers::HubClosed>) -> Option<String> {
        match c {
            Ok(Completion::Activity(r)) => r.result,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_item_goes_to_the_workers_of_the_peer_that_serves_it() {
        let (a, b) = two_hubs();
        let mut w = b.connect(None).expect("worker on b");
        a.set_peer(b.summary("b"));
        assert!(a.serves_anywhere(ItemKind::Activity, "Say"));
        assert!(!a.serves(ItemKind::Activity, "Say"));
        let h = a.clone();
        let waiter =
            tokio::spawn(async move { h.dispatch(ItemKind::Activity, "Say", say()).await });
        let token = next_token(&mut w).await;
        b.complete(&token, answer("from b"))
            .expect("b takes the completion");
        assert_eq!(result_of(waiter.await.unwrap()).as_deref(), Some("from b"));
        assert_eq!(a.forwarded(), (1, 0));
        assert_eq!(b.forwarded(), (0, 1));
        assert_eq!((a.pending(), b.pending()), (0, 0));
    }

    /// Waits for `f`, failing the test instead of hanging.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .expect("did not happen within 10 s")
    }

    /// Yields until `cond` holds (at most 10 s).
    async fn until(cond: impl Fn() -> bool) {
        within(async {
            while !cond() {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }

    type Waiter = tokio::task::JoinHandle<Result<Completion, super::super::workers::HubClosed>>;

    /// Hubs "a" and "b", a worker on b, and an item of a that the worker holds (its token).
    async fn held_by_a_worker_of_b() -> (
        Arc<WorkerHub>,
        Arc<WorkerHub>,
        super::super::workers::WorkItemStream,
        Waiter,
        String,
    ) {
        let (a, b) = two_hubs();
        let mut w = b.connect(None).expect("worker on b");
        a.set_peer(b.summary("b"));
        let h = a.clone();
        let waiter =
            tokio::spawn(async move { h.dispatch(ItemKind::Activity, "Say", say()).await });
        let held = within(next_token(&mut w)).await;
        (a, b, w, waiter, held)
    }

    #[tokio::test]
    async fn a_stop_does_not_wait_for_a_peers_worker_and_withdraws_the_item() {
        let (a, b, _w, waiter, held) = held_by_a_worker_of_b().await;
        a.close();
        assert!(matches!(
            within(waiter).await.unwrap(),
            Err(super::super::workers::HubClosed)
        ));
        // a's withdrawal reached b: the item is gone there, its worker's completion refused.
        until(|| b.pending() == 0).await;
        let late = b.complete(&held, answer("late")).expect_err("withdrawn");
        assert_eq!(late.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn a_cancelled_dispatch_withdraws_its_item_from_the_peer() {
        let (a, b, _w, waiter, held) = held_by_a_worker_of_b().await;
        assert_eq!(b.pending(), 1);
        waiter.abort();
        let _ = waiter.await;
        until(|| b.pending() == 0).await;
        assert!(b.complete(&held, answer("late")).is_err());
        assert_eq!(a.forwarded(), (0, 0));
    }

    /// A peer's item `id` of incarnation `inc` of node "a", for `work`.
    fn item_from_a(inc: u64, id: u64) -> WorkItemRequest {
        WorkItemRequest {
            origin: "a".into(),
            incarnation: inc,
            id,
            kind: 1,
            name: "Say".into(),
            item: proto::WorkItem {
                request: Some(say()),
                completion_token: String::new(),
            }
            .encode_to_vec(),
            wait_ms: 60_000,
        }
    }

    #[tokio::test]
    async fn withdrawals_that_overtake_their_item_or_lose_their_link_still_count() {
        let b = WorkerHub::with_nonce(2);
        let (work, items) = linked(&b, Arc::new(Mesh::default()));
        let mut w = b.connect(None).expect("worker on b");
        // A withdrawal that arrives before its item: the item is refused when it comes.
        work.withdraw("a".into(), 1, 0);
        let reply = within(work.run(item_from_a(1, 0))).await;
        assert!(
            matches!(&reply, PeerReply::NoWorker(m) if m.contains("withdrawn")),
            "{reply:?}"
        );
        assert_eq!(b.pending(), 0);
        // The same number from a restarted "a" (another incarnation) is a different item.
        let w2 = work.clone();
        let run = tokio::spawn(async move { w2.run(item_from_a(2, 0)).await });
        let held = within(next_token(&mut w)).await;
        // Its origin's link closes: no withdrawal can come, so the item is dropped here.
        lock_items(&items).cancel_origins(&BTreeSet::from(["a".to_string()]));
        let reply = within(run).await.unwrap();
        assert!(
            matches!(&reply, PeerReply::NoWorker(m) if m.contains("withdrawn")),
            "{reply:?}"
        );
        until(|| b.pending() == 0).await;
        assert!(b.complete(&held, answer("late")).is_err());
        assert!(lock_items(&items).running.is_empty());
    }

    #[tokio::test]
    async fn an_item_too_large_to_carry_fails_instead_of_being_sent_again() {
        let (a, b) = two_hubs();
        let _w = b.connect(None).expect("worker on b");
        a.set_peer(b.summary("b"));
        let huge = proto::work_item::Request::ActivityRequest(proto::ActivityRequest {
            name: "Say".into(),
            input: Some("x".repeat(FORWARD_LIMIT + 1)),
            ..Default::default()
        });
        let done = within(a.dispatch(ItemKind::Activity, "Say", huge)).await;
        match done {
            Ok(Completion::Activity(r)) => {
                let f = r.failure_details.expect("a failure");
                assert_eq!(f.error_type, "WorkItemTooLarge");
                assert!(f.error_message.contains("bytes"), "{}", f.error_message);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.pending(), 0, "nothing was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_whose_worker_left_gives_the_item_back_to_a_local_worker() {
        let (a, b) = two_hubs();
        let mut w = b.connect(None).expect("worker on b");
        a.set_peer(b.summary("b"));
        let h = a.clone();
        let waiter =
            tokio::spawn(async move { h.dispatch(ItemKind::Activity, "Say", say()).await });
        let _held = within(next_token(&mut w)).await;
        // b's only worker leaves while it holds the item: b gives it back to a.
        drop(w);
        a.set_peer(b.summary("b"));
        assert!(!a.serves_anywhere(ItemKind::Activity, "Say"));
        // A worker connects to a: the waiting item goes to it.
        let mut local = a.connect(None).expect("worker on a");
        let token = within(next_token(&mut local)).await;
        a.complete(&token, answer("from a")).expect("a takes it");
        assert_eq!(
            result_of(within(waiter).await.unwrap()).as_deref(),
            Some("from a")
        );
        assert_eq!(a.forwarded(), (0, 0));
        assert_eq!(b.pending(), 0, "b keeps nothing of a's item");
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_waits_for_a_peer_summary_and_stale_summaries_do_not_count() {
        let (a, b) = two_hubs();
        let h = a.clone();
        let waiter =
            tokio::spawn(async move { h.dispatch(ItemKind::Activity, "Say", say()).await });
        let mut w = b.connect(None).expect("worker on b");
        // Only once a hears of b's worker does the item move.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(b.pending(), 0);
        a.set_peer(b.summary("b"));
        let token = next_token(&mut w).await;
        b.complete(&token, answer("late")).expect("complete");
        assert_eq!(result_of(waiter.await.unwrap()).as_deref(), Some("late"));
        // A summary not refreshed within its TTL no longer counts.
        assert!(a.serves_anywhere(ItemKind::Activity, "Say"));
        tokio::time::sleep(super::super::workers::PEER_SUMMARY_TTL).await;
        assert!(!a.serves_anywhere(ItemKind::Activity, "Say"));
        // Nor does one of a peer whose link is gone.
        a.set_peer(b.summary("b"));
        a.forget_peers(&BTreeSet::from(["b".to_string()]));
        assert!(!a.serves_anywhere(ItemKind::Activity, "Say"));
    }

    #[tokio::test]
    async fn a_local_worker_comes_first_and_filters_route_to_peers() {
        let (a, b) = two_hubs();
        let mut on_b = b.connect(None).expect("worker on b");
        let mut on_a = a
            .connect(Some(proto::WorkItemFilters {
                activities: vec![proto::ActivityFilter {
                    name: "Other".into(),
                    versions: vec![],
                }],
                ..Default::default()
            }))
            .expect("filtered worker on a");
        a.set_peer(b.summary("b"));
        let sum = b.summary("b");
        assert!(sum.any && sum.workers == 1, "{sum:?}");
        // "Say": a's worker does not serve it, b's does.
        let h = a.clone();
        let say_item =
            tokio::spawn(async move { h.dispatch(ItemKind::Activity, "Say", say()).await });
        let t = next_token(&mut on_b).await;
        b.complete(&t, answer("b")).expect("b");
        assert_eq!(result_of(say_item.await.unwrap()).as_deref(), Some("b"));
        // "Other": a's own worker serves it, so it stays on a.
        let h = a.clone();
        let other = tokio::spawn(async move {
            h.dispatch(
                ItemKind::Activity,
                "Other",
                proto::work_item::Request::ActivityRequest(proto::ActivityRequest {
                    name: "Other".into(),
                    ..Default::default()
                }),
            )
            .await
        });
        let t = next_token(&mut on_a).await;
        a.complete(&t, answer("a")).expect("a");
        assert_eq!(result_of(other.await.unwrap()).as_deref(), Some("a"));
        assert_eq!(b.forwarded(), (0, 1));
    }

    #[test]
    fn completions_round_trip_and_bad_bytes_are_refused() {
        let c = Completion::Activity(proto::ActivityResponse {
            instance_id: "i".into(),
            task_id: 3,
            ..Default::default()
        });
        let (k, bytes) = encode_completion(&c);
        match decode_completion(k, &bytes) {
            Ok(Completion::Activity(r)) => {
                assert_eq!((r.instance_id.as_str(), r.task_id), ("i", 3))
            }
            other => panic!("{other:?}"),
        }
        assert!(decode_completion(9, &bytes).is_err());
        assert!(decode_completion(0, &[0xFF, 0xFF, 0xFF]).is_err());
    }

    #[test]
    fn a_work_item_must_match_its_kind() {
        let req = proto::work_item::Request::ActivityRequest(proto::ActivityRequest {
            name: "A".into(),
            ..Default::default()
        });
        let item = proto::WorkItem {
            request: Some(req),
            completion_token: String::new(),
        }
        .encode_to_vec();
        let ok = WorkItemRequest {
            origin: "a".into(),
            incarnation: 3,
            id: 1,
            kind: 1,
            name: "A".into(),
            item: item.clone(),
            wait_ms: 1,
        };
        assert!(matches!(request_of(&ok), Ok((ItemKind::Activity, _))));
        for (kind, bytes) in [(0, item.clone()), (7, item), (1, vec![0xFF; 3])] {
            let bad = WorkItemRequest {
                kind,
                item: bytes,
                ..ok.clone()
            };
            assert!(request_of(&bad).is_err(), "kind {kind}");
        }
    }
}
