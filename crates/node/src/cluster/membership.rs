//! Joining the membership: a node name is unique among live nodes. A fresh record of the
//! same name whose heartbeats keep coming is a live duplicate (the start fails); one whose
//! heartbeats stopped is this node's crashed predecessor (the start waits until it expires).

use std::sync::Arc;

use crate::runtime::Shared;
use crate::state::members;
use crate::state::records::NodeRecord;
use crate::store::{StoreError, transact};

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Another live process uses the name.
    #[error(
        "node name {name:?} is in use by a live node (HTTP address {http_address:?}, last heartbeat {age_ms} ms ago): give this node another name (cluster.name, PERDURE_CLUSTER_NAME or --node-name)"
    )]
    NameInUse {
        /// The name.
        name: String,
        /// The other node's HTTP address.
        http_address: String,
        /// How old its last heartbeat was.
        age_ms: u64,
    },
    /// The store failed.
    #[error("store error while joining the cluster")]
    Store(#[from] StoreError),
}

/// This process's membership record at a point in time.
pub(crate) fn record(shared: &Shared, started_at: perdure_core::Timestamp) -> NodeRecord {
    let c = &shared.opts.cluster;
    NodeRecord {
        name: c.name.clone(),
        incarnation: shared.node_id,
        cluster_address: c.cluster_address.clone().unwrap_or_default(),
        http_address: c.http_address.clone().unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        last_seen: started_at,
        beats: 0,
        leaving: false,
    }
}

/// Writes this node's first heartbeat, after making sure the name is not in use.
pub(crate) async fn join(shared: &Arc<Shared>) -> Result<NodeRecord, JoinError> {
    let name = shared.opts.cluster.name.clone();
    let ttl = shared.opts.cluster.lease_ttl;
    let beat = shared.opts.cluster.heartbeat_interval;
    // A predecessor seen as silent: (incarnation, beats) of its record.
    let mut silent: Option<(u64, u64)> = None;
    loop {
        let now = shared.clock.now();
        let me = record(shared, now);
        let n = name.clone();
        let ok_dead = silent;
        // Joins unless a fresh record of another process is there (that is not the silent
        // predecessor observed before): then returns it.
        let other = transact(shared.store.as_ref(), &shared.retry, move |tx| {
            let me = me.clone();
            let n = n.clone();
            Box::pin(async move {
                match members::read(tx, &n).await? {
                    Some(r)
                        if members::is_fresh(&r, now, ttl)
                            && ok_dead != Some((r.incarnation, r.beats)) =>
                    {
                        Ok(Some(r))
                    }
                    Some(r) if members::is_fresh(&r, now, ttl) => Ok(Some(r)),
                    _ => {
                        members::write(tx, &me)?;
                        Ok(None)
                    }
                }
            })
        })
        .await?;
        let Some(r) = other else {
            return Ok(record(shared, now));
        };
        if silent == Some((r.incarnation, r.beats)) {
            // The silent predecessor's record is still fresh: wait for it to expire.
            let left = r.last_seen.add(ttl).since(now);
            tokio::time::sleep(left + std::time::Duration::from_millis(10)).await;
            continue;
        }
        // Watch for a heartbeat: a live process writes one every interval.
        tokio::time::sleep(beat.saturating_mul(2) + beat / 2).await;
        let n = name.clone();
        let again = transact(shared.store.as_ref(), &shared.retry, move |tx| {
            let n = n.clone();
            Box::pin(async move { members::read(tx, &n).await })
        })
        .await?;
        match again {
            Some(a) if a.incarnation != r.incarnation || a.beats != r.beats => {
                let now = shared.clock.now();
                if members::is_fresh(&a, now, ttl) && !a.leaving {
                    return Err(JoinError::NameInUse {
                        name,
                        http_address: a.http_address,
                        age_ms: now.since(a.last_seen).as_millis() as u64,
                    });
                }
                // It left or expired meanwhile: try again.
            }
            Some(a) => {
                let wait = a.last_seen.add(ttl).since(shared.clock.now());
                tracing::warn!(
                    node = %name,
                    wait_ms = wait.as_millis() as u64,
                    "a previous process of this node stopped sending heartbeats (it probably crashed): waiting until its heartbeat expires before starting"
                );
                silent = Some((a.incarnation, a.beats));
            }
            None => {}
        }
    }
}
