//! The replay-safe logger's records.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Severity of a [`LogRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Debugging.
    Debug,
    /// Normal information.
    Info,
    /// Something unexpected.
    Warn,
    /// A failure.
    Error,
}

/// One line logged by an orchestrator through the replay-safe logger. Lines are recorded only
/// when the orchestrator is not replaying; the node emits them with `tracing`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Severity.
    pub level: LogLevel,
    /// The orchestration's current time when the line was logged.
    pub timestamp: Timestamp,
    /// The text.
    pub message: String,
}
