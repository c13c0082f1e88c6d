//! `GET /healthz` (the process answers) and `GET /readyz` (it accepts work).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ops::Ops;
use crate::readiness::QueueVerdict;

/// What `/healthz` answers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// What `/readyz` answers.
#[derive(Debug, Default, Serialize, ToSchema)]
pub(crate) struct Ready {
    /// `ready`, or why not: `draining`, `no_healthy_worker`, `queue_unavailable`.
    status: &'static str,
    /// Tasks waiting, when the queue answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_depth: Option<u64>,
    /// `unavailable` while queue errors are tolerated.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<&'static str>,
    /// How long the queue has been failing, while tolerated.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_failing_ms: Option<u64>,
    /// How long queue errors are tolerated, while they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    tolerated_ms: Option<u64>,
}

/// Alive: answers as long as the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    responses((status = 200, description = "The process serves HTTP.", body = Health))
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Ready: not shutting down, the queue answers (or has failed only for less than the
/// readiness tolerance: a short Redis blip does not empty every load balancer at once), and,
/// in a process that runs a batcher, at least one worker is healthy. 503 otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Accepting work.", body = Ready),
        (status = 503, description = "Not accepting work: `status` says why.", body = Ready),
    )
)]
pub(crate) async fn readyz(State(state): State<Ops>) -> (StatusCode, Json<Ready>) {
    let unavailable = |status: &'static str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Ready {
                status,
                ..Ready::default()
            }),
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
                Json(Ready {
                    status: "ready",
                    queue_depth: Some(depth as u64),
                    ..Ready::default()
                }),
            )
        }
        QueueVerdict::Tolerated { failing_for } => (
            StatusCode::OK,
            Json(Ready {
                status: "ready",
                queue: Some("unavailable"),
                queue_failing_ms: Some(failing_for.as_millis() as u64),
                tolerated_ms: Some(state.readiness.tolerance().as_millis() as u64),
                ..Ready::default()
            }),
        ),
        QueueVerdict::Down { .. } => unavailable("queue_unavailable"),
    }
}
