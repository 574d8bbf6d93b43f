//! The OpenTelemetry side: the OTLP/HTTP exporter and tracer provider, parents of `tracing`
//! spans from stored trace contexts, and orchestration spans with their derived span ids.
//! Without an installed provider every function here is a no-op.

use std::cell::Cell;
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::TraceParent;

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `telemetry.otlp_endpoint` is not an `http://` URL.
    #[error("telemetry.otlp_endpoint {0:?} must be an http:// URL (https is not supported)")]
    Endpoint(String),
    /// The exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

thread_local! {
    /// The span id the next span built on this thread gets (see [`emit_orchestration`]).
    static NEXT_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, except for a span built while [`NEXT_SPAN_ID`] is set.
#[derive(Debug, Default)]
struct Ids(RandomIdGenerator);

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        self.0.new_trace_id()
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_SPAN_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_span_id())
    }
}

/// The installed exporter: [`Telemetry::shutdown`] exports what is buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sets up OTLP/HTTP (protobuf) export of spans to `endpoint` (`/v1/traces` is added
    /// when the URL has no path) as service `perdure-node`, instance `node_name`, and installs
    /// the provider globally. Call it outside a Tokio runtime (the exporter's HTTP client
    /// is a blocking one, on the batch processor's own thread). Returns the tracer for the
    /// `tracing` layer.
    pub fn install(endpoint: &str, node_name: &str) -> Result<(Self, SdkTracer), TelemetryError> {
        let url = traces_url(endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("perdure-node")
            .with_attribute(KeyValue::new("service.instance.id", node_name.to_string()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(Ids::default())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("perdure");
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok((Self { provider }, tracer))
    }

    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OTLP exporter did not shut down cleanly");
        }
    }
}

/// The URL spans are posted to.
fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let e = endpoint.trim();
    // The exporter's HTTP client has no TLS: https is refused rather than silently not sent.
    let Some(rest) = e.strip_prefix("http://") else {
        return Err(TelemetryError::Endpoint(endpoint.to_string()));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(TelemetryError::Endpoint(endpoint.to_string()));
    }
    Ok(match rest.find('/') {
        None => format!("{e}/v1/traces"),
        Some(i) if rest[i..] == *"/" => format!("{}v1/traces", e),
        Some(_) => e.to_string(),
    })
}

fn span_context(tp: &TraceParent) -> SpanContext {
    let flags = if tp.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        TraceId::from_bytes(tp.trace_id),
        SpanId::from_bytes(tp.span_id),
        flags,
        true,
        TraceState::default(),
    )
}

/// Makes `parent` the OpenTelemetry parent of `span` (before it is first entered).
pub fn set_parent(span: &tracing::Span, parent: &TraceParent) {
    let _ = span.set_parent(Context::new().with_remote_span_context(span_context(parent)));
}

/// The context of the current `tracing` span, when it is exported.
pub fn current() -> Option<TraceParent> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        sampled: sc.is_sampled(),
    })
}

/// What an orchestration span says.
#[derive(Debug)]
pub struct OrchestrationSpan<'a> {
    /// Its parent (the start's context).
    pub parent: TraceParent,
    /// Its own id ([`super::orchestration_span_id`]).
    pub span_id: [u8; 8],
    /// The orchestration name.
    pub name: &'a str,
    /// Instance id, execution id, partition, status, ...
    pub attributes: Vec<KeyValue>,
    /// When the execution started and ended.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// The failure message, when it failed.
    pub error: Option<String>,
}

/// Exports an execution's orchestration span (once, when the execution ended), with its
/// derived span id, so that the spans that named it as parent join it.
pub fn emit_orchestration(o: OrchestrationSpan<'_>) {
    let tracer = opentelemetry::global::tracer("perdure");
    let parent = Context::new().with_remote_span_context(span_context(&o.parent));
    NEXT_SPAN_ID.with(|c| c.set(Some(SpanId::from_bytes(o.span_id))));
    let mut span = tracer
        .span_builder(format!("orchestration {}", o.name))
        .with_kind(SpanKind::Internal)
        .with_start_time(o.start)
        .with_attributes(o.attributes)
        .start_with_context(&tracer, &parent);
    // A tracer that did not ask for an id (none installed) leaves it set: clear it.
    NEXT_SPAN_ID.with(|c| c.set(None));
    if let Some(msg) = o.error {
        span.set_status(Status::error(msg));
    }
    span.end_with_timestamp(o.end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_when_they_have_none() {
        assert_eq!(
            traces_url("http://c:4318").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/").unwrap(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c/otlp/v1/traces").unwrap(),
            "http://c/otlp/v1/traces"
        );
        for bad in [
            "c:4318",
            "grpc://c",
            "http://",
            "http:///x",
            "https://c:4318",
        ] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }
}
