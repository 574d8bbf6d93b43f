//! # perdure-client
//!
//! The Durable Client for Rust services: start orchestrations, read their status, wait for
//! them, send them events, manage their lifecycle, purge them, and signal and read entities.
//!
//! Two transports:
//! - **HTTP** ([`DurableClient::http`]): the Durable Functions HTTP API of one or more nodes,
//!   with pooled keep-alive connections and failover (a request moves to the next node only
//!   when it cannot have taken effect: connection refused, 429/503, or a read).
//! - **In process** ([`DurableClient::in_process`]): wraps the node's
//!   [`ManagementApi`] for an app that embeds a node.
//!
//! ```no_run
//! use std::time::Duration;
//! use perdure_client::{DurableClient, StartOptions};
//!
//! # async fn demo() -> Result<(), perdure_client::ClientError> {
//! let client = DurableClient::http(["http://127.0.0.1:8080"])?;
//! let id = client
//!     .schedule_new_orchestration("HelloSequence", &(), StartOptions::default())
//!     .await?;
//! let done = client
//!     .wait_for_instance_completion(&id, Duration::from_secs(30))
//!     .await?;
//! let greetings: Vec<String> = done.read_output()?.unwrap_or_default();
//! println!("{id}: {greetings:?}");
//! # Ok(()) }
//! ```
//!
//! ## In process
//!
//! An app that embeds a node hands its handle (a [`ManagementApi`]) to the client: the same
//! calls, without serialization or network.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use perdure_client::{DurableClient, StartOptions};
//! use perdure_node::node::Node;
//! use perdure_node::store::memory::MemoryStore;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let node = Node::builder()
//!     .registry(Arc::new(perdure_node::sample::sample_registry()))
//!     .store(Arc::new(MemoryStore::new()))
//!     .start()
//!     .await?;
//! let client = DurableClient::in_process(Arc::new(node.clone()));
//! let id = client
//!     .schedule_new_orchestration("HelloSequence", &(), StartOptions::with_id("h1"))
//!     .await?;
//! let done = client
//!     .wait_for_instance_completion(&id, Duration::from_secs(30))
//!     .await?;
//! let greetings: Vec<String> = done.read_output()?.unwrap_or_default();
//! assert_eq!(greetings, ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]);
//! node.shutdown().await;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! ## The Durable Client binding, in Rust
//!
//! With the feature `axum`, `binding::DurableClientBinding` is the `[DurableClient]` binding
//! of an axum HTTP starter: an extractor that hands a handler the client, and the answers of
//! Durable Functions' starters, `create_check_status_response` (202, `Location`,
//! `Retry-After` and the management payload: `statusQueryGetUri`, `sendEventPostUri`, ...)
//! and `wait_for_completion_or_create_check_status_response`. Client errors become responses
//! with the node's status codes. See the `binding` module, `docs/client.md`, and the example
//! service `examples/http_starter.rs`
//! (`cargo run -p perdure-client --features axum --example http_starter`).
//!
//! ```toml
//! perdure-client = { path = "crates/client", features = ["axum"] }
//! ```
#![deny(missing_docs)]

#[cfg(feature = "axum")]
pub mod binding;
mod client;
mod error;
pub mod http;
pub mod typed;
mod wire;

#[cfg(feature = "axum")]
pub use binding::{DurableClientBinding, NodeOrigin, RequestHead};

pub use client::{DurableClient, HttpResponseParts, OrchestrationMetadata, StartOptions};
pub use error::{ClientError, ClientResult};
pub use http::{HttpClientOptions, HttpTransport};
pub use perdure_core::management::{
    EntityQuery, EntityState, InstanceQuery, ManagementApi, PurgeFilter,
};
pub use perdure_core::{EntityId, InstanceId, OrchestrationStatus, Payload, Timestamp};
pub use typed::{ClientEntity, ClientSignal};
