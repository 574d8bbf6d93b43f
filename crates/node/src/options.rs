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
    /// How long a partition lease lasts without renewal.
    pub partition_lease: Duration,
    /// Inbox messages read per batch during recovery.
    pub recovery_batch: NonZeroUsize,
    /// A human-readable name of this node (used as the lease owner).
    pub node_name: String,
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
            partition_lease: Duration::from_secs(30),
            recovery_batch: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
            node_name: "node-1".to_string(),
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
        if self.partition_lease < Duration::from_secs(1) {
            return bad("partition_lease", "must be at least 1s");
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
        if self.node_name.is_empty() {
            return bad("node_name", "must not be empty");
        }
        Ok(())
    }
}
