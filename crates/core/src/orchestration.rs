//! The orchestration side of the programming model: [`OrchestrationContext`], durable tasks
//! and their combinators, entity calls and critical sections.
//!
//! An orchestrator is an `async fn(OrchestrationContext, I) -> Result<O, E>`. Every scheduling
//! call (activity, timer, sub-orchestration, entity operation, lock) takes the next sequence
//! number at the moment it is called, in program order, and records an
//! [`OrchestratorAction`](crate::OrchestratorAction); the replay engine matches these against
//! history.

mod combinators;
mod context;
pub(crate) mod entities;
mod logging;
mod retry;
pub(crate) mod state;
pub(crate) mod task;

pub use combinators::{WhenAll, WhenAny, WhenAny2, when_all, when_any, when_any2};
pub use context::{OrchestrationContext, SubOrchestrationOptions};
pub use entities::{CriticalSection, LockError};
pub use logging::{LogLevel, LogRecord};
pub use task::{DurableTask, TIMEOUT_ERROR, TaskError, TaskFuture, TaskKind};

/// Re-exported for [`when_any2`]'s output.
pub use futures::future::Either;
