//! The replay engine: from history and new events to the next actions.
//!
//! An [`OrchestrationExecutor`] holds a live orchestrator between episodes. [`load`] rebuilds
//! it by replaying the stored history of the current execution (only on activation);
//! [`execute`] applies an episode's new events and returns an [`Episode`]: the history events
//! to append, the actions to perform and the [`Outcome`]. An episode costs in proportion to
//! its new events.
//!
//! The orchestrator is polled after every applied event, so its behaviour depends only on the
//! order of events, not on how they were batched into episodes.
//!
//! [`load`]: OrchestrationExecutor::load
//! [`execute`]: OrchestrationExecutor::execute

mod checks;
mod deliver;
pub(crate) mod describe;
mod episode;
mod error;
mod executor;

pub use describe::{describe_action, describe_event};
pub use episode::{Episode, Outcome};
pub use error::{
    NON_DURABLE_AWAIT_ERROR, NONDETERMINISM_CODE, NonDeterminismError, ReplayError, ReplayErrorKind,
};
pub use executor::OrchestrationExecutor;
