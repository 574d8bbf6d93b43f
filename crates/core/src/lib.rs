//! # perdure-core
//!
//! The Durable Functions programming model for Rust, as pure code: identifiers, payloads,
//! history events, orchestrator actions, the replay engine, the orchestration / activity /
//! entity contexts, the function registry and a test harness. No I/O, no clocks, no
//! randomness, no async runtime: the node (`perdure-node`) performs the effects.
//!
//! ```
//! use perdure_core::{InstanceId, Payload};
//! let id = InstanceId::new("hello-1").unwrap();
//! let input = Payload::json(&"Tokyo").unwrap();
//! assert_eq!(input.as_json_str(), Some("\"Tokyo\""));
//! # let _ = id;
//! ```
#![deny(missing_docs)]

pub mod action;
pub mod activity;
pub mod codec;
pub mod entity;
pub mod failure;
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
pub use history::{EventKind, HistoryEvent, ParentInstance};
pub use ids::{EntityId, ExecutionId, IdError, InstanceId};
pub use orchestration::{DurableTask, OrchestrationContext, TaskError, when_all, when_any};
pub use payload::{Encoding, Payload, PayloadError};
pub use registry::Registry;
pub use replay::{Episode, NonDeterminismError, OrchestrationExecutor, Outcome, ReplayError};
pub use retry::RetryPolicy;
pub use status::OrchestrationStatus;
pub use time::Timestamp;
