//! The Durable Task gRPC protocol (`TaskHubSidecarService`, the protocol of the Durable Task
//! SDKs for Python, .NET, Java, JS and Go), served over any [`ManagementApi`].
//!
//! The client side: starting, inspecting, waiting for and managing orchestration instances
//! and entities (`docs/grpc.md` lists the RPCs). The worker side, when the node is built with
//! a [`WorkerHub`] and [`GrpcExecutors`] (as `perdure-node` is whenever it serves gRPC): SDK
//! workers connect with `GetWorkItems` and run the orchestrations and activities that the
//! node's own registry does not have, answering with the `Complete*` / `Abandon*` RPCs.
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

mod access;
mod convert;
mod deadline;
mod entities;
mod error;
mod history;
mod instances;
pub mod peers;
mod remote;
mod service;
mod workers;

use std::sync::Arc;

use perdure_core::management::ManagementApi;

pub use access::{AccessLayer, AccessService};
pub use remote::GrpcExecutors;
pub use service::Sidecar;
pub use workers::WorkerHub;

/// The types, client and server generated from `proto/orchestrator_service.proto` (the
/// protocol declares no package).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("_");
}

/// The address `perdure-node dev` serves the protocol on: the SDKs' default
/// (`localhost:4001`).
pub const DEV_LISTEN: &str = "127.0.0.1:4001";

/// The largest message the service takes or sends (tonic's default is 4 MiB): a worker's
/// response may carry up to a transaction's worth of payloads, and what is over the store's
/// limit is then refused by the commit (the instance fails with a clear error) rather than
/// by the transport (the worker's completion would fail and the item would wait forever).
/// The SDKs' own receive limit (4 MiB by default for Python) still bounds the work items a
/// worker takes: a larger history needs the SDK's channel options.
pub const MAX_MESSAGE_BYTES: usize = crate::store::MAX_TRANSACTION_BYTES * 4;

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
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Serves the protocol on `listener` until `shutdown` resolves, then lets running calls
/// finish.
pub async fn serve(
    api: Arc<dyn ManagementApi>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    serve_with(api, listener, None, None, Arc::default(), None, shutdown).await
}

/// Like [`serve`]; server-side waits end early once `shutting_down` turns true, and with
/// `workers` the worker side is served too (work items of that hub; the node's executor
/// must be a [`GrpcExecutors`] over it). The hub is closed when `shutdown` resolves, which
/// ends the workers' streams. With `keys`, every call needs a key of the RPC's role
/// ([`AccessLayer`]). With `tls` (offering `h2`, [`crate::tls::server_config`]), the
/// listener serves TLS.
#[allow(clippy::too_many_arguments)]
pub async fn serve_with(
    api: Arc<dyn ManagementApi>,
    listener: tokio::net::TcpListener,
    shutting_down: Option<tokio::sync::watch::Receiver<bool>>,
    workers: Option<Arc<WorkerHub>>,
    keys: Arc<crate::access::ApiKeys>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), GrpcError> {
    let mut sidecar = Sidecar::new(api, shutting_down);
    if let Some(hub) = workers.clone() {
        sidecar = sidecar.with_workers(hub);
    }
    // The workers' streams never end by themselves: a graceful stop closes the hub first.
    let shutdown = async move {
        shutdown.await;
        if let Some(hub) = workers {
            hub.close();
        }
    };
    let router = tonic::transport::Server::builder()
        .layer(AccessLayer::new(keys))
        .add_service(
            proto::task_hub_sidecar_service_server::TaskHubSidecarServiceServer::new(sidecar)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
    let served = match tls {
        None => {
            // Small request/response messages: no Nagle delay.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        Some(config) => {
            // The accept loop sets no-delay on each connection.
            let conns = crate::tls::accept_loop(listener, config);
            let incoming = futures::stream::unfold(conns, |mut conns| async move {
                let (conn, _) = conns.recv().await?;
                Some((Ok::<_, std::io::Error>(conn), conns))
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    served.map_err(GrpcError::Transport)
}
