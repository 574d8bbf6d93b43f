//! Failure details: a domain failure as data.

use std::cell::Cell;

use serde::{Deserialize, Serialize};

/// The longest chain of inner failures that is stored: a chain longer than this is cut when
/// serialized, and a record holding a deeper chain does not decode (a crafted record must not
/// exhaust the stack of the decoding thread).
pub const MAX_FAILURE_DEPTH: usize = 100;

/// A failure of an activity, orchestration, sub-orchestration or entity operation, as data.
///
/// Failures are values that flow through history (`TaskFailed`, `ExecutionCompleted`) and reach
/// the orchestrator as `Err`; they are never turned into panics.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// The wire form of one level of [`FailureDetails`] (field names and order are the format).
#[derive(Serialize)]
#[serde(rename = "FailureDetails")]
struct WireOut<'a> {
    error_type: &'a str,
    message: &'a str,
    details: &'a Option<String>,
    inner: Option<Limited<'a>>,
}

/// A failure serialized at a depth: the chain is cut at [`MAX_FAILURE_DEPTH`].
struct Limited<'a>(&'a FailureDetails, usize);

impl Serialize for Limited<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Limited(f, depth) = *self;
        let inner = match &f.inner {
            Some(inner) if depth + 1 < MAX_FAILURE_DEPTH => Some(Limited(inner, depth + 1)),
            _ => None,
        };
        WireOut {
            error_type: &f.error_type,
            message: &f.message,
            details: &f.details,
            inner,
        }
        .serialize(serializer)
    }
}

impl Serialize for FailureDetails {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Limited(self, 0).serialize(serializer)
    }
}

#[derive(Deserialize)]
#[serde(rename = "FailureDetails")]
struct WireIn {
    error_type: String,
    message: String,
    details: Option<String>,
    inner: Option<Box<FailureDetails>>,
}

thread_local! {
    /// How many `FailureDetails` are being decoded on this thread, outermost included.
    static DECODE_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Counts one level of decoding; the count drops when the level is done (or fails).
struct DepthGuard;

impl DepthGuard {
    fn enter() -> Option<Self> {
        DECODE_DEPTH.with(|d| {
            let depth = d.get();
            if depth >= MAX_FAILURE_DEPTH {
                None
            } else {
                d.set(depth + 1);
                Some(DepthGuard)
            }
        })
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DECODE_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

impl<'de> Deserialize<'de> for FailureDetails {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Some(_guard) = DepthGuard::enter() else {
            return Err(serde::de::Error::custom(format_args!(
                "failure details nested deeper than {MAX_FAILURE_DEPTH} levels"
            )));
        };
        let w = WireIn::deserialize(deserializer)?;
        Ok(Self {
            error_type: w.error_type,
            message: w.message,
            details: w.details,
            inner: w.inner,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(depth: usize) -> FailureDetails {
        let mut f = FailureDetails::new("T0", "m0");
        for i in 1..depth {
            f = FailureDetails::new(format!("T{i}"), format!("m{i}")).with_inner(f);
        }
        f
    }

    fn depth(f: &FailureDetails) -> usize {
        let mut n = 1;
        let mut cur = f;
        while let Some(i) = &cur.inner {
            n += 1;
            cur = i;
        }
        n
    }

    #[test]
    fn a_crafted_deep_record_is_an_error_not_a_stack_overflow() {
        // Each level: empty error type, empty message, no details, Some(inner).
        let mut bytes = vec![crate::codec::FORMAT_VERSION];
        for _ in 0..1_000_000 {
            bytes.extend_from_slice(&[0, 0, 0, 1]);
        }
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        let err = crate::codec::decode::<FailureDetails>(&bytes).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        // The depth counter is back to zero: a normal record still decodes.
        let ok = chain(MAX_FAILURE_DEPTH);
        let back: FailureDetails =
            crate::codec::decode(&crate::codec::encode(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
    }

    #[test]
    fn chains_longer_than_the_limit_are_cut_when_stored() {
        let long = chain(MAX_FAILURE_DEPTH + 20);
        let back: FailureDetails =
            crate::codec::decode(&crate::codec::encode(&long).unwrap()).unwrap();
        assert_eq!(depth(&back), MAX_FAILURE_DEPTH);
        assert_eq!(back.error_type, long.error_type);
        let json = serde_json::to_string(&chain(30)).unwrap();
        assert_eq!(
            serde_json::from_str::<FailureDetails>(&json).unwrap(),
            chain(30)
        );
    }

    #[test]
    fn wire_form_is_unchanged() {
        let f = FailureDetails::new("A", "a").with_inner(FailureDetails::new("B", "b"));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"error_type":"A","message":"a","details":null,"inner":{"error_type":"B","message":"b","details":null,"inner":null}}"#
        );
    }
}
