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
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::options::{NodeOptions, OptionsError};
use crate::runtime::activity::ActivityPool;
use crate::runtime::partition::Partition;
use crate::runtime::partition_actor::{ActorMsg, PartitionActor};
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
}

/// Builds a node.
#[derive(Default)]
pub struct NodeBuilder {
    exec: Option<Arc<dyn Executors>>,
    store: Option<Arc<dyn Store>>,
    options: NodeOptions,
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

    /// Starts the node: reads (or initialises) the partition count, acquires every partition,
    /// recovers their inboxes, timers and activity queues, and starts their actors.
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
        let shared = Arc::new(Shared::new(
            store,
            exec,
            self.options.clone(),
            partitions,
            node_id,
            metrics,
        ));
        let pool = ActivityPool::start(
            Arc::downgrade(&shared),
            self.options.max_concurrent_activities.get(),
        )
        .await
        .map_err(|e| NodeError::Spawn(e.to_string()))?;
        let _ = shared.activities.set(pool);
        // Acquire every partition, spawn its actor, publish the routes, then let each actor
        // recover (recovery may already send messages to other partitions).
        let started =
            futures::future::join_all((0..partitions).map(|p| Partition::start(shared.clone(), p)))
                .await;
        let mut refs = Vec::with_capacity(partitions as usize);
        let mut tasks = Vec::with_capacity(partitions as usize);
        for part in started {
            let (actor, handle) = ractor::Actor::spawn(None, PartitionActor, part?)
                .await
                .map_err(|e| NodeError::Spawn(e.to_string()))?;
            refs.push(actor);
            tasks.push(handle);
        }
        shared.set_routes(refs.clone());
        let mut recovered = Vec::with_capacity(refs.len());
        for actor in &refs {
            let (tx, rx) = oneshot::channel();
            actor
                .cast(ActorMsg::Recover(tx))
                .map_err(|e| NodeError::Spawn(e.to_string()))?;
            recovered.push(rx);
        }
        for rx in recovered {
            rx.await.map_err(|_| {
                NodeError::Spawn("a partition actor stopped while recovering".into())
            })??;
        }
        tracing::info!(partitions, node_id = format!("{node_id:x}"), "node started");
        let intake =
            intake::Intake::start(shared.clone(), self.options.partition_queue_bound.get());
        Ok(NodeHandle {
            inner: Arc::new(Inner {
                shared,
                tasks: Mutex::new(tasks),
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
    tasks: Mutex<Vec<JoinHandle<()>>>,
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

    /// Stops every partition actor after its current round. Running activities finish; their
    /// results stay queued for the next start if they could not be committed.
    pub async fn shutdown(&self) {
        let shared = &self.inner.shared;
        let mut acks = Vec::new();
        for p in 0..shared.partitions {
            let (tx, rx) = oneshot::channel();
            shared.route(p, PartitionMsg::Shutdown(tx));
            acks.push(rx);
        }
        for a in acks {
            let _ = a.await;
        }
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub(crate) fn intake(&self) -> &intake::Intake {
        &self.inner.intake
    }
}
