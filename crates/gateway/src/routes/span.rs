//! The span of one HTTP request: what every log line about the request carries
//! (`request_id`, then `task_id` once the task has one), and — with tracing on — the root of
//! the request's trace, continuing the client's W3C `traceparent` if it sent one.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, Response};
use tracing::field::Empty;
use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Opens the request's span (in the front service, `front.rs`, after the request id is set),
/// with that id (`request_id::ensure`'s, given rather than looked up again in the headers).
///
/// With trace export off, the span carries only what log lines use (`request_id`, then
/// `task_id`): the OpenTelemetry fields (name, kind, method, route, status) would be formatted
/// into every request's span for no reader, at a cost of several µs of CPU per request.
pub(super) fn request_span(request: &Request, request_id: Option<&HeaderValue>) -> Span {
    let request_id = request_id.and_then(|v| v.to_str().ok()).unwrap_or("");
    if !batchgate_telemetry::enabled() {
        // Recorded as a string, so text logs quote it (JSON logs hold it as a string). The id
        // is ours or checked (`request_id.rs`); quoting is the second line of defence.
        return tracing::info_span!("http.request", request_id = request_id, task_id = Empty);
    }
    let method = request.method().as_str();
    let route = route_template(request.uri().path());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = Empty,
        request_id = request_id,
        task_id = Empty,
    );
    if let Some(parent) = batchgate_telemetry::http_parent(request.headers()) {
        // Fails only when no OpenTelemetry layer is installed, and then `http_parent` is None.
        let _ = span.set_parent(parent);
    }
    span
}

/// Whether [`record_response`]'s debug line can be written at all (the log's most verbose
/// level reaches debug): the time it reports is only read then.
pub(super) fn answer_logged() -> bool {
    Level::DEBUG <= STATIC_MAX_LEVEL && Level::DEBUG <= LevelFilter::current()
}

/// Notes the status on the span (a field only the exported span has) and logs the answer at
/// debug, in the span, with the time since `started` (taken when [`answer_logged`]).
pub(super) fn record_response<B>(response: &Response<B>, started: Option<Instant>, span: &Span) {
    let status = response.status().as_u16();
    if batchgate_telemetry::enabled() {
        span.record("http.response.status_code", status);
    }
    // The fields are only evaluated when the line is written.
    let latency_ms = || started.map_or(0.0, |s| s.elapsed().as_secs_f64() * 1e3);
    tracing::debug!(parent: span, status, latency_ms = latency_ms(), "answered");
}

/// The route a path belongs to, by template, so span names stay few (no task ids in them).
/// The router matches later; this mirrors its table for the span's name only.
fn route_template(path: &str) -> &'static str {
    match path {
        "/v1/inference" => "/v1/inference",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/" => "/",
        "/status.json" => "/status.json",
        "/openapi.json" => "/openapi.json",
        p if p.starts_with("/v1/result/") => "/v1/result/{task_id}",
        p if p.starts_with("/admin/") => "/admin/dlq",
        _ => "unmatched",
    }
}

#[cfg(test)]
mod tests {
    use super::route_template;

    #[test]
    fn span_names_use_route_templates() {
        assert_eq!(route_template("/v1/result/abc-1"), "/v1/result/{task_id}");
        assert_eq!(route_template("/v1/inference"), "/v1/inference");
        assert_eq!(route_template("/nope"), "unmatched");
    }
}
