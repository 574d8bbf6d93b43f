//! Probes, metrics, request logging, and JSON answers for unknown routes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::instances::json;
use super::{AppState, St};

/// Request counters of the HTTP layer, by status class, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct HttpCounters {
    by_class: [AtomicU64; 5],
    latency_micros_total: AtomicU64,
    in_flight: AtomicI64,
}

/// Counts a request as in flight until dropped (also when the client goes away mid-request).
struct InFlight<'a>(&'a AtomicI64);

impl<'a> InFlight<'a> {
    fn enter(n: &'a AtomicI64) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HttpCounters {
    fn record(&self, status: StatusCode, micros: u64) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        if let Some(c) = self.by_class.get(class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_micros_total
            .fetch_add(micros, Ordering::Relaxed);
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP perdure_http_requests_total HTTP requests answered, by status class.\n",
        );
        out.push_str("# TYPE perdure_http_requests_total counter\n");
        for (i, c) in self.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "perdure_http_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP perdure_http_request_seconds_total Time spent answering HTTP requests.\n",
        );
        out.push_str("# TYPE perdure_http_request_seconds_total counter\n");
        let _ = writeln!(
            out,
            "perdure_http_request_seconds_total {}",
            self.latency_micros_total.load(Ordering::Relaxed) as f64 / 1e6
        );
        out.push_str(
            "# HELP perdure_http_requests_in_flight HTTP requests being answered (this one included).\n",
        );
        out.push_str("# TYPE perdure_http_requests_in_flight gauge\n");
        let _ = writeln!(
            out,
            "perdure_http_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out
    }
}

/// Logs each request (method, path, status, duration; never bodies) and counts it.
pub(crate) async fn log_requests(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let _in_flight = InFlight::enter(&state.counters.in_flight);
    let method = req.method().clone();
    // A clone of the URI shares its bytes (no copy of the path per request).
    let uri = req.uri().clone();
    if state.opts.log_payloads {
        let path = uri.path();
        tracing::trace!(%method, %path, content_length = ?req.headers().get(header::CONTENT_LENGTH), "request");
    }
    let resp = next.run(req).await;
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    state.counters.record(resp.status(), micros);
    let path = uri.path();
    tracing::debug!(%method, %path, status = resp.status().as_u16(), micros, "http");
    resp
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the node serves requests (503 with the reason while starting, shutting
/// down, or cut off from the store).
pub(crate) async fn readyz(State(state): St) -> Response {
    let ready = state.opts.readiness.as_ref().is_none_or(|f| f());
    let reason = if ready {
        state.opts.cluster.as_ref().and_then(|f| f().not_ready)
    } else {
        Some("the node is starting or stopping".to_string())
    };
    match reason {
        None => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
        Some(r) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "not ready", "reason": r}),
        ),
    }
}

fn no_cluster() -> Response {
    ApiError::plain(
        StatusCode::NOT_FOUND,
        "NoCluster",
        "this server runs no cluster node".to_string(),
    )
    .into_response()
}

/// `GET /cluster/nodes`: the membership as this node last read it.
pub(crate) async fn cluster_nodes(State(state): St) -> Response {
    let Some(f) = state.opts.cluster.as_ref() else {
        return no_cluster();
    };
    let v = f();
    json(
        StatusCode::OK,
        &serde_json::json!({"node": v.node, "notReady": v.not_ready, "nodes": v.nodes}),
    )
}

/// `GET /cluster/partitions`: the partition table (owner, epoch, since, desired owner).
pub(crate) async fn cluster_partitions(State(state): St) -> Response {
    let Some(f) = state.opts.cluster.as_ref() else {
        return no_cluster();
    };
    let v = f();
    json(
        StatusCode::OK,
        &serde_json::json!({"node": v.node, "owned": v.owned.len(), "partitions": v.partitions}),
    )
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(State(state): St) -> Response {
    let mut text = state.opts.metrics.as_ref().map(|f| f()).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&state.counters.render());
    text.push_str(&crate::metrics::render_process());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Unknown route: a JSON 404.
pub(crate) async fn not_found(req: Request) -> Response {
    ApiError::plain(
        StatusCode::NOT_FOUND,
        "NoRoute",
        format!(
            "no route for {} {} (the API lives under {}/)",
            req.method(),
            req.uri().path(),
            super::BASE_PATH
        ),
    )
    .into_response()
}

/// Known route, wrong method: a JSON 405.
pub(crate) async fn method_not_allowed(req: Request) -> Response {
    ApiError::plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}
