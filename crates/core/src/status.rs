//! Runtime status of an orchestration instance.

use serde::{Deserialize, Serialize};

/// The runtime status of an orchestration instance, with Durable Functions' names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OrchestrationStatus {
    /// Created, not yet started (or scheduled to start later).
    Pending,
    /// Started and not finished.
    Running,
    /// Suspended by a management request; new events are kept until resumed.
    Suspended,
    /// Finished with an output.
    Completed,
    /// This execution ended by continuing as new (a transient status).
    ContinuedAsNew,
    /// Finished with a failure.
    Failed,
    /// Ended by a terminate request.
    Terminated,
}

impl OrchestrationStatus {
    /// All statuses, in a fixed order.
    pub const ALL: [OrchestrationStatus; 7] = [
        Self::Pending,
        Self::Running,
        Self::Suspended,
        Self::Completed,
        Self::ContinuedAsNew,
        Self::Failed,
        Self::Terminated,
    ];

    /// Whether the instance has finished (completed, failed or terminated).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Terminated)
    }

    /// The Durable Functions spelling (`"Running"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Suspended => "Suspended",
            Self::Completed => "Completed",
            Self::ContinuedAsNew => "ContinuedAsNew",
            Self::Failed => "Failed",
            Self::Terminated => "Terminated",
        }
    }

    /// Parses the Durable Functions spelling, ignoring case.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// A stable one-byte code, used in store keys.
    pub fn code(self) -> u8 {
        match self {
            Self::Pending => 0,
            Self::Running => 1,
            Self::Suspended => 2,
            Self::Completed => 3,
            Self::ContinuedAsNew => 4,
            Self::Failed => 5,
            Self::Terminated => 6,
        }
    }

    /// The status for a code from [`OrchestrationStatus::code`].
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.code() == code)
    }
}

impl std::fmt::Display for OrchestrationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
