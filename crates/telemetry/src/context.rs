//! Trace context in and out of the process, in the W3C Trace Context format (`traceparent`),
//! through OpenTelemetry's own propagator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header and task field name.
pub const TRACEPARENT: &str = "traceparent";

/// Set once an OTLP exporter is installed ([`crate::otlp::Tracing::install`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported: callers skip all context work when not.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Reads header values for the propagator.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The client's trace context from a `traceparent` header, if tracing is on and the header
/// is valid; a malformed header is ignored (the request starts a trace of its own).
pub fn http_parent(headers: &http::HeaderMap) -> Option<Context> {
    if !enabled() || !headers.contains_key(TRACEPARENT) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` naming `span`, to carry in a task; `None` when tracing is off.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::with_capacity(1);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The span context a task's `traceparent` names, if valid.
pub fn remote_span_context(traceparent: &str) -> Option<SpanContext> {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Records a finished span with the given times as a child of `parent` — for an interval
/// that no code "ran" through, such as a task's wait in the queue and the batcher's buffer,
/// which starts in the gateway and ends in the batcher. Returns its context, to link to.
pub fn record_interval(
    name: &'static str,
    parent: &SpanContext,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
) -> SpanContext {
    let tracer = opentelemetry::global::tracer_provider().tracer("batchgate");
    let parent_cx = Context::new().with_remote_span_context(parent.clone());
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent_cx);
    let mut span = span;
    let sc = span.span_context().clone();
    span.end_with_timestamp(end);
    sc
}

/// Adds a link from `span` to each of `targets` (a batch span to the requests it carries).
pub fn link_all(span: &tracing::Span, targets: impl IntoIterator<Item = SpanContext>) {
    for target in targets {
        span.add_link(target);
    }
}
