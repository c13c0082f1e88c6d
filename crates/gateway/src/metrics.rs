//! The gateway's Prometheus metrics, and the `/metrics` rendering.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of an HTTP answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template (`/v1/result/{task_id}`), or `unmatched`.
    pub route: &'static str,
    /// The status code.
    pub status: u16,
}

/// Label of a refused request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The error's stable code.
    pub code: &'static str,
}

/// Label of a route template.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The matched route template, or `unmatched`.
    pub route: &'static str,
}

/// Labels of a gRPC answer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// The method (`ModelInfer`), or `unknown`.
    pub method: &'static str,
    /// The gRPC status code's name (`OK`, `NOT_FOUND`, …).
    pub code: &'static str,
}

/// Label of a gRPC method.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The method (`ModelInfer`), or `unknown`.
    pub method: &'static str,
}

/// The API's routes, by template: the router's table (`routes/mod.rs` routes these) and the
/// `route` label of the per-route metrics.
pub mod route {
    /// `POST /v1/inference`.
    pub const INFERENCE: &str = "/v1/inference";
    /// `GET /v1/result/{task_id}`.
    pub const RESULT: &str = "/v1/result/{task_id}";
    /// `GET /healthz`.
    pub const HEALTHZ: &str = "/healthz";
    /// `GET /readyz`.
    pub const READYZ: &str = "/readyz";
    /// `GET /metrics`.
    pub const METRICS: &str = "/metrics";
    /// `GET /`.
    pub const STATUS_PAGE: &str = "/";
    /// `GET /status.json`.
    pub const STATUS_JSON: &str = "/status.json";
    /// `GET /openapi.json`.
    pub const OPENAPI: &str = "/openapi.json";
    /// `GET /admin/dlq`.
    pub const DLQ: &str = "/admin/dlq";
    /// `POST /admin/dlq/replay`.
    pub const DLQ_REPLAY: &str = "/admin/dlq/replay";
    /// `POST /admin/dlq/purge`.
    pub const DLQ_PURGE: &str = "/admin/dlq/purge";
    /// `POST /v1/embeddings` (OpenAI-compatible).
    pub const EMBEDDINGS: &str = "/v1/embeddings";
    /// `GET /v1/models` (OpenAI-compatible).
    pub const MODELS: &str = "/v1/models";
    /// `GET /v2` (KServe V2 server metadata).
    pub const V2: &str = "/v2";
    /// `GET /v2/health/live`.
    pub const V2_LIVE: &str = "/v2/health/live";
    /// `GET /v2/health/ready`.
    pub const V2_READY: &str = "/v2/health/ready";
    /// `GET /v2/models/{name}`.
    pub const V2_MODEL: &str = "/v2/models/{name}";
    /// `GET /v2/models/{name}/ready`.
    pub const V2_MODEL_READY: &str = "/v2/models/{name}/ready";
    /// `POST /v2/models/{name}/infer`.
    pub const V2_INFER: &str = "/v2/models/{name}/infer";
    /// Every route above.
    pub const ALL: [&str; 19] = [
        INFERENCE,
        RESULT,
        HEALTHZ,
        READYZ,
        METRICS,
        STATUS_PAGE,
        STATUS_JSON,
        OPENAPI,
        DLQ,
        DLQ_REPLAY,
        DLQ_PURGE,
        EMBEDDINGS,
        MODELS,
        V2,
        V2_LIVE,
        V2_READY,
        V2_MODEL,
        V2_MODEL_READY,
        V2_INFER,
    ];
    /// The label of a request no route matched.
    pub const UNMATCHED: &str = "unmatched";
}

/// One route's series of the per-route metrics, looked up in their label maps once, on first
/// use (so that a route never called has no series, as before), and then updated directly: a
/// request pays no label hashing or map lock for them.
#[derive(Debug, Default)]
struct RouteSeries {
    /// `batchgate_http_request_duration_seconds{route}`.
    duration: OnceLock<Histogram>,
    /// `batchgate_http_requests_total{route,status="200"}`.
    ok: OnceLock<Counter>,
    /// `batchgate_http_requests_total{route,status="202"}`.
    accepted: OnceLock<Counter>,
}

/// Label of a shed request: why it was turned away.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabel {
    /// The answer's stable error code: `overloaded` (queue full, or the estimated
    /// wait too long) or `deadline_unmeetable`.
    pub reason: &'static str,
}

/// Label of a queue partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Partition number.
    pub partition: u32,
}

/// Handles to the gateway's metrics (cloning is shallow). The gauges every process shows
/// (queue depth, stores, memory) are [`crate::ops::OpsGauges`].
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    /// `batchgate_http_requests_total{route,status}`.
    pub http_requests: Family<HttpLabels, Counter>,
    /// `batchgate_submit_duration_seconds`: time to accept a task. Kept for the submit route
    /// without `wait_ms` only, since waits would swamp it.
    pub submit_latency: Histogram,
    /// `batchgate_http_errors_total{code}`: error answers by stable code (bad input, shed…).
    pub errors: Family<CodeLabel, Counter>,
    /// `batchgate_http_request_duration_seconds{route}`: every answer, long polls included.
    pub http_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// `batchgate_shed_total{reason}`: submissions turned away with 503 to protect latency.
    pub shed: Family<ShedLabel, Counter>,
    /// `batchgate_grpc_requests_total{method,code}`: answers of the KServe V2 gRPC door by
    /// method and gRPC status (its HTTP status is always 200).
    pub grpc_requests: Family<GrpcLabels, Counter>,
    /// `batchgate_grpc_request_duration_seconds{method}`: time to answer a gRPC call.
    pub grpc_duration: Family<MethodLabel, Histogram, fn() -> Histogram>,
    /// `batchgate_tasks_accepted_total`.
    pub tasks_accepted: Counter,
    /// `batchgate_dedupe_hits_total`: submissions answered with an existing task's id.
    pub dedupe_hits: Counter,
    /// `batchgate_dedupe_bypassed_total`: submissions enqueued without dedupe because the
    /// cache failed.
    pub dedupe_bypassed: Counter,
    /// `batchgate_rate_limited_total`: `/v1` calls refused by a caller's rate limit.
    pub rate_limited: Counter,
    /// `batchgate_http_requests_in_flight`: API requests (`/v1/…`) being served, the figure
    /// `--max-concurrent-requests` bounds; refreshed at each scrape.
    pub requests_in_flight: Gauge,
    /// The series of each of [`route::ALL`], resolved on first use.
    routes: Arc<[RouteSeries; route::ALL.len()]>,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = GatewayMetrics {
            http_requests: Family::default(),
            submit_latency: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            errors: Family::default(),
            http_duration: Family::new_with_constructor(http_duration_histogram),
            shed: Family::default(),
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(http_duration_histogram),
            tasks_accepted: Counter::default(),
            dedupe_hits: Counter::default(),
            dedupe_bypassed: Counter::default(),
            rate_limited: Counter::default(),
            requests_in_flight: Gauge::default(),
            routes: Arc::default(),
        };
        registry.register(
            "batchgate_http_requests",
            "HTTP answers by route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "batchgate_submit_duration_seconds",
            "Time to accept a task (POST /v1/inference without wait)",
            m.submit_latency.clone(),
        );
        registry.register(
            "batchgate_http_errors",
            "Error answers by stable error code",
            m.errors.clone(),
        );
        registry.register(
            "batchgate_http_request_duration_seconds",
            "Time to answer an HTTP request, by route (long polls included)",
            m.http_duration.clone(),
        );
        registry.register(
            "batchgate_shed",
            "Submissions turned away with 503 to protect latency, by reason",
            m.shed.clone(),
        );
        registry.register(
            "batchgate_grpc_requests",
            "KServe V2 gRPC answers by method and gRPC status",
            m.grpc_requests.clone(),
        );
        registry.register(
            "batchgate_grpc_request_duration_seconds",
            "Time to answer a KServe V2 gRPC call, by method",
            m.grpc_duration.clone(),
        );
        registry.register(
            "batchgate_tasks_accepted",
            "Tasks accepted (answered 202 or 200)",
            m.tasks_accepted.clone(),
        );
        registry.register(
            "batchgate_dedupe_hits",
            "Submissions answered with the task id of an identical input",
            m.dedupe_hits.clone(),
        );
        registry.register(
            "batchgate_dedupe_bypassed",
            "Submissions enqueued without dedupe because the cache failed",
            m.dedupe_bypassed.clone(),
        );
        registry.register(
            "batchgate_rate_limited",
            "API calls refused by the caller's rate limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "batchgate_http_requests_in_flight",
            "API requests being served now (bounded by --max-concurrent-requests)",
            m.requests_in_flight.clone(),
        );
        m
    }
}

impl GatewayMetrics {
    /// Counts one answer with `status` to a request of `route` (one of [`route::ALL`], or
    /// [`route::UNMATCHED`]) that took `seconds`.
    pub fn count_answer(&self, route: &'static str, status: u16, seconds: f64) {
        let Some(series) = route::ALL
            .iter()
            .position(|r| *r == route)
            .and_then(|i| self.routes.get(i))
        else {
            self.http_duration
                .get_or_create(&RouteLabel { route })
                .observe(seconds);
            self.http_requests
                .get_or_create(&HttpLabels { route, status })
                .inc();
            return;
        };
        series
            .duration
            .get_or_init(|| {
                self.http_duration
                    .get_or_create(&RouteLabel { route })
                    .clone()
            })
            .observe(seconds);
        let counter = match status {
            200 => &series.ok,
            202 => &series.accepted,
            _ => {
                self.http_requests
                    .get_or_create(&HttpLabels { route, status })
                    .inc();
                return;
            }
        };
        counter
            .get_or_init(|| {
                self.http_requests
                    .get_or_create(&HttpLabels { route, status })
                    .clone()
            })
            .inc();
    }
}

/// Buckets of the per-route duration: from a fast `202` to a 30 s long poll.
fn http_duration_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Resident set size of this process, from `/proc/self/status` (Linux); `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
