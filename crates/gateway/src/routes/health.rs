//! `GET /healthz` (the process answers) and `GET /readyz` (it accepts work).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::readiness::QueueVerdict;
use crate::state::AppState;

/// Alive: answers as long as the process serves HTTP.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: not shutting down, the queue answers (or has failed only for less than the
/// readiness tolerance: a short Redis blip does not empty every load balancer at once), and,
/// in a process that runs a batcher, at least one worker is healthy. 503 otherwise.
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let unavailable = |status: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": status })),
        )
    };
    if state.readiness.is_draining() || !state.admission.is_open().await {
        return unavailable("draining");
    }
    if state.readiness.workers_healthy() == Some(false) {
        return unavailable("no_healthy_worker");
    }
    let depth = state.queue.depth().await;
    if let Err(error) = &depth {
        tracing::warn!(%error, "readiness check: queue unavailable");
    }
    match state
        .readiness
        .queue_checked(depth.is_ok(), std::time::Instant::now())
    {
        QueueVerdict::Up => {
            let depth: usize = depth.map(|d| d.iter().sum()).unwrap_or_default();
            (
                StatusCode::OK,
                Json(json!({ "status": "ready", "queue_depth": depth })),
            )
        }
        QueueVerdict::Tolerated { failing_for } => (
            StatusCode::OK,
            Json(json!({
                "status": "ready",
                "queue": "unavailable",
                "queue_failing_ms": failing_for.as_millis() as u64,
                "tolerated_ms": state.readiness.tolerance().as_millis() as u64,
            })),
        ),
        QueueVerdict::Down { .. } => unavailable("queue_unavailable"),
    }
}
