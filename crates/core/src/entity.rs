//! Durable entities: operations by name over a typed state, executed in batches.
//!
//! The node hands an entity's state and a batch of operations to [`execute_entity_batch`]
//! and commits what comes back. Operations apply one at a time, in order; a failed operation
//! (an error or a panic) rolls back its own state change and its own actions, and reports a
//! [`OperationResult::Failed`]; the others are unaffected.
//!
//! ```
//! use perdure_core::entity::{EntityContext, OperationRequest, OperationResult, execute_entity_batch};
//! use perdure_core::{EntityId, FailureDetails, Payload, registry::Registry};
//!
//! let mut registry = Registry::new();
//! registry.add_entity("Counter", |ctx: &mut EntityContext<i64>| -> Result<i64, FailureDetails> {
//!     match ctx.operation_name() {
//!         "add" => { let n: i64 = ctx.input()?; *ctx.state_or_default() += n; Ok(*ctx.state_or_default()) }
//!         "get" => Ok(ctx.state().copied().unwrap_or(0)),
//!         _ => Err(ctx.unknown_operation()),
//!     }
//! });
//! let id = EntityId::new("Counter", "c1").unwrap();
//! let ops = vec![
//!     OperationRequest::new("add", Some(Payload::json(&5).unwrap())),
//!     OperationRequest::new("oops", None),
//!     OperationRequest::new("get", None),
//! ];
//! let out = execute_entity_batch(&registry, &id, None, ops).unwrap();
//! assert!(matches!(out.results[1], OperationResult::Failed(_)));
//! assert_eq!(out.results[2], OperationResult::Completed(Some(Payload::json(&5).unwrap())));
//! assert_eq!(out.state, Some(Payload::json(&5).unwrap()));
//! ```

mod batch;
mod context;

pub(crate) use batch::run_batch;
pub use batch::{
    EntityAction, EntityBatchResult, OperationRequest, OperationResult, UnknownEntity,
    execute_entity_batch, execute_entity_batch_async,
};
pub use context::{Entity, EntityContext, block_on_dispatch};
