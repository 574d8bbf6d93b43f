//! OpenTelemetry traces (`telemetry.otlp_endpoint`, `docs/operations.md` "Traces").
//!
//! The runtime's spans are `tracing` spans (`episode`, `activity`, `entity_batch`, `http`);
//! with an OTLP endpoint configured, [`export`] adds a `tracing-opentelemetry` layer that
//! exports them over OTLP/HTTP. One trace per orchestration: the start's context (the start
//! request's span, child of its W3C `traceparent`) is stored with the instance
//! ([`crate::state::traces`]); the instance's *orchestration span*, whose span id is derived
//! from the instance and execution ids ([`context::orchestration_span_id`]) so that every
//! node and every restart computes the same one, is its child, and the episodes, activities
//! and sub-orchestrations of the instance are the orchestration span's children. The
//! orchestration span itself is exported when the execution ends.

pub mod context;
pub mod export;

pub use context::{TraceParent, orchestration_span_id};
pub use export::{
    OrchestrationSpan, Telemetry, TelemetryError, current, emit_orchestration, set_parent,
};
