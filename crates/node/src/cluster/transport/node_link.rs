//! The transport wired into a running node: the partition owners as the node last read them
//! from the store, nudges over the links, answers to peers, and dialling the cluster
//! addresses of the membership records.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::forward::{
    ClusterApi, ForwardOptions, NudgeTarget, PartitionOwners, PeerWork, ServePeers,
};
use super::wire::PeerCast;
use super::{Links, Transport};
use crate::cluster::{LocalNudge, PeerNudge};
use crate::node::NodeHandle;
use crate::runtime::Shared;

/// Owners from the node's lease view; local means the node runs the partition's actor.
struct NodeOwners(
    Weak<Shared>,
    tokio::sync::watch::Receiver<crate::cluster::ClusterView>,
);

impl PartitionOwners for NodeOwners {
    fn owner(&self, partition: u32) -> Option<String> {
        self.0.upgrade().and_then(|s| s.owner_of(partition))
    }

    fn is_local(&self, partition: u32) -> bool {
        self.0.upgrade().is_some_and(|s| s.holds(partition))
    }

    /// The node's next cluster round (it publishes the lease view it read).
    fn changed(&self) -> futures::future::BoxFuture<'static, ()> {
        let mut view = self.1.clone();
        view.borrow_and_update();
        Box::pin(async move {
            if view.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

impl NudgeTarget for LocalNudge {
    fn nudge(&self, partition: u32) {
        LocalNudge::nudge(self, partition);
    }
}

/// [`PeerNudge`] over the transport: a nudge is a cast to the owner's routers.
#[derive(Debug)]
pub struct TransportNudge {
    transport: Transport,
    local: Mutex<Option<(String, LocalNudge)>>,
}

impl TransportNudge {
    /// Nudges through `transport`.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            local: Mutex::new(None),
        }
    }
}

impl PeerNudge for TransportNudge {
    fn nudge(&self, node: &str, partition: u32) {
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((name, l)) = local
            && name == node
        {
            l.nudge(partition);
            return;
        }
        if let Err(e) = self.transport.cast(node, &PeerCast::Nudge { partition }) {
            tracing::debug!(node, partition, error = %e, "nudge not sent");
        }
    }

    fn delivers(&self) -> bool {
        true
    }

    fn attach(&self, node: &str, local: LocalNudge) {
        *self.local.lock().unwrap_or_else(|e| e.into_inner()) = Some((node.to_string(), local));
    }
}

/// Answers peers with `node` and returns the node's cluster-wide API (what its HTTP API and
/// in-process clients use). Also dials the cluster address of every live node the node sees
/// in the store, so seeds are only a hint.
///
/// With `work` (a node that serves gRPC workers, `crate::grpc::peers::join_cluster`), peers'
/// work items go to this node's workers.
pub fn attach(
    node: &NodeHandle,
    transport: &Transport,
    work: Option<Arc<dyn PeerWork>>,
) -> ClusterApi {
    let shared = node.shared();
    let owners: Arc<dyn PartitionOwners> =
        Arc::new(NodeOwners(Arc::downgrade(shared), node.cluster()));
    let nudges: Arc<dyn NudgeTarget> = Arc::new(crate::cluster::local_nudge(shared));
    let mut serve = ServePeers::new(
        Arc::new(node.clone()),
        owners.clone(),
        node.partitions(),
        Some(nudges.clone()),
    );
    if let Some(w) = work {
        serve = serve.with_work(w);
    }
    transport.set_handler(Arc::new(serve));
    let wait = shared.opts.cluster.lease_ttl + Duration::from_secs(5);
    spawn_discovery(node, transport);
    ClusterApi::for_node(node.clone(), Arc::new(transport.clone()), owners)
        .with_nudges(nudges)
        .with_options(ForwardOptions {
            handoff_wait: wait,
            ..ForwardOptions::default()
        })
}

fn spawn_discovery(node: &NodeHandle, transport: &Transport) {
    let mut view = node.cluster();
    let mut peers = transport.watch_peers();
    let transport = transport.clone();
    let me = node.name().to_string();
    let weak = Arc::downgrade(node.shared());
    let node = node.clone();
    tokio::spawn(async move {
        loop {
            let addrs: Vec<String> = view
                .borrow_and_update()
                .nodes
                .iter()
                .filter(|n| n.live && n.name != me && !n.cluster_address.is_empty())
                .map(|n| n.cluster_address.clone())
                .collect();
            for a in addrs {
                transport.connect(&a).await;
            }
            tokio::select! {
                r = view.changed() => if r.is_err() { return },
                r = peers.changed() => {
                    if r.is_err() { return }
                    // A peer came or went: reconsider placement now, not at the next beat.
                    node.membership_changed();
                }
            }
            if weak.upgrade().is_none() {
                return;
            }
        }
    });
}
