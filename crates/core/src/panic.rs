//! Turning a caught panic into failure details.

use std::any::Any;

use crate::FailureDetails;

/// The failure details for a panic payload: error type `"PanicError"` and the panic message.
pub(crate) fn panic_failure(payload: Box<dyn Any + Send>) -> FailureDetails {
    let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    };
    FailureDetails::new("PanicError", message)
}
