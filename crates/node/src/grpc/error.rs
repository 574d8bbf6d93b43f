//! Management errors as gRPC statuses.

use perdure_core::IdError;
use perdure_core::management::ManagementError;
use tonic::Status;

/// The gRPC status of a management error: the codes the Durable Task SDKs test for
/// (`NOT_FOUND`, `ALREADY_EXISTS`, `FAILED_PRECONDITION`, ...), with the error's message.
pub(crate) fn status(e: ManagementError) -> Status {
    let msg = e.to_string();
    match e {
        ManagementError::NotFound(_) => Status::not_found(msg),
        ManagementError::AlreadyExists { .. } => Status::already_exists(msg),
        ManagementError::InvalidState { .. } => Status::failed_precondition(msg),
        ManagementError::UnknownName { .. } | ManagementError::BadRequest(_) => {
            Status::invalid_argument(msg)
        }
        ManagementError::PayloadTooLarge { .. } | ManagementError::Overloaded(_) => {
            Status::resource_exhausted(msg)
        }
        ManagementError::Unavailable(_) => Status::unavailable(msg),
        ManagementError::Internal(_) => Status::internal(msg),
    }
}

/// A bad id in a request.
pub(crate) fn bad_id(field: &str, value: &str, e: IdError) -> Status {
    Status::invalid_argument(format!("{field} {value:?} is not a valid id: {e}"))
}

/// A work-item RPC on a service built without a worker hub (an embedding that serves only
/// the client RPCs).
pub(crate) fn work_items_unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not served here: this gRPC service was built without workers \
         (`Sidecar::with_workers`); its functions run in the node's own registry (see \
         docs/grpc.md)"
    ))
}

/// Any other RPC Perdure does not serve.
pub(crate) fn unimplemented(rpc: &str, why: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not implemented by this Perdure node: {why}"
    ))
}
