//! The trace context stored with an instance: the W3C `traceparent` its start came with (the
//! start request's span), parent of the instance's orchestration spans
//! ([`crate::telemetry`]). Written by the start, removed by the purge; a sub-orchestration
//! has none of its own and is found under its parent's orchestration span.

use perdure_core::{InstanceId, ParentInstance};

use super::keys::Key;
use super::{clear as clear_value, get, instances, put, space};
use crate::store::{StoreError, Transaction};
use crate::telemetry::{TraceParent, orchestration_span_id};

/// Parents followed up from a sub-orchestration at most.
const MAX_DEPTH: usize = 16;

/// The key of an instance's trace context.
pub fn key(id: &InstanceId) -> Vec<u8> {
    Key::new().str(space::TRACE).str(id.as_str()).into_bytes()
}

/// Stores the trace context of an instance's start.
pub fn save(tx: &mut dyn Transaction, id: &InstanceId, tp: &TraceParent) -> Result<(), StoreError> {
    put(tx, &key(id), &tp.to_string())
}

/// Removes an instance's trace context.
pub fn clear(tx: &mut dyn Transaction, id: &InstanceId) {
    clear_value(tx, &key(id));
}

/// The stored trace context of an instance (one that does not parse is ignored).
pub async fn load(
    tx: &mut dyn Transaction,
    id: &InstanceId,
) -> Result<Option<TraceParent>, StoreError> {
    Ok(get::<String>(tx, &key(id))
        .await?
        .and_then(|s| TraceParent::parse(&s)))
}

/// The parent of an instance's orchestration spans: its own stored context, or, for a
/// sub-orchestration (`parent`), its parent's orchestration span in the trace found up the
/// chain of parents. `None` when no instance of the chain has a context.
pub async fn resolve(
    tx: &mut dyn Transaction,
    id: &InstanceId,
    parent: Option<&ParentInstance>,
) -> Result<Option<TraceParent>, StoreError> {
    if let Some(tp) = load(tx, id).await? {
        return Ok(Some(tp));
    }
    match parent {
        Some(first) => from_parents(tx, first).await,
        None => Ok(None),
    }
}

/// The parent's orchestration span in the trace found up the chain of parents from `first`.
async fn from_parents(
    tx: &mut dyn Transaction,
    first: &ParentInstance,
) -> Result<Option<TraceParent>, StoreError> {
    let span = orchestration_span_id(first.instance_id.as_str(), first.execution_id.0.as_str());
    let mut next = Some(first.instance_id.clone());
    for _ in 0..MAX_DEPTH {
        let Some(up) = next.take() else {
            break;
        };
        if let Some(tp) = load(tx, &up).await? {
            return Ok(Some(tp.with_span(span)));
        }
        next = instances::load(tx, &up)
            .await?
            .and_then(|r| r.parent)
            .map(|p| p.instance_id);
    }
    Ok(None)
}

/// [`resolve`] for an instance known by id only (an activity's): reads its record for the
/// parent when it has no context of its own.
pub async fn resolve_instance(
    tx: &mut dyn Transaction,
    id: &InstanceId,
) -> Result<Option<TraceParent>, StoreError> {
    if let Some(tp) = load(tx, id).await? {
        return Ok(Some(tp));
    }
    let parent = instances::load(tx, id).await?.and_then(|r| r.parent);
    match parent {
        Some(p) => from_parents(tx, &p).await,
        None => Ok(None),
    }
}
