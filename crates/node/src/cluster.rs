//! The cluster: store-decided membership (heartbeat records), rendezvous placement of
//! partitions over live nodes, and the per-node partition manager that acquires, drains and
//! hands off partitions. See `docs/cluster.md`.

pub mod placement;
