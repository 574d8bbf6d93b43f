//! The client's error type.

use perdure_core::management::ManagementError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with a management error (unknown instance, invalid state, ...).
    #[error(transparent)]
    Management(#[from] ManagementError),
    /// No node could be reached (or every node failed in a retryable way).
    #[error("no node answered {method} {path}: {source}")]
    Unreachable {
        /// The HTTP method.
        method: String,
        /// The route.
        path: String,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The node answered something this client does not understand.
    #[error("unexpected answer {status} from {url}: {message}")]
    Protocol {
        /// The HTTP status code.
        status: u16,
        /// The request URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The instance did not finish within the time given.
    #[error("instance {instance_id} did not finish within {waited:?}")]
    Timeout {
        /// The instance.
        instance_id: String,
        /// How long the client waited.
        waited: std::time::Duration,
    },
    /// A value could not be encoded or decoded as JSON.
    #[error("payload: {0}")]
    Payload(#[from] perdure_core::PayloadError),
    /// The node refused the request: no API key, an unknown one (401), or one whose role
    /// does not allow it (403).
    #[error("access denied ({status}) by {url}: {message}")]
    Denied {
        /// 401 or 403.
        status: u16,
        /// The request URL.
        url: String,
        /// The node's reason.
        message: String,
    },
    /// The client was configured wrongly (for example a malformed node URL).
    #[error("configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Management(e) => e.is_retryable(),
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Protocol { status, .. } => *status >= 500,
            Self::Payload(_) | Self::Config(_) | Self::Denied { .. } => false,
        }
    }

    /// Whether the error says the instance (or entity) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Management(ManagementError::NotFound(_)))
    }
}

impl From<ClientError> for ManagementError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Management(m) => m,
            ClientError::Unreachable { .. } => ManagementError::Unavailable(e.to_string()),
            ClientError::Timeout { .. } => ManagementError::Unavailable(e.to_string()),
            ClientError::Payload(_) | ClientError::Config(_) | ClientError::Denied { .. } => {
                ManagementError::BadRequest(e.to_string())
            }
            ClientError::Protocol { .. } => ManagementError::Internal(e.to_string()),
        }
    }
}

/// Result of a client call.
pub type ClientResult<T> = Result<T, ClientError>;
