//! The JSON batch API (`POST /v1/batch`, `docs/worker-api.md`) in front of any
//! [`Worker`], for `batchgate worker --model-dir`.
//!
//! Interim: on this branch the reference server (`batchgate_sim::server`) serves only the
//! simulator. On main (since the adapters merge, e1a5577) it serves any model:
//! `Served::model(name, Arc<dyn Worker>, max_batch_size)` passed to `server::run(served,
//! listener, tls, shutdown)` gives the JSON batch API, KServe V2, OpenAI embeddings and gRPC.
//! When this branch meets main, `worker::run` should do that with the model and this file goes.
//! Until then it answers like that server: same route, body limit and error shape.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batchgate_protocol::api::{ErrorBody, ErrorDetail};
use batchgate_protocol::worker_api::{BatchRequest, BatchResponse};
use batchgate_worker::{Worker, WorkerError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `POST /v1/batch` and `GET /healthz` for `worker`.
pub fn router(worker: Arc<dyn Worker>) -> Router {
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(batchgate_sim::server::MAX_BODY_BYTES))
        .with_state(worker)
}

/// Serves [`router`] until `shutdown`, then lets the calls under way finish.
pub async fn run(
    worker: Arc<dyn Worker>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(worker))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn batch(
    State(worker): State<Arc<dyn Worker>>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return error(rejection.status(), "invalid_request", rejection.body_text())
        }
    };
    if request.inputs.is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_batch",
            "batch has no inputs".into(),
        );
    }
    match worker.infer(&request.inputs).await {
        Ok(outputs) => Json(BatchResponse { outputs }).into_response(),
        Err(WorkerError::Status { status, message }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "batch_too_large"
            } else {
                "model_failed"
            };
            error(status, code, message)
        }
        Err(other) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "model_failed",
            other.to_string(),
        ),
    }
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.into(),
            message,
        },
    };
    (status, Json(body)).into_response()
}
