//! `GET /healthz` (the process answers) and `GET /readyz` (it accepts work).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::state::AppState;

/// Alive: answers as long as the process serves HTTP.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: accepting tasks and the queue answers. 503 while draining or when the queue fails.
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if !state.admission.is_open().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        );
    }
    match state.queue.depth().await {
        Ok(depth) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "queue_depth": depth.iter().sum::<usize>() })),
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check: queue unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "queue_unavailable" })),
            )
        }
    }
}
