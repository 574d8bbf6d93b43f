//! Executing a batch of entity operations.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::entity::EntityContext;
use crate::orchestration::task::{decode_payload, encode_payload};
use crate::panic::panic_failure;
use crate::registry::{OperationFn, Registry};
use crate::{EntityId, FailureDetails, InstanceId, Payload, Timestamp};

/// One operation to run on an entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRequest {
    /// The operation name.
    pub operation: String,
    /// Its input.
    pub input: Option<Payload>,
    /// A unique id for this request, chosen by the caller (for example the id of the message
    /// that carried it). It seeds the ids of orchestrations the operation starts, so a batch
    /// re-executed after a crash starts the same instances.
    pub request_id: String,
}

impl OperationRequest {
    /// A request with an empty request id (ids of started orchestrations then derive from
    /// the entity id and the position in the batch only).
    pub fn new(operation: impl Into<String>, input: Option<Payload>) -> Self {
        Self {
            operation: operation.into(),
            input,
            request_id: String::new(),
        }
    }

    /// Sets the request id.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = request_id.into();
        self
    }
}

/// How one operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationResult {
    /// It completed with this result.
    Completed(Option<Payload>),
    /// It failed; its state change and actions were rolled back.
    Failed(FailureDetails),
}

/// Something an entity operation asked for; the node performs it when it commits the batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntityAction {
    /// Signal an entity operation.
    SignalEntity {
        /// Target.
        entity: EntityId,
        /// Operation.
        operation: String,
        /// Input.
        input: Option<Payload>,
        /// Deliver no earlier than this.
        scheduled_time: Option<Timestamp>,
    },
    /// Start an orchestration.
    StartOrchestration {
        /// Orchestration name.
        name: String,
        /// Version.
        version: Option<String>,
        /// Its instance id.
        instance_id: InstanceId,
        /// Input.
        input: Option<Payload>,
    },
}

/// What a batch produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityBatchResult {
    /// The state after the batch; `None` means the entity is deleted.
    pub state: Option<Payload>,
    /// One result per operation, in order.
    pub results: Vec<OperationResult>,
    /// Actions of the successful operations, in order.
    pub actions: Vec<EntityAction>,
}

/// No entity with this name is registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no entity named '{name}' is registered")]
pub struct UnknownEntity {
    /// The entity name.
    pub name: String,
}

/// Runs a batch of operations on the entity `id` with its stored `state`.
///
/// Operations apply one at a time, in order; a failed operation (an error or a panic) rolls
/// back its own state change and actions and is reported as [`OperationResult::Failed`]. An
/// entity name that is not registered is an [`UnknownEntity`] error.
///
/// ```
/// use perdure_core::entity::{EntityContext, OperationRequest, OperationResult, execute_entity_batch};
/// use perdure_core::{EntityId, FailureDetails, Payload, Registry};
///
/// let mut registry = Registry::new();
/// registry.add_entity("Account", |ctx: &mut EntityContext<i64>| -> Result<i64, FailureDetails> {
///     let amount: i64 = ctx.input()?;
///     let balance = ctx.state_or_default();
///     *balance += amount;
///     if *balance < 0 {
///         // The change above is rolled back: the operation failed.
///         return Err(FailureDetails::new("Overdrawn", "not enough money"));
///     }
///     Ok(*balance)
/// });
/// let id = EntityId::new("Account", "alice").unwrap();
/// let op = |n: i64| OperationRequest::new("apply", Some(Payload::json(&n).unwrap()));
/// let out = execute_entity_batch(&registry, &id, None, vec![op(10), op(-50), op(-3)]).unwrap();
/// assert!(matches!(&out.results[1], OperationResult::Failed(f) if f.error_type == "Overdrawn"));
/// assert_eq!(out.state, Some(Payload::json(&7).unwrap()));
///
/// let unknown = EntityId::new("Nope", "x").unwrap();
/// assert!(execute_entity_batch(&registry, &unknown, None, vec![]).is_err());
/// ```
pub fn execute_entity_batch(
    registry: &Registry,
    id: &EntityId,
    state: Option<Payload>,
    ops: Vec<OperationRequest>,
) -> Result<EntityBatchResult, UnknownEntity> {
    let f = registry.entity(id.name()).ok_or_else(|| UnknownEntity {
        name: id.name().to_string(),
    })?;
    // Synchronous operations are ready futures, answered at the first poll (so this works
    // inside any executor); only a batch that really awaits is driven on this thread (the node
    // uses `execute_entity_batch_async`).
    let mut batch = f(id, state, ops);
    Ok(match (&mut batch).now_or_never() {
        Some(out) => out,
        None => futures::executor::block_on(batch),
    })
}

/// [`execute_entity_batch`] as a future: what the node runs, so that an `async` operation
/// (see [`crate::entity`](macro@crate::entity)) awaits on the node's runtime.
pub async fn execute_entity_batch_async(
    registry: &Registry,
    id: &EntityId,
    state: Option<Payload>,
    ops: Vec<OperationRequest>,
) -> Result<EntityBatchResult, UnknownEntity> {
    let f = registry.entity(id.name()).ok_or_else(|| UnknownEntity {
        name: id.name().to_string(),
    })?;
    Ok(f(id, state, ops).await)
}

/// The typed batch loop behind every registered entity.
pub(crate) async fn run_batch<S>(
    id: &EntityId,
    state: Option<Payload>,
    ops: Vec<OperationRequest>,
    f: &OperationFn<S>,
) -> EntityBatchResult
where
    S: Serialize + DeserializeOwned + Send,
{
    let mut results = Vec::with_capacity(ops.len());
    let mut actions = Vec::new();
    let mut good = state;
    let mut current: Option<S> = match good.as_ref().map(|p| decode_payload::<S>(Some(p))) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(message)) => {
            let failure = FailureDetails::new(
                "PayloadDecodeError",
                format!(
                    "entity {id}: stored state does not match type {}: {message}",
                    std::any::type_name::<S>()
                ),
            );
            let results = ops
                .iter()
                .map(|_| OperationResult::Failed(failure.clone()))
                .collect();
            return EntityBatchResult {
                state: good,
                results,
                actions,
            };
        }
    };
    for (index, op) in ops.into_iter().enumerate() {
        let mut ctx = EntityContext {
            id: id.clone(),
            operation: op.operation,
            input: op.input,
            state: current.take(),
            actions: Vec::new(),
            guid_seed: format!("{id}_{}_{index}", op.request_id),
            guid_counter: 0,
            state_replaced: false,
        };
        // A panic while the operation is called or polled fails that operation only.
        let outcome = AssertUnwindSafe(async { f(&mut ctx).await })
            .catch_unwind()
            .await
            .unwrap_or_else(|p| Err(panic_failure(p)));
        let outcome = outcome.and_then(|out| {
            let encoded = match &ctx.state {
                None => Ok(None),
                Some(s) => encode_payload(s).map_err(|m| {
                    FailureDetails::new(
                        "PayloadEncodeError",
                        format!("entity {id}: state cannot be encoded: {m}"),
                    )
                }),
            };
            encoded.map(|state| (out, state))
        });
        match outcome {
            Ok((out, state)) => {
                // JSON null state counts as a state holding null, not a deletion.
                good = match (&ctx.state, state) {
                    (Some(_), None) => Payload::json(&()).ok(),
                    (_, s) => s,
                };
                current = ctx.state;
                actions.append(&mut ctx.actions);
                results.push(OperationResult::Completed(out));
            }
            Err(failure) => {
                current = good
                    .as_ref()
                    .and_then(|p| decode_payload::<S>(Some(p)).ok());
                results.push(OperationResult::Failed(failure));
            }
        }
    }
    EntityBatchResult {
        state: good,
        results,
        actions,
    }
}
