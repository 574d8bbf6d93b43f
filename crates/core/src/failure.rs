//! Failure details: a domain failure as data.

use serde::{Deserialize, Serialize};

/// A failure of an activity, orchestration, sub-orchestration or entity operation, as data.
///
/// Failures are values that flow through history (`TaskFailed`, `ExecutionCompleted`) and reach
/// the orchestrator as `Err`; they are never turned into panics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetails {
    /// The error's type name (for example the Rust type, or `"PanicError"`).
    pub error_type: String,
    /// The human-readable message.
    pub message: String,
    /// Further details (for example a backtrace or a JSON document).
    pub details: Option<String>,
    /// The failure that caused this one.
    pub inner: Option<Box<FailureDetails>>,
}

impl FailureDetails {
    /// A failure with a type and a message.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            details: None,
            inner: None,
        }
    }

    /// Builds failure details from any error, following its `source()` chain into `inner`.
    pub fn from_error<E: std::error::Error + ?Sized>(err: &E) -> Self {
        let mut out = Self::new(short_type_name::<E>(), err.to_string());
        if let Some(src) = err.source() {
            out.inner = Some(Box::new(Self::from_dyn(src)));
        }
        out
    }

    fn from_dyn(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut out = Self::new("Error", err.to_string());
        if let Some(src) = err.source() {
            out.inner = Some(Box::new(Self::from_dyn(src)));
        }
        out
    }

    /// Adds an inner failure.
    pub fn with_inner(mut self, inner: FailureDetails) -> Self {
        self.inner = Some(Box::new(inner));
        self
    }

    /// Whether this failure, or one of its inner failures, has the given error type.
    pub fn is_caused_by(&self, error_type: &str) -> bool {
        self.error_type == error_type
            || self
                .inner
                .as_ref()
                .is_some_and(|i| i.is_caused_by(error_type))
    }
}

fn short_type_name<E: ?Sized>() -> String {
    let full = std::any::type_name::<E>();
    full.rsplit("::").next().unwrap_or(full).to_string()
}

impl std::fmt::Display for FailureDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)?;
        if let Some(inner) = &self.inner {
            write!(f, " (caused by {inner})")?;
        }
        Ok(())
    }
}
