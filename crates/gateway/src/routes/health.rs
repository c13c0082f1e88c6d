//! `GET /healthz` (the process answers) and `GET /readyz` (it accepts work).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::ops::{ModelQueue, Ops};
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
    /// Tasks waiting (every model's), when the queues answered.
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
    /// With several models, each named one's own verdict (`/v2/models/{name}/ready`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    models: BTreeMap<String, ModelReady>,
}

/// One model's readiness, in `/readyz`'s `models`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModelReady {
    /// `ready`, `no_healthy_worker` (none of its workers is healthy) or `queue_unavailable`.
    status: &'static str,
    /// Its tasks waiting, when its queue answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_depth: Option<u64>,
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
    verdict(&state, None).await
}

/// Tasks waiting in one model's queue, or the queue's failure.
async fn depth_of(model: &ModelQueue) -> Result<u64, ()> {
    match model.queue.depth().await {
        Ok(depths) => Ok(depths.iter().sum::<usize>() as u64),
        Err(error) => {
            tracing::warn!(%error, model = ?model.label, "readiness check: queue unavailable");
            Err(())
        }
    }
}

/// The verdict of the process (`model` `None`: every model's queue, and some model's
/// workers), or of the model at that position among the served models (its own queue and
/// workers).
pub(crate) async fn verdict(state: &Ops, model: Option<usize>) -> (StatusCode, Json<Ready>) {
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
    let healthy = match model {
        Some(index) => state.readiness.model_workers_healthy(index),
        None => state.readiness.workers_healthy(),
    };
    if healthy == Some(false) {
        return unavailable("no_healthy_worker");
    }
    let checked: Vec<&ModelQueue> = match model {
        Some(index) => state.models.get(index).into_iter().collect(),
        None => state.models.iter().collect(),
    };
    let depths = futures_util::future::join_all(checked.iter().map(|m| depth_of(m))).await;
    let all_up = depths.iter().all(Result::is_ok);
    // With several models, the process's answer names each one's own.
    let mut models = BTreeMap::new();
    if model.is_none() {
        for (index, (m, depth)) in checked.iter().zip(&depths).enumerate() {
            let Some(name) = &m.label else { continue };
            let status = if state.readiness.model_workers_healthy(index) == Some(false) {
                "no_healthy_worker"
            } else if depth.is_err() {
                "queue_unavailable"
            } else {
                "ready"
            };
            let queue_depth = depth.ok();
            models.insert(
                name.clone(),
                ModelReady {
                    status,
                    queue_depth,
                },
            );
        }
    }
    match state
        .readiness
        .queue_checked(all_up, std::time::Instant::now())
    {
        QueueVerdict::Up => (
            StatusCode::OK,
            Json(Ready {
                status: "ready",
                queue_depth: Some(depths.iter().flatten().sum()),
                models,
                ..Ready::default()
            }),
        ),
        QueueVerdict::Tolerated { failing_for } => (
            StatusCode::OK,
            Json(Ready {
                status: "ready",
                queue: Some("unavailable"),
                queue_failing_ms: Some(failing_for.as_millis() as u64),
                tolerated_ms: Some(state.readiness.tolerance().as_millis() as u64),
                models,
                ..Ready::default()
            }),
        ),
        QueueVerdict::Down { .. } => unavailable("queue_unavailable"),
    }
}
