//! Typed handles: orchestrations, activities and entities known by type, so that a call's
//! name, input and output are checked by the compiler.
//!
//! The attribute macros [`activity`](macro@crate::activity),
//! [`orchestration`](macro@crate::orchestration) and [`entity`](macro@crate::entity) write
//! these impls; nothing stops you from writing them by hand. String-named calls
//! (`ctx.call_activity::<T>("Name", input)`) keep working beside them, for functions written
//! in other languages.
//!
//! ```
//! use std::sync::Arc;
//! use perdure_core::{activity, orchestration, ActivityContext, OrchestrationContext, Registry, TaskError};
//! use perdure_core::testing::OrchestrationTester;
//!
//! #[activity(name = "SayHello")]
//! async fn say_hello(city: String) -> Result<String, String> {
//!     Ok(format!("Hello {city}!"))
//! }
//!
//! #[orchestration]
//! async fn greet(ctx: OrchestrationContext, cities: Vec<String>) -> Result<Vec<String>, TaskError> {
//!     let mut out = Vec::new();
//!     for city in cities {
//!         // Input `String` and output `String` come from `say_hello`'s signature.
//!         out.push(ctx.call(say_hello, city).await?);
//!     }
//!     Ok(out)
//! }
//!
//! let mut registry = Registry::new();
//! registry.register(say_hello).register(greet);
//! let mut tester = OrchestrationTester::new(Arc::new(registry));
//! let run = tester.run("greet", &vec!["Tokyo".to_string(), "Oslo".to_string()]);
//! assert_eq!(run.output::<Vec<String>>().unwrap(), ["Hello Tokyo!", "Hello Oslo!"]);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::entity::Entity;
use crate::orchestration::{
    DurableTask, OrchestrationContext, SubOrchestrationOptions, TaskError, TaskFuture, TaskKind,
};
use crate::{EntityId, Registry, RetryPolicy};

/// Whether a [`DurableFunction`] is an activity or an orchestration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionKind {
    /// Called with `ScheduleTask`, runs once per attempt, may do I/O.
    Activity,
    /// Called as a sub-orchestration, replayed.
    Orchestration,
}

/// An activity or orchestration known by type: a zero-sized handle type named after the
/// function (`say_hello` -> `SayHelloActivity`), written by [`activity`](macro@crate::activity)
/// and [`orchestration`](macro@crate::orchestration). The attribute keeps a function with the
/// original name that returns the handle, and that function is what calls take
/// (`ctx.call(say_hello, city)`): a `let say_hello = ...` may shadow it, as with any `fn`.
pub trait DurableFunction: Copy + Send + Sync + 'static {
    /// The registered name (the function's name unless the attribute says otherwise).
    const NAME: &'static str;
    /// The registered version of an orchestration (`None`: unversioned).
    const VERSION: Option<&'static str> = None;
    /// Activity or orchestration.
    const KIND: FunctionKind;
    /// The input, serialized as JSON.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// The output of a successful run, serialized as JSON.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Adds the function to a registry under [`Self::NAME`].
    fn register(self, registry: &mut Registry);
}

/// Marks the handles of orchestrations (what a client may start).
pub trait OrchestrationHandle: DurableFunction {}

impl Registry {
    /// Registers a typed function under its own name: pass the function written with
    /// [`activity`](macro@crate::activity) or [`orchestration`](macro@crate::orchestration)
    /// (`registry.register(say_hello)`).
    pub fn register<F: DurableFunction>(&mut self, function: impl FnOnce() -> F) -> &mut Self {
        function().register(self);
        self
    }

    /// Registers an entity type written with [`entity`](macro@crate::entity) under its own
    /// name.
    pub fn register_entity<E: EntityInterface>(&mut self) -> &mut Self {
        self.add_entity_type::<E>(E::NAME)
    }
}

impl OrchestrationContext {
    /// Calls an activity, or an orchestration as a sub-orchestration, by its handle: the input
    /// and output types come from the function's signature.
    pub fn call<F: DurableFunction>(
        &self,
        function: impl FnOnce() -> F,
        input: impl Into<F::Input>,
    ) -> TaskFuture<Result<F::Output, TaskError>> {
        let _ = function;
        let input = input.into();
        match F::KIND {
            FunctionKind::Activity => Box::pin(self.call_activity(F::NAME, &input)),
            FunctionKind::Orchestration => self.call_sub_orchestration_with_options(
                F::NAME,
                &input,
                SubOrchestrationOptions {
                    version: F::VERSION.map(str::to_string),
                    ..SubOrchestrationOptions::default()
                },
            ),
        }
    }

    /// [`call`](Self::call), retried under `policy` when it fails (each retry waits on a
    /// durable timer; a sub-orchestration is retried with the same child instance id).
    pub fn call_with_retry<F: DurableFunction>(
        &self,
        function: impl FnOnce() -> F,
        policy: RetryPolicy,
        input: impl Into<F::Input>,
    ) -> TaskFuture<Result<F::Output, TaskError>> {
        let _ = function;
        let input = input.into();
        match F::KIND {
            FunctionKind::Activity => self.call_activity_with_retry(F::NAME, policy, &input),
            FunctionKind::Orchestration => self.call_sub_orchestration_with_options(
                F::NAME,
                &input,
                SubOrchestrationOptions {
                    version: F::VERSION.map(str::to_string),
                    retry: Some(policy),
                    ..SubOrchestrationOptions::default()
                },
            ),
        }
    }

    /// Calls an orchestration as a sub-orchestration with an explicit child id, version or
    /// retry policy (an activity handle ignores the id and version and keeps the policy).
    pub fn call_with_options<F: DurableFunction>(
        &self,
        function: impl FnOnce() -> F,
        options: SubOrchestrationOptions,
        input: impl Into<F::Input>,
    ) -> TaskFuture<Result<F::Output, TaskError>> {
        match (F::KIND, options.retry.clone()) {
            (FunctionKind::Activity, Some(policy)) => self.call_with_retry(function, policy, input),
            (FunctionKind::Activity, None) => self.call(function, input),
            (FunctionKind::Orchestration, _) => {
                let mut options = options;
                if options.version.is_none() {
                    options.version = F::VERSION.map(str::to_string);
                }
                self.call_sub_orchestration_with_options(F::NAME, input.into(), options)
            }
        }
    }

    /// A typed proxy on an entity: `ctx.entity::<Counter>("c1").add(5)` calls the operation
    /// and waits for its result; `ctx.entity::<Counter>("c1").signal().add(5)` signals it.
    pub fn entity<E: EntityInterface>(&self, key: impl Into<String>) -> E::Proxy<EntityCall> {
        E::Proxy::from(EntityCall {
            ctx: self.clone(),
            entity: E::entity_id(key),
        })
    }
}

/// An entity type whose operations are its methods, written by
/// [`entity`](macro@crate::entity): the name it is registered under, and its typed proxy.
pub trait EntityInterface: Entity {
    /// The registered entity name (case-insensitive).
    const NAME: &'static str;
    /// The operations as methods over any [`EntityTarget`]: calls and signals from an
    /// orchestration, signals from the client.
    type Proxy<T: EntityTarget>: From<T>;

    /// The id of this entity with `key` (an invalid key is reported when the proxy is used).
    fn entity_id(key: impl Into<String>) -> Result<EntityId, crate::IdError> {
        EntityId::new(Self::NAME, key)
    }
}

/// What a typed entity proxy sends its operations to. `Call<R>` is what an operation whose
/// result is `R` returns through this target.
pub trait EntityTarget: Sized {
    /// The value an operation returns through this target.
    type Call<R: DeserializeOwned + Send + 'static>;
    /// The one-way form of this target.
    type Signal: EntityTarget;
    /// Sends operation `operation` with `input`.
    fn operation<I: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        operation: &'static str,
        input: &I,
    ) -> Self::Call<R>;
    /// The one-way form of this target.
    fn signal(&self) -> Self::Signal;
}

/// Entity operations called from an orchestration: each returns a durable task with the
/// operation's result.
#[derive(Clone, Debug)]
pub struct EntityCall {
    ctx: OrchestrationContext,
    entity: Result<EntityId, crate::IdError>,
}

impl EntityTarget for EntityCall {
    type Call<R: DeserializeOwned + Send + 'static> = DurableTask<Result<R, TaskError>>;
    type Signal = EntitySignal;

    fn operation<I: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        operation: &'static str,
        input: &I,
    ) -> Self::Call<R> {
        match &self.entity {
            Ok(entity) => self.ctx.call_entity(entity, operation, input),
            Err(e) => self.ctx.ready(Err(TaskError::Encode {
                kind: TaskKind::EntityCall,
                name: operation.to_string(),
                message: e.to_string(),
            })),
        }
    }

    fn signal(&self) -> EntitySignal {
        EntitySignal {
            ctx: self.ctx.clone(),
            entity: self.entity.clone(),
        }
    }
}

/// Entity operations signalled (one-way) from an orchestration: each returns whether the
/// signal could be scheduled.
#[derive(Clone, Debug)]
pub struct EntitySignal {
    ctx: OrchestrationContext,
    entity: Result<EntityId, crate::IdError>,
}

impl EntityTarget for EntitySignal {
    type Call<R: DeserializeOwned + Send + 'static> = Result<(), TaskError>;
    type Signal = EntitySignal;

    fn operation<I: Serialize, R: DeserializeOwned + Send + 'static>(
        &self,
        operation: &'static str,
        input: &I,
    ) -> Self::Call<R> {
        match &self.entity {
            Ok(entity) => self.ctx.signal_entity(entity, operation, input),
            Err(e) => Err(TaskError::Encode {
                kind: TaskKind::EntityCall,
                name: operation.to_string(),
                message: e.to_string(),
            }),
        }
    }

    fn signal(&self) -> EntitySignal {
        self.clone()
    }
}

/// The future type of a typed call (a boxed durable task), named for signatures.
pub type CallFuture<O> = TaskFuture<Result<O, TaskError>>;
