//! The erased function types stored in the registry, and the wrappers that build them.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::activity::ActivityContext;
use crate::entity::{EntityBatchResult, EntityContext, OperationRequest};
use crate::failure::IntoFailureDetails;
use crate::orchestration::task::{decode_payload, encode_payload};
use crate::orchestration::{OrchestrationContext, TaskFuture};
use crate::panic::panic_failure;
use crate::{EntityId, FailureDetails, Payload};

/// An orchestrator, erased: context and input payload in, a future of the output payload out.
pub type OrchestratorFn = Arc<
    dyn Fn(
            OrchestrationContext,
            Option<Payload>,
        ) -> TaskFuture<Result<Option<Payload>, FailureDetails>>
        + Send
        + Sync,
>;

/// An activity, erased. Run it with [`execute_activity`], which also catches panics.
pub type ActivityFn = Arc<
    dyn Fn(ActivityContext, Option<Payload>) -> TaskFuture<Result<Option<Payload>, FailureDetails>>
        + Send
        + Sync,
>;

/// An entity, erased: runs a batch of operations over a state. Use
/// [`crate::entity::execute_entity_batch_async`] (or the blocking
/// [`crate::entity::execute_entity_batch`]).
pub type EntityFn = Arc<
    dyn Fn(&EntityId, Option<Payload>, Vec<OperationRequest>) -> TaskFuture<EntityBatchResult>
        + Send
        + Sync,
>;

/// One operation of an entity over its context, as a future (a synchronous operation is a
/// ready future).
pub type OperationFn<S> = dyn for<'a> Fn(
        &'a mut EntityContext<S>,
    ) -> futures::future::BoxFuture<'a, Result<Option<Payload>, FailureDetails>>
    + Send
    + Sync;

fn decode_error(what: String, type_name: &str, message: String) -> FailureDetails {
    FailureDetails::new(
        "PayloadDecodeError",
        format!("{what} does not match type {type_name}: {message}"),
    )
}

fn encode_output<O: Serialize>(what: &str, value: &O) -> Result<Option<Payload>, FailureDetails> {
    encode_payload(value).map_err(|message| {
        FailureDetails::new(
            "PayloadEncodeError",
            format!("{what}: output cannot be encoded: {message}"),
        )
    })
}

pub(super) fn orchestrator_fn<I, O, E, F, Fut>(name: String, f: F) -> OrchestratorFn
where
    F: Fn(OrchestrationContext, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    I: DeserializeOwned,
    O: Serialize,
    E: IntoFailureDetails,
{
    Arc::new(move |ctx: OrchestrationContext, input: Option<Payload>| {
        let input: I = match decode_payload(input.as_ref()) {
            Ok(i) => i,
            Err(message) => {
                let what = format!(
                    "instance {}: input of orchestration '{name}' (event ExecutionStarted)",
                    ctx.instance_id()
                );
                let failure = decode_error(what, std::any::type_name::<I>(), message);
                return Box::pin(async move { Err(failure) });
            }
        };
        let what = format!("orchestration '{name}'");
        let fut = f(ctx, input);
        Box::pin(async move {
            match fut.await {
                Ok(out) => encode_output(&what, &out),
                Err(e) => Err(e.into_failure_details()),
            }
        })
    })
}

pub(super) fn activity_fn<I, O, E, F, Fut>(name: String, f: F) -> ActivityFn
where
    F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    I: DeserializeOwned,
    O: Serialize,
    E: IntoFailureDetails,
{
    Arc::new(move |ctx: ActivityContext, input: Option<Payload>| {
        let input: I = match decode_payload(input.as_ref()) {
            Ok(i) => i,
            Err(message) => {
                let what = format!(
                    "instance {}: input of activity '{name}' (task {})",
                    ctx.instance_id(),
                    ctx.task_id()
                );
                let failure = decode_error(what, std::any::type_name::<I>(), message);
                return Box::pin(async move { Err(failure) });
            }
        };
        let what = format!("activity '{name}'");
        let fut = f(ctx, input);
        Box::pin(async move {
            match fut.await {
                Ok(out) => encode_output(&what, &out),
                Err(e) => Err(e.into_failure_details()),
            }
        })
    })
}

/// Runs an activity: a bad input and a panic (when called or while running) both become
/// [`FailureDetails`], never an unwind into the caller.
pub fn execute_activity(
    f: &ActivityFn,
    ctx: ActivityContext,
    input: Option<Payload>,
) -> TaskFuture<Result<Option<Payload>, FailureDetails>> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| f(ctx, input))) {
        Err(p) => {
            let failure = panic_failure(p);
            Box::pin(async move { Err(failure) })
        }
        Ok(fut) => Box::pin(
            AssertUnwindSafe(fut)
                .catch_unwind()
                .map(|r| r.unwrap_or_else(|p| Err(panic_failure(p)))),
        ),
    }
}

pub(super) fn entity_fn<S, F>(f: F) -> EntityFn
where
    S: Serialize + DeserializeOwned + Send + 'static,
    F: Fn(&mut EntityContext<S>) -> Result<Option<Payload>, FailureDetails> + Send + Sync + 'static,
{
    async_entity_fn(Arc::new(move |ctx: &mut EntityContext<S>| {
        Box::pin(std::future::ready(f(ctx))) as futures::future::BoxFuture<'_, _>
    }))
}

pub(super) fn async_entity_fn<S>(f: Arc<OperationFn<S>>) -> EntityFn
where
    S: Serialize + DeserializeOwned + Send + 'static,
{
    Arc::new(
        move |id: &EntityId, state: Option<Payload>, ops: Vec<OperationRequest>| {
            let f = f.clone();
            let id = id.clone();
            Box::pin(async move { crate::entity::run_batch(&id, state, ops, &*f).await })
        },
    )
}

/// Encodes an operation's typed result.
pub(super) fn encode_operation_output<R: Serialize>(
    value: &R,
) -> Result<Option<Payload>, FailureDetails> {
    encode_payload(value).map_err(|message| {
        FailureDetails::new(
            "PayloadEncodeError",
            format!("operation result cannot be encoded: {message}"),
        )
    })
}
