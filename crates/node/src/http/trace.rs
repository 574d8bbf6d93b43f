//! A span per HTTP request (`http`), when spans are exported (`telemetry.otlp_endpoint`):
//! named `METHOD route`, child of the request's W3C `traceparent` when it has a valid one.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::telemetry::{TraceParent, set_parent};

/// The request's `traceparent` header, when valid.
pub(crate) fn incoming(headers: &axum::http::HeaderMap) -> Option<TraceParent> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
}

/// The middleware (a route layer: the matched route names the span).
pub(crate) async fn span(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(tp) = incoming(req.headers()) {
        set_parent(&span, &tp);
    }
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}
