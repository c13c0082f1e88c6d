//! `GET /metrics`: Prometheus text format.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;

use crate::metrics::{resident_memory_bytes, PartitionLabel};
use crate::ops::Ops;
use crate::state::AppState;

/// The API's `/metrics`: the gateway's own scrape-time gauge, then what every process shows.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "Every metric of the process, `batchgate_` prefixed.",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
pub(crate) async fn render_api(State(state): State<AppState>) -> Response {
    refresh_api_gauges(&state);
    render(State(state.ops.clone())).await
}

/// Sets the gateway's scrape-time gauge (its requests in flight).
pub(crate) fn refresh_api_gauges(state: &AppState) {
    state
        .metrics
        .requests_in_flight
        .set(i64::try_from(state.requests_in_flight()).unwrap_or(i64::MAX));
}

/// Refreshes the gauges that are read at scrape time, then renders the registry.
pub(crate) async fn render(State(state): State<Ops>) -> Response {
    match encode_fresh(&state).await {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The registry in the OpenMetrics text format, its scrape-time gauges refreshed first.
pub(crate) async fn encode_fresh(state: &Ops) -> Option<String> {
    refresh_gauges(state).await;
    let mut text = String::new();
    if let Err(error) = encode(&mut text, &state.registry) {
        tracing::error!(%error, "encoding metrics failed");
        return None;
    }
    Some(text)
}

/// Reads the gauges that live elsewhere (queue, stores, the OS). A backend that fails to
/// answer leaves its gauge at the last value read.
async fn refresh_gauges(state: &Ops) {
    let m = &state.gauges;
    for (model, gauges) in state.models.iter().zip(&m.models) {
        if let Ok(depths) = model.queue.depth().await {
            for (partition, depth) in depths.into_iter().enumerate() {
                let partition = u32::try_from(partition).unwrap_or(u32::MAX);
                gauges
                    .queue_depth
                    .get_or_create(&PartitionLabel { partition })
                    .set(i64::try_from(depth).unwrap_or(i64::MAX));
            }
        }
        if let Ok(letters) = model.dead_letters.count().await {
            gauges
                .dead_letter_queue
                .set(i64::try_from(letters).unwrap_or(i64::MAX));
        }
    }
    if let Ok(records) = state.results.count().await {
        m.result_store_records
            .set(i64::try_from(records).unwrap_or(i64::MAX));
    }
    if let Some(rss) = resident_memory_bytes() {
        m.resident_memory
            .set(i64::try_from(rss).unwrap_or(i64::MAX));
    }
}
