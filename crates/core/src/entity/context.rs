//! [`EntityContext`]: what an entity operation sees and does.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::entity::EntityAction;
use crate::orchestration::task::{decode_payload, encode_payload};
use crate::{EntityId, FailureDetails, InstanceId, Payload, Timestamp};

/// The context of one entity operation over a state of type `S`.
pub struct EntityContext<S> {
    pub(crate) id: EntityId,
    pub(crate) operation: String,
    pub(crate) input: Option<Payload>,
    pub(crate) state: Option<S>,
    pub(crate) actions: Vec<EntityAction>,
    pub(crate) guid_seed: String,
    pub(crate) guid_counter: u64,
    /// Set by `set_state` and `delete_state`: a typed operation (see `run_operation`) then
    /// keeps what the operation chose instead of the state it was given.
    pub(crate) state_replaced: bool,
}

impl<S> std::fmt::Debug for EntityContext<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityContext")
            .field("id", &self.id)
            .field("operation", &self.operation)
            .finish()
    }
}

/// An entity written as a type: its state is `Self`, and `dispatch` runs one operation.
/// Register it with [`crate::registry::Registry::add_entity_type`].
pub trait Entity: Serialize + DeserializeOwned + Default + Send + 'static {
    /// Runs the operation named by `ctx.operation_name()`.
    fn dispatch(ctx: &mut EntityContext<Self>) -> Result<Option<Payload>, FailureDetails>;

    /// Runs the operation as a future: what the node calls. The default runs
    /// [`dispatch`](Self::dispatch); an entity with `async` operations overrides it (the
    /// [`entity`](macro@crate::entity) macro does), and its `dispatch` blocks on it.
    fn dispatch_async(
        ctx: &mut EntityContext<Self>,
    ) -> BoxFuture<'_, Result<Option<Payload>, FailureDetails>> {
        Box::pin(std::future::ready(Self::dispatch(ctx)))
    }
}

/// Drives an entity's asynchronous dispatch to the end on this thread (the `dispatch` the
/// [`entity`](macro@crate::entity) macro writes for an entity with `async` operations).
#[doc(hidden)]
pub fn block_on_dispatch<T: Entity>(
    ctx: &mut EntityContext<T>,
) -> Result<Option<Payload>, FailureDetails> {
    let mut op = T::dispatch_async(ctx);
    match (&mut op).now_or_never() {
        Some(out) => out,
        None => futures::executor::block_on(op),
    }
}

impl<S> EntityContext<S> {
    /// This entity's id.
    pub fn entity_id(&self) -> &EntityId {
        &self.id
    }

    /// The operation's name.
    pub fn operation_name(&self) -> &str {
        &self.operation
    }

    /// The operation's input, decoded (a missing input is JSON `null`).
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, FailureDetails> {
        decode_payload(self.input.as_ref()).map_err(|message| {
            FailureDetails::new(
                "PayloadDecodeError",
                format!(
                    "entity {}: input of operation '{}' does not match type {}: {message}",
                    self.id,
                    self.operation,
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    /// The raw input payload.
    pub fn input_payload(&self) -> Option<&Payload> {
        self.input.as_ref()
    }

    /// Whether the entity has a state (it does not after `delete_state` or before the first
    /// `set_state`).
    pub fn has_state(&self) -> bool {
        self.state.is_some()
    }

    /// The state, if any.
    pub fn state(&self) -> Option<&S> {
        self.state.as_ref()
    }

    /// The state, mutably, if any.
    pub fn state_mut(&mut self) -> Option<&mut S> {
        self.state.as_mut()
    }

    /// The state, created with `Default` if there is none.
    pub fn state_or_default(&mut self) -> &mut S
    where
        S: Default,
    {
        self.state.get_or_insert_with(S::default)
    }

    /// Replaces the state.
    pub fn set_state(&mut self, state: S) {
        self.state = Some(state);
        self.state_replaced = true;
    }

    /// Deletes the state (the entity is deleted when the batch ends without a state).
    pub fn delete_state(&mut self) {
        self.state = None;
        self.state_replaced = true;
    }

    /// Runs a `&mut self` operation of an [`entity`](macro@crate::entity) type: the state
    /// (or its default) is lent to `op` beside the context, and kept afterwards unless the
    /// operation called `set_state` or `delete_state` on the context.
    #[doc(hidden)]
    pub fn run_operation<R>(&mut self, op: impl FnOnce(&mut S, &mut Self) -> R) -> R
    where
        S: Default,
    {
        let mut state = self.state.take().unwrap_or_default();
        self.state_replaced = false;
        let r = op(&mut state, self);
        if !self.state_replaced {
            self.state = Some(state);
        }
        r
    }

    /// [`run_operation`](Self::run_operation) for an `async` operation.
    #[doc(hidden)]
    pub async fn run_operation_async<R>(
        &mut self,
        op: impl for<'a> FnOnce(&'a mut S, &'a mut Self) -> BoxFuture<'a, R>,
    ) -> R
    where
        S: Default,
    {
        let mut state = self.state.take().unwrap_or_default();
        self.state_replaced = false;
        let r = op(&mut state, self).await;
        if !self.state_replaced {
            self.state = Some(state);
        }
        r
    }

    /// [`run_read_operation`](Self::run_read_operation) for an `async` operation.
    #[doc(hidden)]
    pub async fn run_read_operation_async<R>(
        &mut self,
        op: impl for<'a> FnOnce(&'a S, &'a mut Self) -> BoxFuture<'a, R>,
    ) -> R
    where
        S: Default,
    {
        let state = self.state.take();
        self.state_replaced = false;
        let default;
        let view = match &state {
            Some(s) => s,
            None => {
                default = S::default();
                &default
            }
        };
        let r = op(view, self).await;
        if !self.state_replaced {
            self.state = state;
        }
        r
    }

    /// Runs a `&self` operation of an [`entity`](macro@crate::entity) type: an entity
    /// without a state is read as its default, which is not stored.
    #[doc(hidden)]
    pub fn run_read_operation<R>(&mut self, op: impl FnOnce(&S, &mut Self) -> R) -> R
    where
        S: Default,
    {
        let state = self.state.take();
        self.state_replaced = false;
        let r = match &state {
            Some(s) => op(s, self),
            None => op(&S::default(), self),
        };
        if !self.state_replaced {
            self.state = state;
        }
        r
    }

    /// The failure to return for an operation name the entity does not know.
    pub fn unknown_operation(&self) -> FailureDetails {
        FailureDetails::new(
            "UnknownOperation",
            format!("entity {} has no operation '{}'", self.id, self.operation),
        )
    }

    /// Encodes a value as the operation's result (for the [`Entity`] form).
    pub fn output<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<Option<Payload>, FailureDetails> {
        encode_payload(value).map_err(|m| FailureDetails::new("PayloadEncodeError", m))
    }

    /// Signals an operation on another entity (or this one), one-way.
    pub fn signal_entity(
        &mut self,
        entity: &EntityId,
        operation: &str,
        input: impl Serialize,
    ) -> Result<(), FailureDetails> {
        self.signal_entity_at(entity, operation, input, None)
    }

    /// Signals an operation to be delivered no earlier than `scheduled_time`.
    pub fn signal_entity_at(
        &mut self,
        entity: &EntityId,
        operation: &str,
        input: impl Serialize,
        scheduled_time: Option<Timestamp>,
    ) -> Result<(), FailureDetails> {
        let input =
            encode_payload(&input).map_err(|m| FailureDetails::new("PayloadEncodeError", m))?;
        self.actions.push(EntityAction::SignalEntity {
            entity: entity.clone(),
            operation: operation.to_string(),
            input,
            scheduled_time,
        });
        Ok(())
    }

    /// Starts an orchestration and returns its instance id, a deterministic name-based
    /// UUID derived from the entity id, the operation's request id and a counter.
    pub fn start_orchestration(
        &mut self,
        name: &str,
        input: impl Serialize,
    ) -> Result<InstanceId, FailureDetails> {
        let id = InstanceId::new(self.new_guid())
            .map_err(|e| FailureDetails::new("InvalidInstanceId", e.to_string()))?;
        self.start_orchestration_with_id(name, None, id, input)
    }

    /// Starts an orchestration with an explicit instance id and version.
    pub fn start_orchestration_with_id(
        &mut self,
        name: &str,
        version: Option<String>,
        instance_id: InstanceId,
        input: impl Serialize,
    ) -> Result<InstanceId, FailureDetails> {
        let input =
            encode_payload(&input).map_err(|m| FailureDetails::new("PayloadEncodeError", m))?;
        self.actions.push(EntityAction::StartOrchestration {
            name: name.to_string(),
            version,
            instance_id: instance_id.clone(),
            input,
        });
        Ok(instance_id)
    }

    /// A deterministic name-based UUID (see [`EntityContext::start_orchestration`]).
    pub fn new_guid(&mut self) -> String {
        let name = format!("{}_{}", self.guid_seed, self.guid_counter);
        self.guid_counter += 1;
        crate::sha1::uuid_v5(&crate::sha1::URL_NAMESPACE, name.as_bytes())
    }
}
