//! The span of one HTTP request: what every log line about the request carries
//! (`request_id`, then `task_id` once the task has one), and — with tracing on — the root of
//! the request's trace, continuing the client's W3C `traceparent` if it sent one.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, Response};
use tracing::field::{Empty, Value};
use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
use tracing::span::Record;
use tracing::{Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Opens the request's span (in the front service, `front.rs`, after the request id is set),
/// with that id (`request_id::ensure`'s, given rather than looked up again in the headers).
///
/// With trace export off, the span carries only what log lines use (`request_id`, then
/// `task_id`): the OpenTelemetry fields (name, kind, method, route, status) would be formatted
/// into every request's span for no reader, at a cost of several µs of CPU per request. And
/// it is a debug span: at the default level (info) no line is written about one request
/// (refused and failed requests are counted, not logged), so a span there would be made,
/// entered at every poll and closed for nothing, ≈ 5,000 instructions a request. A filter
/// that reaches debug for this module (`debug`, `info,batchgate_gateway=debug`) has it, and
/// then every line about the request carries it.
pub(super) fn request_span(request: &Request, request_id: Option<&HeaderValue>) -> Span {
    let request_id = request_id.and_then(|v| v.to_str().ok()).unwrap_or("");
    if !batchgate_telemetry::enabled() {
        // Recorded as a string, so text logs quote it (JSON logs hold it as a string). The id
        // is ours or checked (`request_id.rs`); quoting is the second line of defence.
        return tracing::debug_span!("http.request", request_id = request_id, task_id = Empty);
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

/// Records the task's id on the current span, the request's (a span without a `task_id`
/// field is left as it is). What `Span::current().record("task_id", …)` does, without the
/// handle: that clones the span (a reference counted in the registry) to drop it again,
/// ≈ 500 instructions a request.
pub(super) fn record_task_id(task_id: &str) {
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        let (Some(id), Some(metadata)) = (current.id(), current.metadata()) else {
            return;
        };
        let fields = metadata.fields();
        let Some(field) = fields.field("task_id") else {
            return;
        };
        let value: &dyn Value = &task_id;
        dispatch.record(
            id,
            &Record::new(&fields.value_set(&[(&field, Some(value))])),
        );
    });
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
    use batchgate_testkit::MemoryLog;

    use super::{record_task_id, route_template};
    use tracing::field::Empty;

    #[test]
    fn the_task_id_is_recorded_on_the_current_span_only_where_it_has_the_field() {
        let buffer = MemoryLog::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            // Outside any span, and in one without the field: nothing happens.
            record_task_id("nowhere");
            tracing::info_span!("other", id = "x").in_scope(|| {
                record_task_id("not-here");
                tracing::info!("in other");
            });
            let span = tracing::info_span!("http.request", request_id = "r-1", task_id = Empty);
            span.in_scope(|| {
                tracing::info!("before");
                record_task_id("t-1");
                tracing::info!("after");
            });
        });
        let log = buffer.text();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(lines[0].contains("other{id=\"x\"}: "), "{log}");
        assert!(
            lines[1].contains("http.request{request_id=\"r-1\"}: "),
            "{log}"
        );
        assert!(
            lines[2].contains("http.request{request_id=\"r-1\" task_id=\"t-1\"}: "),
            "{log}"
        );
        assert!(
            !log.contains("nowhere") && !log.contains("not-here"),
            "{log}"
        );
    }

    #[test]
    fn span_names_use_route_templates() {
        assert_eq!(route_template("/v1/result/abc-1"), "/v1/result/{task_id}");
        assert_eq!(route_template("/v1/inference"), "/v1/inference");
        assert_eq!(route_template("/nope"), "unmatched");
    }
}
