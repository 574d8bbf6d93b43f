//! Error responses: always JSON, shaped like Durable Functions' (`Message`,
//! `ExceptionMessage`), plus the typed error for Perdure's own client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use perdure_core::management::ManagementError;
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
    pub(crate) typed: Option<ManagementError>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "Message")]
    message: &'a str,
    #[serde(rename = "ExceptionMessage")]
    exception_message: &'a str,
    #[serde(rename = "ExceptionType")]
    exception_type: &'a str,
    #[serde(rename = "perdureError", skip_serializing_if = "Option::is_none")]
    typed: Option<&'a ManagementError>,
}

impl ApiError {
    /// A 400 Bad Request.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            typed: Some(ManagementError::BadRequest(message.clone())),
            message,
            kind: "BadRequest",
        }
    }

    /// A 404 for an unknown instance or entity.
    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        let what = what.into();
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("no instance with id {what}"),
            typed: Some(ManagementError::NotFound(what)),
            kind: "NotFound",
        }
    }

    /// An error with a status and message and no typed form.
    pub(crate) fn plain(
        status: StatusCode,
        kind: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            typed: None,
        }
    }

    /// The Durable Functions status code of a management error.
    pub(crate) fn from_management(err: ManagementError) -> Self {
        let (status, kind) = match &err {
            ManagementError::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            ManagementError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
            ManagementError::InvalidState { .. } => (StatusCode::GONE, "InvalidState"),
            ManagementError::UnknownName { .. } => (StatusCode::NOT_FOUND, "UnknownName"),
            ManagementError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ManagementError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge")
            }
            ManagementError::Overloaded(_) => (StatusCode::TOO_MANY_REQUESTS, "Overloaded"),
            ManagementError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
            ManagementError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal"),
        };
        Self {
            status,
            message: err.to_string(),
            kind,
            typed: Some(err),
        }
    }

    /// Replaces the status code (for routes where Durable Functions answers differently).
    pub(crate) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl From<ManagementError> for ApiError {
    fn from(err: ManagementError) -> Self {
        Self::from_management(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: &self.message,
            exception_message: &self.message,
            exception_type: self.kind,
            typed: self.typed.as_ref(),
        };
        let text = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            text,
        )
            .into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: the connection cannot be reused, and the
            // client must know before it sends its next request on it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
