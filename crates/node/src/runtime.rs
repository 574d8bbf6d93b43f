//! The runtime: partition actors that own instance and entity actors, the activity pool,
//! timers, and the shared context they run in. See `docs/runtime.md`.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use perdure_core::{ExecutionId, InstanceId};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::options::NodeOptions;
use crate::state::queues::MessageIds;
use crate::state::records::{ActivityTask, InboxMessage, Target};
use crate::store::{RetryOptions, Store};

pub mod activity;
pub mod clock;
pub(crate) mod commit;
pub mod core_executor;
pub mod entity;
pub mod executor;
pub mod instance;
pub(crate) mod outbox;
pub mod partition;
pub(crate) mod partition_actor;
pub mod rewind;
pub(crate) mod staged;
pub(crate) mod target_actor;

pub use clock::Clock;
pub use executor::Executors;

/// A message to a partition actor.
#[derive(Debug)]
pub enum PartitionMsg {
    /// Messages committed to this partition's inbox: (key, message).
    Deliver(Vec<(Vec<u8>, InboxMessage)>),
    /// Timers committed to this partition: (key, due, message).
    Timers(Vec<(Vec<u8>, perdure_core::Timestamp, InboxMessage)>),
    /// Drop an instance's in-memory state (it was purged).
    Forget(InstanceId),
    /// How many messages wait for a target (not counting a run in flight); answers 0 for a
    /// target the partition holds nothing for.
    Backlog(Target, oneshot::Sender<u64>),
    /// Stop after the current round.
    Shutdown(oneshot::Sender<()>),
    /// Read the inbox and timers again: another node may have written to them (used until
    /// the cluster transport nudges owners directly).
    Rescan,
}

/// What every actor of a node shares.
pub struct Shared {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The user code.
    pub exec: Arc<dyn Executors>,
    /// Options.
    pub opts: NodeOptions,
    /// Partition count (from the store).
    pub partitions: u32,
    /// Message key generator.
    pub ids: MessageIds,
    /// The clock.
    pub clock: Clock,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Transaction retries.
    pub retry: RetryOptions,
    /// This process's node id (unique per start).
    pub node_id: u64,
    counter: AtomicU64,
    /// The partition actors this node runs now (partitions come and go).
    routes: RwLock<Vec<Option<ractor::ActorRef<partition_actor::ActorMsg>>>>,
    /// The owner of each partition as last read from the store (for nudges).
    owners: RwLock<Vec<Option<String>>>,
    /// Tells other nodes that a partition they own has new messages.
    pub(crate) nudge: Arc<dyn crate::cluster::PeerNudge>,
    /// Test seam: the node behaves as if its process froze (no renewals, no releases).
    pub(crate) abandoned: AtomicBool,
    /// Bumped by every page of a partition's recovery or re-read and by every partition a
    /// drain finishes: the cluster manager's sign that a long round is still moving.
    pub(crate) round_progress: AtomicU64,
    /// A re-read of the inbox is queued per partition (nudges coalesce).
    pub(crate) rescans: Vec<AtomicBool>,
    /// Messages waiting per partition (admission control).
    pub(crate) depth: Vec<AtomicUsize>,
    /// Epoch held per partition (0: not held).
    pub(crate) epochs: Vec<AtomicU64>,
    waiters: Mutex<HashMap<InstanceId, Vec<oneshot::Sender<()>>>>,
    pub(crate) activities: OnceLock<activity::ActivityPool>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("partitions", &self.partitions)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A shared context.
    pub fn new(
        store: Arc<dyn Store>,
        exec: Arc<dyn Executors>,
        opts: NodeOptions,
        partitions: u32,
        node_id: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            exec,
            opts,
            partitions,
            ids: MessageIds::new(node_id),
            clock: Clock::system(),
            metrics,
            retry: RetryOptions::default(),
            node_id,
            counter: AtomicU64::new(0),
            routes: RwLock::new(vec![None; partitions as usize]),
            owners: RwLock::new(vec![None; partitions as usize]),
            nudge: Arc::new(crate::cluster::NoNudge),
            abandoned: AtomicBool::new(false),
            round_progress: AtomicU64::new(0),
            rescans: (0..partitions).map(|_| AtomicBool::new(false)).collect(),
            depth: (0..partitions).map(|_| AtomicUsize::new(0)).collect(),
            epochs: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            waiters: Mutex::new(HashMap::new()),
            activities: OnceLock::new(),
        }
    }

    /// The partition of a message target.
    pub fn partition_of(&self, target: &Target) -> u32 {
        crate::state::partition_of(&target.routing_key(), self.partitions)
    }

    /// The partition of an instance.
    pub fn partition_of_instance(&self, id: &InstanceId) -> u32 {
        crate::state::partition_of(id.as_str(), self.partitions)
    }

    /// A new execution id, unique across nodes and restarts.
    pub fn new_execution_id(&self) -> ExecutionId {
        ExecutionId(format!(
            "{:016x}{:08x}",
            self.node_id,
            self.counter.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// A new instance id.
    pub fn new_instance_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:08x}-{:04x}-{:012x}",
            (self.node_id >> 32) as u32,
            (self.node_id & 0xFFFF) as u16,
            n
        )
    }

    /// Publishes (or withdraws) the local actor of a partition.
    pub(crate) fn set_route(
        &self,
        partition: u32,
        actor: Option<ractor::ActorRef<partition_actor::ActorMsg>>,
    ) {
        let withdrawn = actor.is_none();
        {
            let mut r = self.routes.write().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = r.get_mut(partition as usize) {
                *slot = actor;
            }
        }
        // A re-read queued to the previous actor may never be processed (it stopped with the
        // re-read in its mailbox): left set, the flag would swallow every later re-read of the
        // partition on this node, and what other nodes send to it would never be read. The
        // next actor reads the whole inbox when it recovers.
        if let Some(flag) = self.rescans.get(partition as usize) {
            flag.store(false, Ordering::Release);
        }
        if withdrawn {
            self.wake_partition_waiters(partition);
        }
    }

    /// Wakes the waiters of every instance of a partition this node no longer runs: no
    /// completion will notify them here, so they go back to reading the store (a long poll
    /// whose partition moved answers when the instance completes on its new owner, not at
    /// its timeout).
    fn wake_partition_waiters(&self, partition: u32) {
        let woken: Vec<oneshot::Sender<()>> = match self.waiters.lock() {
            Ok(mut w) => {
                let ids: Vec<InstanceId> = w
                    .keys()
                    .filter(|id| self.partition_of_instance(id) == partition)
                    .cloned()
                    .collect();
                ids.iter().filter_map(|id| w.remove(id)).flatten().collect()
            }
            Err(_) => Vec::new(),
        };
        for s in woken {
            let _ = s.send(());
        }
    }

    /// The local actor of a partition, if this node runs it.
    pub(crate) fn local(
        &self,
        partition: u32,
    ) -> Option<ractor::ActorRef<partition_actor::ActorMsg>> {
        let r = self.routes.read().unwrap_or_else(|e| e.into_inner());
        r.get(partition as usize).cloned().flatten()
    }

    /// Whether this node runs the partition's actor now.
    pub fn holds(&self, partition: u32) -> bool {
        self.local(partition).is_some()
    }

    /// Makes the local actor of `partition` re-read its inbox and timers (coalesced: one
    /// re-read queued at a time).
    pub(crate) fn rescan(&self, partition: u32) {
        let Some(flag) = self.rescans.get(partition as usize) else {
            return;
        };
        if let Some(tx) = self.local(partition)
            && !flag.swap(true, Ordering::AcqRel)
            && tx
                .cast(partition_actor::ActorMsg::External(PartitionMsg::Rescan))
                .is_err()
        {
            flag.store(false, Ordering::Release);
        }
    }

    /// The owner of a partition as last read from the store.
    pub(crate) fn owner_of(&self, partition: u32) -> Option<String> {
        self.owners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(partition as usize)
            .cloned()
            .flatten()
    }

    /// Records the owners read from the store (for nudges).
    pub(crate) fn set_owners(&self, owners: Vec<Option<String>>) {
        *self.owners.write().unwrap_or_else(|e| e.into_inner()) = owners;
    }

    /// Sends a message to a partition actor. A partition this node does not run has the
    /// message in its store inbox already: its owner is nudged (or reads it on acquisition).
    pub(crate) fn route(&self, partition: u32, msg: PartitionMsg) {
        let msg = match self.try_local(partition, msg) {
            Ok(()) | Err(None) => return,
            Err(Some(msg)) => msg,
        };
        if matches!(msg, PartitionMsg::Deliver(_) | PartitionMsg::Timers(_)) {
            let owner = self
                .owners
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(partition as usize)
                .cloned()
                .flatten();
            if let Some(owner) = owner
                && owner != self.opts.cluster.name
            {
                self.nudge.nudge(&owner, partition);
            }
        }
    }

    /// Forgets the messages counted as queued for a partition: its actor stopped, and what
    /// its mailbox still held was dropped with it (those messages are in the store and the
    /// next owner reads them). Without this the count would only grow with every handoff,
    /// and the node would refuse new work for the partition as overloaded.
    pub(crate) fn forget_queued(&self, partition: u32) {
        if let Some(d) = self.depth.get(partition as usize) {
            d.store(0, Ordering::Relaxed);
        }
    }

    /// Hands a message to the partition's local actor. Gives the message back when this
    /// node runs no actor for the partition or the actor has stopped (its mailbox is closed);
    /// `Err(None)`: the send failed in a way that did not return the message.
    pub(crate) fn try_local(
        &self,
        partition: u32,
        msg: PartitionMsg,
    ) -> Result<(), Option<PartitionMsg>> {
        let Some(tx) = self.local(partition) else {
            return Err(Some(msg));
        };
        let depth = match &msg {
            PartitionMsg::Deliver(m) => m.len(),
            _ => 0,
        };
        let d = self.depth.get(partition as usize);
        if let Some(d) = d {
            d.fetch_add(depth, Ordering::Relaxed);
        }
        match tx.cast(partition_actor::ActorMsg::External(msg)) {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Some(d) = d {
                    sub_depth(d, depth);
                }
                match e {
                    ractor::MessagingErr::SendErr(partition_actor::ActorMsg::External(m)) => {
                        Err(Some(m))
                    }
                    _ => Err(None),
                }
            }
        }
    }

    /// How many messages wait in its partition for `target` (0 while the node stops).
    pub(crate) async fn backlog(&self, target: Target) -> u64 {
        let (tx, rx) = oneshot::channel();
        let p = self.partition_of(&target);
        self.route(p, PartitionMsg::Backlog(target, tx));
        rx.await.unwrap_or(0)
    }

    /// Delivers everything in a committed transaction's outbox.
    pub(crate) fn dispatch(&self, out: outbox::Outbox) {
        let mut per: HashMap<u32, Vec<(Vec<u8>, InboxMessage)>> = HashMap::new();
        for (p, k, m) in out.messages {
            per.entry(p).or_default().push((k, m));
        }
        for (p, msgs) in per {
            self.route(p, PartitionMsg::Deliver(msgs));
        }
        let mut timers: HashMap<u32, Vec<_>> = HashMap::new();
        for (p, k, due, m) in out.timers {
            timers.entry(p).or_default().push((k, due, m));
        }
        for (p, t) in timers {
            self.route(p, PartitionMsg::Timers(t));
        }
        if let Some(pool) = self.activities.get() {
            for (p, k, task) in out.tasks {
                pool.submit(p, k, task);
            }
        }
    }

    /// Registers a waiter notified when the instance reaches a terminal status.
    pub(crate) fn add_waiter(&self, id: &InstanceId) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.entry(id.clone()).or_default().push(tx);
        }
        rx
    }

    /// Wakes the waiters of an instance.
    pub(crate) fn notify_finished(&self, id: &InstanceId) {
        let ws = self.waiters.lock().ok().and_then(|mut w| w.remove(id));
        for w in ws.into_iter().flatten() {
            let _ = w.send(());
        }
    }

    /// Drops waiters that gave up (their receiver is gone).
    pub(crate) fn prune_waiters(&self, id: &InstanceId) {
        if let Ok(mut w) = self.waiters.lock()
            && let Some(v) = w.get_mut(id)
        {
            v.retain(|s| !s.is_closed());
            if v.is_empty() {
                w.remove(id);
            }
        }
    }

    /// The epoch this node holds for a partition.
    pub(crate) fn epoch(&self, partition: u32) -> u64 {
        self.epochs
            .get(partition as usize)
            .map_or(0, |e| e.load(Ordering::Acquire))
    }
}

/// A task handed to the pool: (partition, key, task).
pub(crate) type TaskItem = (u32, Vec<u8>, ActivityTask);

/// Takes `n` off a partition's count of queued messages, never below zero: the count is
/// reset when the partition's actor stops (see [`Shared::forget_queued`]), and a send that
/// fails after that reset takes back what it added before.
pub(crate) fn sub_depth(d: &AtomicUsize, n: usize) {
    let _ = d.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::sync::mpsc;

    use super::partition_actor::ActorMsg;
    use super::*;

    /// A stand-in for a partition actor: reports each re-read it is sent, and never clears
    /// the queued flag (as an actor that stopped with the re-read still in its mailbox).
    struct Stub;

    impl Actor for Stub {
        type Msg = ActorMsg;
        type State = mpsc::UnboundedSender<()>;
        type Arguments = mpsc::UnboundedSender<()>;

        async fn pre_start(
            &self,
            _myself: ActorRef<ActorMsg>,
            report: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(report)
        }

        async fn handle(
            &self,
            _myself: ActorRef<ActorMsg>,
            msg: ActorMsg,
            report: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if matches!(msg, ActorMsg::External(PartitionMsg::Rescan)) {
                let _ = report.send(());
            }
            Ok(())
        }
    }

    async fn rescanned(rx: &mut mpsc::UnboundedReceiver<()>, what: &str) {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no re-read within 5 s"))
            .expect("stub alive");
    }

    /// A node's shared state on a memory store, 4 partitions, no registered functions.
    fn memory_shared() -> Shared {
        let registry = Arc::new(perdure_core::registry::Registry::new());
        Shared::new(
            Arc::new(crate::store::memory::MemoryStore::new()),
            Arc::new(core_executor::CoreExecutor::new(registry)),
            NodeOptions::default(),
            4,
            1,
            Arc::new(Metrics::default()),
        )
    }

    /// A re-read queued to a partition actor that stopped before reading it does not swallow
    /// the re-reads of the partition's next actor on this node (they are how messages from
    /// other nodes reach it).
    #[tokio::test]
    async fn a_rescan_lost_with_a_stopped_actor_does_not_block_the_next_actor() {
        let shared = memory_shared();
        let p = 2;
        let (tx, mut old_rx) = mpsc::unbounded_channel();
        let (old, old_task) = Actor::spawn(None, Stub, tx).await.expect("old stub");
        shared.set_route(p, Some(old.clone()));
        shared.rescan(p);
        rescanned(&mut old_rx, "old actor").await;
        // The old actor stops (fenced) with the re-read unprocessed; the node withdraws its
        // route and later starts a new actor for the partition.
        old.stop(None);
        old_task.await.expect("old stub stops");
        shared.set_route(p, None);
        let (tx, mut new_rx) = mpsc::unbounded_channel();
        let (new, new_task) = Actor::spawn(None, Stub, tx).await.expect("new stub");
        shared.set_route(p, Some(new.clone()));
        // A nudge from another node (or the periodic safety net) reaches the new actor.
        shared.rescan(p);
        rescanned(&mut new_rx, "new actor").await;
        new.stop(None);
        new_task.await.expect("new stub stops");
    }

    /// A message for a partition whose actor has stopped, its route not yet withdrawn (the
    /// window in which an activity result used to be dropped and its activity run again),
    /// comes back to the sender, which then takes the store path.
    #[tokio::test]
    async fn a_stopped_actor_gives_the_message_back() {
        let shared = memory_shared();
        let p = 1;
        assert!(matches!(
            shared.try_local(p, PartitionMsg::Rescan),
            Err(Some(PartitionMsg::Rescan))
        ));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (actor, task) = Actor::spawn(None, Stub, tx).await.expect("stub");
        shared.set_route(p, Some(actor.clone()));
        assert!(shared.try_local(p, PartitionMsg::Rescan).is_ok());
        rescanned(&mut rx, "running actor").await;
        actor.stop(None);
        task.await.expect("stub stops");
        let msg = InboxMessage {
            target: Target::Instance(InstanceId::new("i").expect("id")),
            body: crate::state::records::MessageBody::Terminate {
                reason: None,
                recursive: false,
            },
        };
        let back = shared.try_local(p, PartitionMsg::Deliver(vec![(b"k".to_vec(), msg)]));
        assert!(
            matches!(back, Err(Some(PartitionMsg::Deliver(_)))),
            "a stopped actor must give the message back"
        );
        assert_eq!(
            shared.depth[p as usize].load(Ordering::Relaxed),
            0,
            "an undelivered message is not counted as queued"
        );
    }

    /// Messages still queued in a partition actor's mailbox when it stops are dropped with
    /// it (they are in the store; the next owner reads them). The node's count of queued
    /// messages for the partition, which admits or refuses new work, forgets them: otherwise
    /// it only grows with every handoff until the node refuses the partition's work for good.
    #[tokio::test]
    async fn messages_dropped_with_a_stopped_actor_are_not_counted_as_queued() {
        let shared = Arc::new(memory_shared());
        let p = 3;
        crate::cluster::membership::join(&shared)
            .await
            .expect("membership record");
        let part = partition::Partition::start(shared.clone(), p)
            .await
            .expect("partition acquired");
        let (actor, task) = Actor::spawn(None, partition_actor::PartitionActor, part)
            .await
            .expect("partition actor");
        shared.set_route(p, Some(actor.clone()));
        let msg = |i: u32| {
            let m = InboxMessage {
                target: Target::Instance(InstanceId::new(format!("i{i}")).expect("id")),
                body: crate::state::records::MessageBody::Terminate {
                    reason: None,
                    recursive: false,
                },
            };
            PartitionMsg::Deliver(vec![(format!("k{i}").into_bytes(), m)])
        };
        // On this single-threaded runtime the actor runs only when the test yields: both
        // deliveries are queued, and the stop (ractor polls it ahead of messages) drops them.
        for i in 0..2 {
            assert!(shared.try_local(p, msg(i)).is_ok(), "queued");
        }
        assert_eq!(shared.depth[p as usize].load(Ordering::Relaxed), 2);
        actor.stop(None);
        task.await.expect("partition actor stops");
        assert_eq!(
            shared.depth[p as usize].load(Ordering::Relaxed),
            0,
            "messages dropped with the stopped actor are still counted"
        );
        // The count never wraps below zero: a send that failed after the reset.
        sub_depth(&shared.depth[p as usize], 5);
        assert_eq!(shared.depth[p as usize].load(Ordering::Relaxed), 0);
    }
}
