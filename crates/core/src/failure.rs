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

impl std::error::Error for FailureDetails {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .as_deref()
            .map(|i| i as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for FailureDetails {
    fn from(message: String) -> Self {
        Self::new("Error", message)
    }
}

impl From<&str> for FailureDetails {
    fn from(message: &str) -> Self {
        Self::new("Error", message)
    }
}

/// Converts what an orchestration, activity or entity operation returns as its error into
/// [`FailureDetails`].
///
/// Implemented for every `E: Into<Box<dyn Error + Send + Sync>>`: `FailureDetails` itself
/// (kept as is), `String` and `&str` (error type `"Error"`), a [`crate::orchestration::TaskError`]
/// (its task's failure becomes the inner failure) and any `std::error::Error + Send + Sync`
/// (the Rust type name becomes the error type, the `source()` chain the inner failures).
///
/// ```
/// use perdure_core::failure::IntoFailureDetails;
/// let f = "boom".to_string().into_failure_details();
/// assert_eq!((f.error_type.as_str(), f.message.as_str()), ("Error", "boom"));
/// ```
pub trait IntoFailureDetails {
    /// The failure details for this error.
    fn into_failure_details(self) -> FailureDetails;
}

impl<E> IntoFailureDetails for E
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn into_failure_details(self) -> FailureDetails {
        let type_name = short_type_name::<E>();
        let boxed: Box<dyn std::error::Error + Send + Sync> = self.into();
        let boxed = match boxed.downcast::<FailureDetails>() {
            Ok(f) => return *f,
            Err(other) => other,
        };
        let type_name = match type_name.as_str() {
            "String" | "&str" | "str" | "Cow<str>" => "Error".to_string(),
            _ => type_name,
        };
        let err: &(dyn std::error::Error + 'static) = &*boxed;
        if let Some(known) = known_failure(err) {
            return known;
        }
        let mut out = FailureDetails::new(type_name, err.to_string());
        if let Some(src) = err.source() {
            out.inner = Some(Box::new(failure_from_dyn(src)));
        }
        out
    }
}

fn known_failure(err: &(dyn std::error::Error + 'static)) -> Option<FailureDetails> {
    if let Some(f) = err.downcast_ref::<FailureDetails>() {
        return Some(f.clone());
    }
    if let Some(t) = err.downcast_ref::<crate::orchestration::TaskError>() {
        return Some(t.to_failure_details());
    }
    None
}

/// Failure details from a `dyn Error`, following the `source()` chain; a `FailureDetails` or a
/// `TaskError` in the chain keeps its structure.
pub fn failure_from_dyn(err: &(dyn std::error::Error + 'static)) -> FailureDetails {
    if let Some(known) = known_failure(err) {
        return known;
    }
    let mut out = FailureDetails::new("Error", err.to_string());
    if let Some(src) = err.source() {
        out.inner = Some(Box::new(failure_from_dyn(src)));
    }
    out
}
