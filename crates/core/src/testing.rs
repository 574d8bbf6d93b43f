//! The test harness: run orchestrators on virtual time with mocked effects, replay recorded
//! histories against current code, and build histories by hand.
//!
//! - [`OrchestrationTester`] runs an orchestration to its end (or until it waits forever),
//!   answering activities, sub-orchestrations and entity operations with mocks (or the
//!   registered functions), raising events at virtual times and skipping time to the next
//!   timer.
//! - [`replay_history`] / [`replay_history_json`]: the check to run before deploying a change.
//! - [`HistoryBuilder`] and [`events`]: hand-written histories for tests.

pub mod events;
mod history_builder;
mod replayer;
mod tester;

pub use history_builder::HistoryBuilder;
pub use replayer::{
    HistoryJsonError, HistoryReplayer, NonDeterminismReport, history_from_json, replay_history,
    replay_history_json,
};
pub use tester::{OrchestrationTester, TestRun};
