//! The cluster: store-decided membership (heartbeat records), rendezvous placement of
//! partitions over live nodes, and the per-node partition manager that acquires, drains and
//! hands off partitions. See `docs/cluster.md`.
//!
//! The store is the only judge: a node is live while its heartbeat record is fresh, and it
//! owns a partition while it holds the partition's lease (fenced by epoch in every commit).
//! Links between nodes only speed things up ([`PeerNudge`]); a missing link costs latency,
//! never correctness. [`transport`] carries requests, replies and nudges between nodes over
//! `ractor_cluster`.

use std::sync::{Arc, Weak};

use perdure_core::Timestamp;
use serde::Serialize;

use crate::runtime::Shared;

pub(crate) mod manager;
pub(crate) mod membership;
pub mod placement;
pub mod transport;

/// Tells the owner node of a partition that the partition's store inbox (or timers) has new
/// entries. The cluster transport implements it over the network; without one, owners
/// re-read their inboxes every heartbeat (see `docs/cluster.md`).
pub trait PeerNudge: Send + Sync + 'static {
    /// Nudges `node`, the owner of `partition` as last read from the store. Best effort: a
    /// lost nudge only delays delivery until the next re-read or acquisition.
    fn nudge(&self, node: &str, partition: u32);

    /// Whether nudges reach their nodes, so that owners need not re-read their inboxes
    /// periodically.
    fn delivers(&self) -> bool {
        false
    }

    /// Called when a node of this process joins: `local` nudges its partitions.
    fn attach(&self, _node: &str, _local: LocalNudge) {}
}

/// The default: no links between nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNudge;

impl PeerNudge for NoNudge {
    fn nudge(&self, _node: &str, _partition: u32) {}
}

/// Nudges the partitions of one node of this process (what a transport calls when a nudge
/// arrives).
#[derive(Clone, Debug)]
pub struct LocalNudge(Weak<Shared>);

impl LocalNudge {
    /// Makes the node re-read `partition`'s inbox and timers, if it runs the partition.
    pub fn nudge(&self, partition: u32) {
        if let Some(sh) = self.0.upgrade() {
            sh.rescan(partition);
        }
    }
}

/// Nodes in one process nudge each other directly (tests, embedded clusters).
#[derive(Debug, Default)]
pub struct LocalPeers {
    nodes: std::sync::Mutex<std::collections::BTreeMap<String, LocalNudge>>,
}

impl LocalPeers {
    /// An empty set of in-process peers; give the same one to every node's builder.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

impl PeerNudge for LocalPeers {
    fn nudge(&self, node: &str, partition: u32) {
        let n = self.nodes.lock().ok().and_then(|m| m.get(node).cloned());
        if let Some(n) = n {
            n.nudge(partition);
        }
    }

    fn delivers(&self) -> bool {
        true
    }

    fn attach(&self, node: &str, local: LocalNudge) {
        if let Ok(mut m) = self.nodes.lock() {
            m.insert(node.to_string(), local);
        }
    }
}

pub(crate) fn local_nudge(shared: &Arc<Shared>) -> LocalNudge {
    LocalNudge(Arc::downgrade(shared))
}

/// A node as seen in the membership records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// The node's name.
    pub name: String,
    /// Its HTTP address (empty: unknown).
    pub http_address: String,
    /// Its cluster transport address (empty: none).
    pub cluster_address: String,
    /// Its software version.
    pub version: String,
    /// When it joined (ms since the Unix epoch).
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub last_seen: Timestamp,
    /// Whether its heartbeat is fresh.
    pub live: bool,
    /// Whether it is handing its partitions off.
    pub leaving: bool,
    /// Partitions whose lease it holds.
    pub partitions: usize,
}

/// One row of the partition table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionView {
    /// The partition.
    pub partition: u32,
    /// The lease holder (`None`: never acquired, or released and not yet taken).
    pub owner: Option<String>,
    /// The lease epoch.
    pub epoch: u64,
    /// When the owner acquired it.
    pub since: Option<Timestamp>,
    /// When the lease expires unless renewed.
    pub expires_at: Option<Timestamp>,
    /// The desired owner by placement over the live nodes.
    pub desired: Option<String>,
}

/// What a node knows of the cluster, as of its last heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// Whether the node can serve (`None`) or why not.
    pub not_ready: Option<String>,
    /// Partitions this node runs.
    pub owned: Vec<u32>,
    /// Every node record.
    pub nodes: Vec<NodeView>,
    /// The partition table.
    pub partitions: Vec<PartitionView>,
}

impl ClusterView {
    /// The names of the live nodes (not leaving).
    pub fn live_nodes(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.live && !n.leaving)
            .map(|n| n.name.as_str())
            .collect()
    }
}
