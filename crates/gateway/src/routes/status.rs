//! `GET /`: a live status page (one self-contained HTML file, no external resources), and
//! `GET /status.json`, the snapshot it polls every second.
//!
//! The snapshot is read from the process's own `/metrics` text, parsed with a Prometheus
//! text parser, so the page shows exactly what Prometheus would scrape: a gateway shows its
//! requests and the queue, a batcher its batches and the worker, `serve` all of it. Counters
//! and histograms are cumulative; the page turns two snapshots into rates and into
//! percentiles of the last few seconds, as `rate()` and `histogram_quantile()` would.

use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use batchgate_protocol::task::unix_ms;
use prometheus_parse::{Scrape, Value};
use serde::Serialize;
use std::collections::BTreeMap;

use super::metrics::{encode_fresh, refresh_api_gauges};
use crate::ops::Ops;
use crate::state::AppState;

/// The page: inline CSS, JS and SVG.
const PAGE: &str = include_str!("status/index.html");

#[utoipa::path(
    get,
    path = "/",
    tag = "operations",
    operation_id = "status_page",
    responses((status = 200, description = "The live status page (self-contained HTML).",
        content_type = "text/html; charset=utf-8", body = String))
)]
pub(crate) async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE)).into_response()
}

/// A cumulative histogram: `(upper bound, count ≤ bound)`, `+Inf` last (written `null`).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct HistogramView {
    #[schema(value_type = Vec<Vec<Option<f64>>>)]
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

/// What the page draws; `null` fields are not exported by this process.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct Snapshot {
    /// When the snapshot was taken, ms since the Unix epoch.
    at_ms: u64,
    /// `batchgate_tasks_accepted_total` (gateway).
    tasks_accepted: Option<f64>,
    /// `batchgate_tasks_completed_total`, all outcomes (batcher).
    tasks_completed: Option<f64>,
    /// `batchgate_queue_depth`, summed over partitions.
    queue_depth: Option<f64>,
    /// `batchgate_queue_depth` by partition.
    queue_depth_by_partition: BTreeMap<String, f64>,
    /// `batchgate_queue_depth` by model, with several models (each one's `model` label).
    queue_depth_by_model: BTreeMap<String, f64>,
    /// `batchgate_batches_total` by reason.
    batches_by_reason: BTreeMap<String, f64>,
    /// `batchgate_batch_size`.
    batch_size: Option<HistogramView>,
    /// `batchgate_task_latency_seconds`: acceptance to result stored.
    task_latency: Option<HistogramView>,
    /// `batchgate_worker_call_duration_seconds_sum`: slot-seconds spent in worker calls.
    worker_busy_seconds: Option<f64>,
    /// `batchgate_inflight_batches_max`: worker calls the batcher allows at once.
    worker_slots: Option<f64>,
    /// `batchgate_inflight_batches`.
    inflight_batches: Option<f64>,
}

/// The API's snapshot: the gateway's own scrape-time gauge first.
#[utoipa::path(
    get,
    path = "/status.json",
    tag = "operations",
    operation_id = "status",
    responses((status = 200, description = "What the status page draws, from this process's metrics; `null`: not exported here.", body = Snapshot))
)]
pub(crate) async fn snapshot_api(State(state): State<AppState>) -> Response {
    refresh_api_gauges(&state);
    snapshot(State(state.ops.clone())).await
}

pub(crate) async fn snapshot(State(state): State<Ops>) -> Response {
    let Some(text) = encode_fresh(&state).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))) {
        Ok(scrape) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(read(&scrape, unix_ms(SystemTime::now()))),
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "parsing our own metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The plain value of a counter, gauge or untyped sample (OpenMetrics counters come back
/// untyped under their `_total` name).
fn scalar(value: &Value) -> Option<f64> {
    match value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
        Value::Histogram(_) | Value::Summary(_) => None,
    }
}

/// Sum of every series of `name`, `None` if there is none.
fn sum(scrape: &Scrape, name: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter_map(|s| scalar(&s.value))
        .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
}

/// Per value of `label`, the sum of the series of `name`.
fn by_label(scrape: &Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in scrape.samples.iter().filter(|s| s.metric == name) {
        if let (Some(key), Some(v)) = (s.labels.get(label), scalar(&s.value)) {
            *out.entry(key.to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

/// The histogram `name`, its series summed bucket by bucket.
fn histogram(scrape: &Scrape, name: &str) -> Option<HistogramView> {
    let mut view: Option<HistogramView> = None;
    for s in scrape.samples.iter().filter(|s| s.metric == name) {
        if let Value::Histogram(buckets) = &s.value {
            let v = view.get_or_insert_with(HistogramView::default);
            if v.buckets.is_empty() {
                v.buckets = buckets.iter().map(|b| (b.less_than, 0.0)).collect();
            }
            for (acc, b) in v.buckets.iter_mut().zip(buckets) {
                acc.1 += b.count;
            }
        }
    }
    let mut view = view?;
    view.count = sum(scrape, &format!("{name}_count")).unwrap_or(0.0);
    view.sum = sum(scrape, &format!("{name}_sum")).unwrap_or(0.0);
    Some(view)
}

fn read(scrape: &Scrape, at_ms: u64) -> Snapshot {
    let queue_depth_by_partition = by_label(scrape, "batchgate_queue_depth", "partition");
    Snapshot {
        at_ms,
        tasks_accepted: sum(scrape, "batchgate_tasks_accepted_total"),
        tasks_completed: sum(scrape, "batchgate_tasks_completed_total"),
        queue_depth: (!queue_depth_by_partition.is_empty())
            .then(|| queue_depth_by_partition.values().sum()),
        queue_depth_by_partition,
        queue_depth_by_model: by_label(scrape, "batchgate_queue_depth", "model"),
        batches_by_reason: by_label(scrape, "batchgate_batches_total", "reason"),
        batch_size: histogram(scrape, "batchgate_batch_size"),
        task_latency: histogram(scrape, "batchgate_task_latency_seconds"),
        worker_busy_seconds: sum(scrape, "batchgate_worker_call_duration_seconds_sum"),
        worker_slots: sum(scrape, "batchgate_inflight_batches_max"),
        inflight_batches: sum(scrape, "batchgate_inflight_batches"),
    }
}
