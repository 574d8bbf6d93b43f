//! The HTTP management API: the Durable Functions HTTP API served over any
//! [`ManagementApi`].
//!
//! Routes live under [`BASE_PATH`] (`/runtime/webhooks/durabletask`), with Durable Functions'
//! route names, JSON field names and status codes, so the official clients (for example the
//! Python `DurableOrchestrationClient`) and existing scripts work against a node. Perdure's
//! additions (a name filter, counts per status, a server-side wait, native history, registered
//! functions, entity storage cleaning) are documented in `docs/http-api.md`.
//!
//! ```
//! use std::sync::Arc;
//! use perdure_core::management::ManagementApi;
//! use perdure_node::http::{router, HttpOptions};
//!
//! fn app(api: Arc<dyn ManagementApi>) -> axum::Router {
//!     router(api, HttpOptions::default())
//! }
//! ```

mod access;
mod dashboard;
mod entities;
mod error;
mod extract;
mod health;
mod instances;
mod render;
mod trace;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use perdure_core::management::ManagementApi;

pub use health::HttpCounters;

/// Where the Durable Functions routes are mounted.
pub const BASE_PATH: &str = "/runtime/webhooks/durabletask";

/// The same routes under the path of the Durable Functions host's loopback RPC listener.
pub const RPC_BASE_PATH: &str = "/durabletask";

/// A function that reports a boolean (readiness).
pub type ReadinessFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// A function that renders metrics in the Prometheus text format.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

/// A function that reports what the node knows of the cluster (`/cluster/*`, `/readyz`).
pub type ClusterFn = Arc<dyn Fn() -> crate::cluster::ClusterView + Send + Sync>;

/// Options of the HTTP API.
#[derive(Clone)]
pub struct HttpOptions {
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_payload_bytes: usize,
    /// Longest server-side wait a `waitForCompletion` status request may ask for.
    pub max_wait: Duration,
    /// Origin (`http://host:port`) used in management URIs; by default taken from the
    /// request's `Host` header.
    pub public_url: Option<String>,
    /// Also log each request as it arrives, with its body size (`Content-Length`), at trace
    /// level. Bodies themselves are never logged, whatever this says: payloads can hold
    /// personal data, so logs hold only their sizes.
    pub log_payloads: bool,
    /// Readiness probe for `/readyz` (none: ready whenever the server answers).
    pub readiness: Option<ReadinessFn>,
    /// Runtime metrics for `/metrics`; the HTTP layer appends its own counters.
    pub metrics: Option<MetricsFn>,
    /// The cluster view for `/cluster/nodes` and `/cluster/partitions`; `/readyz` also
    /// answers 503 with its reason while the node cannot serve.
    pub cluster: Option<ClusterFn>,
    /// Turns true when the node begins shutting down: server-side waits end early so that
    /// graceful shutdown is not held up by long polls.
    pub shutting_down: Option<tokio::sync::watch::Receiver<bool>>,
    /// The API keys every route but the probes needs (empty: every route is open).
    pub keys: Arc<crate::access::ApiKeys>,
    /// Whether `/metrics` is served without a key.
    pub metrics_open: bool,
    /// Whether the listener serves TLS: management URIs built from the `Host` header then
    /// start with `https://`.
    pub tls: bool,
    /// Whether spans are exported: each request then gets a span (`http::trace`).
    pub traces: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_payload_bytes: 4 * 1024 * 1024,
            max_wait: Duration::from_secs(60),
            public_url: None,
            log_payloads: false,
            readiness: None,
            metrics: None,
            cluster: None,
            shutting_down: None,
            keys: Arc::default(),
            metrics_open: true,
            tls: false,
            traces: false,
        }
    }
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("max_wait", &self.max_wait)
            .field("public_url", &self.public_url)
            .field("log_payloads", &self.log_payloads)
            .field("readiness", &self.readiness.is_some())
            .field("metrics", &self.metrics.is_some())
            .field("cluster", &self.cluster.is_some())
            .field("shutting_down", &self.shutting_down.is_some())
            .field("keys", &self.keys.len())
            .field("metrics_open", &self.metrics_open)
            .finish()
    }
}

/// Shared state of the handlers.
pub(crate) struct AppState {
    pub(crate) api: Arc<dyn ManagementApi>,
    pub(crate) opts: HttpOptions,
    pub(crate) counters: Arc<HttpCounters>,
}

/// The state handed to every handler.
pub(crate) type St = axum::extract::State<Arc<AppState>>;

/// The Durable Functions routes under `prefix`. Registered with their full paths rather than
/// nested: a nested router rewrites every request's URI to strip the prefix, which costs an
/// allocation and a layer per request and which no handler needs.
fn durable_routes(router: Router<Arc<AppState>>, prefix: &str) -> Router<Arc<AppState>> {
    let at = |path: &str| format!("{prefix}{path}");
    router
        .route(&at("/orchestrators/{name}"), post(instances::start))
        .route(&at("/orchestrators/{name}/"), post(instances::start))
        .route(
            &at("/orchestrators/{name}/{id}"),
            post(instances::start_with_id),
        )
        .route(
            &at("/instances"),
            get(instances::list).delete(instances::purge_by_filter),
        )
        .route(
            &at("/instances/"),
            get(instances::list).delete(instances::purge_by_filter),
        )
        .route(
            &at("/instances/{id}"),
            get(instances::status).delete(instances::purge_one),
        )
        .route(&at("/instances/{id}/history"), get(instances::history))
        .route(
            &at("/instances/{id}/raiseEvent/{event}"),
            post(instances::raise_event),
        )
        .route(&at("/instances/{id}/terminate"), post(instances::terminate))
        .route(&at("/instances/{id}/suspend"), post(instances::suspend))
        .route(&at("/instances/{id}/resume"), post(instances::resume))
        .route(&at("/instances/{id}/rewind"), post(instances::rewind))
        .route(&at("/instances/{id}/restart"), post(instances::restart))
        .route(&at("/instanceCounts"), get(instances::counts))
        .route(&at("/functions"), get(instances::functions))
        .route(&at("/entities"), get(entities::list))
        .route(&at("/entities/"), get(entities::list))
        .route(&at("/entities/{name}"), get(entities::list_by_name))
        .route(&at("/entities/{name}/"), get(entities::list_by_name))
        .route(
            &at("/entities/{name}/{key}"),
            get(entities::get_state).post(entities::signal),
        )
        .route(
            &at("/maintenance/cleanEntityStorage"),
            post(entities::clean).delete(entities::clean),
        )
}

/// Builds the HTTP API over a management implementation.
pub fn router(api: Arc<dyn ManagementApi>, opts: HttpOptions) -> Router {
    let limit = opts.max_payload_bytes;
    let state = Arc::new(AppState {
        api,
        opts,
        counters: Arc::new(HttpCounters::default()),
    });
    // The same routes where the Durable Functions host's loopback listener serves them (its
    // `rpcBaseUrl` is `http://127.0.0.1:port/durabletask/`).
    let routes = durable_routes(durable_routes(Router::new(), BASE_PATH), RPC_BASE_PATH);
    let mut routes = routes
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/cluster/nodes", get(health::cluster_nodes))
        .route("/cluster/partitions", get(health::cluster_partitions))
        .route("/dashboard", get(dashboard::redirect))
        .route("/dashboard/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style));
    if state.opts.traces {
        routes = routes.route_layer(axum::middleware::from_fn(trace::span));
    }
    routes
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            health::log_requests,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
