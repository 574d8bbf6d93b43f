//! # perdure-core
//!
//! The Durable Functions programming model for Rust, as pure code: identifiers, payloads,
//! history events, orchestrator actions, the replay engine, the orchestration / activity /
//! entity contexts, the function registry and a test harness. No I/O, no clocks, no
//! randomness, no async runtime: the node (`perdure-node`) performs the effects.
//!
//! ```
//! use std::sync::Arc;
//! use perdure_core::{ActivityContext, OrchestrationContext, Registry, TaskError};
//! use perdure_core::testing::OrchestrationTester;
//!
//! async fn hello_cities(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, TaskError> {
//!     let mut out = Vec::new();
//!     for city in ["Tokyo", "Seattle", "London"] {
//!         out.push(ctx.call_activity("SayHello", city).await?);
//!     }
//!     Ok(out)
//! }
//!
//! let mut registry = Registry::new();
//! registry
//!     .add_orchestration("HelloCities", hello_cities)
//!     .add_activity("SayHello", |_ctx: ActivityContext, city: String| async move {
//!         Ok::<_, String>(format!("Hello {city}!"))
//!     });
//! let run = OrchestrationTester::new(Arc::new(registry)).run("HelloCities", &());
//! assert_eq!(run.output::<Vec<String>>().unwrap()[0], "Hello Tokyo!");
//! ```
//!
//! Main entry points: [`Registry`], [`OrchestrationContext`], [`OrchestrationExecutor`]
//! (the replay engine), [`entity::execute_entity_batch`], [`rewind`], [`testing`].
#![deny(missing_docs)]

// The attribute macros write `::perdure_core::...` paths; this makes them resolve in this
// crate's own tests too.
extern crate self as perdure_core;

pub mod action;
pub mod activity;
pub mod codec;
pub mod entity;
pub mod failure;
pub mod handles;
pub mod history;
pub mod ids;
pub mod iso8601;
pub mod management;
pub mod orchestration;
mod panic;
pub mod payload;
pub mod registry;
pub mod replay;
pub mod retry;
pub mod rewind;
mod sha1;
pub mod status;
pub mod testing;
pub mod time;

pub use action::OrchestratorAction;
pub use activity::ActivityContext;
pub use entity::{EntityContext, execute_entity_batch};
pub use failure::FailureDetails;
pub use failure::IntoFailureDetails;
pub use handles::{DurableFunction, EntityInterface};
pub use history::{EventKind, HistoryEvent, ParentInstance};
pub use ids::{EntityId, ExecutionId, IdError, InstanceId};
pub use orchestration::{DurableTask, OrchestrationContext, TaskError, when_all, when_any};
pub use payload::{Encoding, Payload, PayloadError};
/// The attribute macros: typed orchestrations, activities and entities (see [`handles`]).
pub use perdure_macros::{activity, entity, orchestration};
pub use registry::Registry;
pub use replay::{Episode, NonDeterminismError, OrchestrationExecutor, Outcome, ReplayError};
pub use retry::RetryPolicy;
pub use status::OrchestrationStatus;
pub use time::Timestamp;
