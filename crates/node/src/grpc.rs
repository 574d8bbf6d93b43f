//! The Durable Task gRPC protocol (`TaskHubSidecarService`, the protocol of the Durable Task
//! SDKs for Python, .NET, Java, JS and Go), served over any [`ManagementApi`].
//!
//! What is served today is the client side: starting, inspecting, waiting for and managing
//! orchestration instances and entities (`docs/grpc.md` lists the RPCs). The worker side
//! (`GetWorkItems` and the `Complete*` / `Abandon*` RPCs) answers `UNIMPLEMENTED`: functions
//! run in the node's own registry.
//!
//! ```no_run
//! use std::sync::Arc;
//! use perdure_core::management::ManagementApi;
//!
//! async fn serve(api: Arc<dyn ManagementApi>) -> Result<(), perdure_node::grpc::GrpcError> {
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:4001").await
//!         .map_err(perdure_node::grpc::GrpcError::Io)?;
//!     perdure_node::grpc::serve(api, listener, std::future::pending()).await
//! }
//! ```

mod convert;
mod deadline;
mod entities;
mod error;
mod instances;
mod service;

use std::sync::Arc;

use perdure_core::management::ManagementApi;

pub use service::Sidecar;

/// The types, client and server generated from `proto/orchestrator_service.proto` (the
/// protocol declares no package).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("_");
}

/// The address `perdure-node dev` serves the protocol on: the SDKs' default
/// (`localhost:4001`).
pub const DEV_LISTEN: &str = "127.0.0.1:4001";

/// Why the gRPC listener stopped.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The socket failed.
    #[error("gRPC listener: {0}")]
    Io(#[source] std::io::Error),
    /// The server failed.
    #[error("gRPC server: {0}")]
    Transport(#[source] tonic::transport::Error),
}

/// The service over a management implementation, ready to add to a tonic server.
pub fn service(
    api: Arc<dyn ManagementApi>,
    shutting_down: Option<tokio::sync::watch::Receiver<bool>>,
) -> proto::task_hub_sidecar_service_server::TaskHubSidecarServiceServer<Sidecar> {
    proto::task_hub_sidecar_service_server::TaskHubSidecarServiceServer::new(Sidecar::new(
        api,
        shutting_down,
    ))
}

/// Serves the protocol on `listener` until `shutdown` resolves, then lets running calls
/// finish.
pub async fn serve(
    api: Arc<dyn ManagementApi>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    serve_with(api, listener, None, shutdown).await
}

/// Like [`serve`]; server-side waits end early once `shutting_down` turns true.
pub async fn serve_with(
    api: Arc<dyn ManagementApi>,
    listener: tokio::net::TcpListener,
    shutting_down: Option<tokio::sync::watch::Receiver<bool>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    // Small request/response messages: no Nagle delay.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(service(api, shutting_down))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(GrpcError::Transport)
}
