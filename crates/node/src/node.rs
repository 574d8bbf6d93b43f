//! The library entry point: build a node over a store and a registry, start it, and use the
//! returned [`NodeHandle`] as a [`ManagementApi`](perdure_core::management::ManagementApi).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use perdure_node::node::Node;
//! use perdure_node::store::memory::MemoryStore;
//! let node = Node::builder()
//!     .registry(Arc::new(perdure_node::sample::sample_registry()))
//!     .store(Arc::new(MemoryStore::new()))
//!     .start()
//!     .await?;
//! node.shutdown().await;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::cluster::manager::{Manager, ManagerHandle};
use crate::cluster::membership::{self, JoinError};
use crate::cluster::{ClusterView, PeerNudge};
use crate::metrics::Metrics;
use crate::options::{NodeOptions, OptionsError};
use crate::runtime::activity::ActivityPool;
use crate::runtime::{Executors, PartitionMsg, Shared};
use crate::state;
use crate::store::{Store, StoreError, transact};

mod entity_ops;
mod intake;
mod management;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The options are invalid.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// The builder lacks a part.
    #[error("node builder: {0} is missing")]
    Missing(&'static str),
    /// The store failed.
    #[error("store error while starting the node")]
    Store(#[from] StoreError),
    /// A partition actor could not be started.
    #[error("partition actor: {0}")]
    Spawn(String),
    /// The node could not join the cluster.
    #[error(transparent)]
    Join(#[from] JoinError),
}

/// Builds a node.
#[derive(Default)]
pub struct NodeBuilder {
    exec: Option<Arc<dyn Executors>>,
    store: Option<Arc<dyn Store>>,
    options: NodeOptions,
    nudge: Option<Arc<dyn PeerNudge>>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The node type: use [`Node::builder`].
#[derive(Debug)]
pub struct Node;

impl Node {
    /// A builder.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }
}

impl NodeBuilder {
    /// The registered functions, run in process.
    pub fn registry(mut self, registry: Arc<perdure_core::registry::Registry>) -> Self {
        self.exec = Some(Arc::new(crate::runtime::core_executor::CoreExecutor::new(
            registry,
        )));
        self
    }

    /// Any executor (for example a remote worker).
    pub fn executors(mut self, exec: Arc<dyn Executors>) -> Self {
        self.exec = Some(exec);
        self
    }

    /// The store.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The options.
    pub fn options(mut self, options: NodeOptions) -> Self {
        self.options = options;
        self
    }

    /// The links to other nodes that tell an owner about new messages for its partitions
    /// (default: none; owners then re-read their inboxes every heartbeat).
    pub fn peer_nudge(mut self, nudge: Arc<dyn PeerNudge>) -> Self {
        self.nudge = Some(nudge);
        self
    }

    /// Starts the node: reads (or initialises) the partition count, joins the cluster
    /// membership (failing if a live node has the same name, waiting if a crashed
    /// predecessor's heartbeat has yet to expire), acquires the partitions that placement
    /// gives it and that are free, recovers their inboxes, timers and activity queues, and
    /// starts their actors. Partitions held by other nodes are handed over later.
    pub async fn start(self) -> Result<NodeHandle, NodeError> {
        self.options.validate()?;
        let exec = self.exec.ok_or(NodeError::Missing("registry"))?;
        let store = self.store.ok_or(NodeError::Missing("store"))?;
        let default_p = self.options.partitions.get();
        let partitions = transact(store.as_ref(), &Default::default(), move |tx| {
            Box::pin(async move { state::init_partitions(tx, default_p).await })
        })
        .await?;
        let node_id = node_id();
        let metrics = Arc::new(Metrics::default());
        let mut shared = Shared::new(
            store,
            exec,
            self.options.clone(),
            partitions,
            node_id,
            metrics,
        );
        if let Some(n) = self.nudge {
            shared.nudge = n;
        }
        let shared = Arc::new(shared);
        let pool = ActivityPool::start(
            Arc::downgrade(&shared),
            self.options.max_concurrent_activities.get(),
        )
        .await
        .map_err(|e| NodeError::Spawn(e.to_string()))?;
        let _ = shared.activities.set(pool);
        shared.nudge.attach(
            &self.options.cluster.name,
            crate::cluster::local_nudge(&shared),
        );
        let me = membership::join(&shared).await?;
        let (mut manager, view) = Manager::new(shared.clone(), me);
        let first = manager.tick().await?;
        let (cmds, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(manager.run(rx, first));
        tracing::info!(
            partitions,
            owned = view.borrow().owned.len(),
            node = %self.options.cluster.name,
            node_id = format!("{node_id:x}"),
            "node started"
        );
        let intake =
            intake::Intake::start(shared.clone(), self.options.partition_queue_bound.get());
        Ok(NodeHandle {
            inner: Arc::new(Inner {
                shared,
                manager: ManagerHandle {
                    cmds,
                    view,
                    task: Mutex::new(Some(task)),
                },
                intake,
            }),
        })
    }
}

fn node_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40)
}

struct Inner {
    shared: Arc<Shared>,
    manager: ManagerHandle,
    intake: intake::Intake,
}

/// A running node. Clones share it. Implements
/// [`ManagementApi`](perdure_core::management::ManagementApi).
#[derive(Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("shared", &self.inner.shared)
            .finish()
    }
}

impl NodeHandle {
    /// The node's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.inner.shared.metrics.clone()
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.inner.shared.partitions
    }

    /// The store backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.inner.shared.store.backend_name()
    }

    /// Leaves the cluster gracefully: every partition finishes its current round and is
    /// handed off (its lease released, so another node takes it at once). Running activities
    /// finish; their results stay queued for the next owner if they could not be committed.
    pub async fn shutdown(&self) {
        self.inner.manager.stop(false).await;
        // A node abandoned by the test seam still runs its partition actors: stop them
        // (they release nothing).
        for p in 0..self.inner.shared.partitions {
            if let Some(a) = self.inner.shared.local(p) {
                let (tx, rx) = oneshot::channel();
                let _ = a.cast(crate::runtime::partition_actor::ActorMsg::External(
                    PartitionMsg::Shutdown(tx),
                ));
                let _ = rx.await;
                self.inner.shared.set_route(p, None);
            }
        }
    }

    /// Test seam: the node behaves as if its process froze. It stops writing heartbeats and
    /// renewing leases, and releases nothing; its partition actors keep running and keep
    /// trying to commit, which fencing refuses once another node took their partitions.
    #[doc(hidden)]
    pub async fn abandon_for_test(&self) {
        self.inner.manager.stop(true).await;
    }

    /// What this node knows of the cluster (as of its last heartbeat); changes are
    /// published, so a caller can wait for a condition.
    pub fn cluster(&self) -> tokio::sync::watch::Receiver<ClusterView> {
        self.inner.manager.view.clone()
    }

    /// Makes the node reconsider its partitions now rather than at its next heartbeat (for
    /// example when the cluster transport reports a node joining or leaving).
    pub fn membership_changed(&self) {
        let _ = self
            .inner
            .manager
            .cmds
            .send(crate::cluster::manager::ManagerCmd::Kick);
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.opts.cluster.name
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub(crate) fn intake(&self) -> &intake::Intake {
        &self.inner.intake
    }
}
