//! Node configuration: [`NodeOptions`], with defaults and [`NodeOptions::validate`].

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Options of a node's runtime. Durations are written with units in files (`"30s"` is not
/// parsed here: serde reads them as `{ secs, nanos }`; the configuration loader converts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeOptions {
    /// Partitions written to the store at first initialisation (later starts read the store's).
    pub partitions: NonZeroU32,
    /// Activities run at the same time on this node.
    pub max_concurrent_activities: NonZeroUsize,
    /// Activity tasks waiting for a worker before new ones are refused.
    pub activity_queue_bound: NonZeroUsize,
    /// How long an activity task is leased to a worker before another may run it.
    pub activity_lease: Duration,
    /// An instance idle this long leaves memory (its state stays in the store).
    pub idle_passivation: Duration,
    /// At most this many instances (and entities) are kept in memory per partition.
    pub max_active_per_partition: NonZeroUsize,
    /// Messages waiting in a partition actor's mailbox before new starts are refused.
    pub partition_queue_bound: NonZeroUsize,
    /// The largest payload (input, event data, output) accepted, in bytes.
    pub max_payload_bytes: NonZeroUsize,
    /// Inbox messages read per batch during recovery.
    pub recovery_batch: NonZeroUsize,
    /// An episode with more history events plus effects than this commits in stages, each
    /// transaction holding at most this many (see docs/runtime.md, "Episodes larger than one
    /// transaction"); episodes over the store's transaction limit are staged too.
    pub staged_commit_items: NonZeroUsize,
    /// Cluster membership and partition ownership.
    pub cluster: ClusterOptions,
    /// Whether spans are exported (`telemetry.otlp_endpoint`): the runtime then reads each
    /// instance's stored trace context to parent its spans (`crate::telemetry`).
    pub traces: bool,
}

/// The `cluster` section: this node's identity and the timing of membership and leases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterOptions {
    /// This node's name, unique among live nodes (the lease owner). Default: the host name,
    /// so containers get distinct names without configuration.
    pub name: String,
    /// How long a partition lease and a membership heartbeat last without renewal: a node
    /// that stops renewing counts as dead after this long and its partitions move.
    pub lease_ttl: Duration,
    /// How often the node writes its heartbeat and reconsiders which partitions it holds.
    pub heartbeat_interval: Duration,
    /// At most this many partitions are handed off per heartbeat (moves are rate-limited).
    pub max_moves_per_tick: NonZeroUsize,
    /// The HTTP address peers and clients may use (written in the heartbeat record).
    pub http_address: Option<String>,
    /// The cluster transport address peers dial (written in the heartbeat record; None: no
    /// transport).
    pub cluster_address: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            name: default_node_name(),
            lease_ttl: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            max_moves_per_tick: NonZeroUsize::new(128).unwrap_or(NonZeroUsize::MIN),
            http_address: None,
            cluster_address: None,
        }
    }
}

/// The default node name: the host name (`HOSTNAME`, else the kernel's), else `node-1`.
pub fn default_node_name() -> String {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_kernel = || {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
    };
    from_env
        .or_else(from_kernel)
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node-1".to_string())
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            partitions: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
            max_concurrent_activities: NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN),
            activity_queue_bound: NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN),
            activity_lease: Duration::from_secs(300),
            idle_passivation: Duration::from_secs(60),
            max_active_per_partition: NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            partition_queue_bound: NonZeroUsize::new(50_000).unwrap_or(NonZeroUsize::MIN),
            max_payload_bytes: NonZeroUsize::new(1 << 20).unwrap_or(NonZeroUsize::MIN),
            recovery_batch: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
            staged_commit_items: NonZeroUsize::new(5000).unwrap_or(NonZeroUsize::MIN),
            cluster: ClusterOptions::default(),
            traces: false,
        }
    }
}

/// A bad option value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid option {field}: {reason}")]
pub struct OptionsError {
    /// The field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl NodeOptions {
    /// Checks values that the types do not rule out.
    ///
    /// ```
    /// let mut o = perdure_node::options::NodeOptions::default();
    /// assert!(o.validate().is_ok());
    /// o.activity_lease = std::time::Duration::ZERO;
    /// assert_eq!(o.validate().unwrap_err().field, "activity_lease");
    /// ```
    pub fn validate(&self) -> Result<(), OptionsError> {
        let bad = |field, reason: &str| {
            Err(OptionsError {
                field,
                reason: reason.to_string(),
            })
        };
        if self.partitions.get() > 65_536 {
            return bad("partitions", "at most 65536");
        }
        if self.activity_lease < Duration::from_secs(1) {
            return bad("activity_lease", "must be at least 1s");
        }
        if self.cluster.lease_ttl < Duration::from_millis(300) {
            return bad("cluster.lease_ttl", "must be at least 300ms");
        }
        if self.cluster.heartbeat_interval < Duration::from_millis(10)
            || self.cluster.heartbeat_interval.saturating_mul(3) > self.cluster.lease_ttl
        {
            return bad(
                "cluster.heartbeat_interval",
                "must be at least 10ms and at most a third of cluster.lease_ttl",
            );
        }
        if self.idle_passivation.is_zero() {
            return bad("idle_passivation", "must be more than zero");
        }
        if self.max_payload_bytes.get() > 8 * 1024 * 1024 {
            return bad(
                "max_payload_bytes",
                "must be at most 8 MiB (the store's transaction limit is 10 MB)",
            );
        }
        if self.cluster.name.is_empty()
            || self.cluster.name.len() > 128
            || self.cluster.name.chars().any(char::is_control)
        {
            return bad(
                "cluster.name",
                "must be 1 to 128 characters, no control characters",
            );
        }
        Ok(())
    }
}
