//! Traces: where they go (OTLP) and how a request's trace context travels — in from a
//! client's `traceparent` header, and on through the queue inside each task — so that the
//! batcher's spans join the trace of every request they serve.
//!
//! Tracing is off unless an OTLP endpoint is configured. Off, [`enabled`] is one relaxed
//! atomic load, no context is injected into tasks and none is parsed: the request path pays
//! nothing beyond the `tracing` spans the logs already use.
//!
//! Layout:
//! - [`context`]: the on/off switch, W3C `traceparent` in and out, spans with explicit times.
//! - [`otlp`]: [`OtlpConfig`] and the tracer provider exporting over OTLP/gRPC.

pub mod context;
pub mod otlp;

pub use context::{enabled, http_parent, remote_span_context, traceparent_of};
pub use otlp::{OtlpConfig, OtlpError, Tracing};
