//! The simulated worker behind the JSON batch API (`docs/worker-api.md`).
//!
//! Routes: `POST /v1/batch`, `GET /healthz`, `GET /v1/stats` (what the worker has seen).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use batchgate_protocol::api::{ErrorBody, ErrorDetail};
use batchgate_protocol::worker_api::{BatchRequest, BatchResponse};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::model::{SimError, SimStats, SimWorker};

/// Largest request body: 64 inputs of the gateway's 64 KiB limit, each up to six times longer
/// once JSON-escaped (`\u00XX`), with room to spare.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Errors of the worker API, each mapped to a status and a stable code in one place.
#[derive(Debug, thiserror::Error)]
enum WorkerApiError {
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("{0}")]
    BadJson(String, StatusCode),
}

impl IntoResponse for WorkerApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            WorkerApiError::Sim(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                match e {
                    SimError::TooLarge { .. } => "batch_too_large",
                    SimError::Empty => "empty_batch",
                    SimError::Poisoned => "model_failed",
                    SimError::Injected => "injected_failure",
                },
            ),
            WorkerApiError::BadJson(_, status) => (*status, "invalid_request"),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}

/// The router, for tests to call directly or to serve.
pub fn router(worker: Arc<SimWorker>) -> Router {
    Router::new()
        .route("/v1/batch", post(batch))
        .route("/v1/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(worker)
}

async fn batch(
    State(worker): State<Arc<SimWorker>>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Json<BatchResponse>, WorkerApiError> {
    let Json(request) = body.map_err(|e| WorkerApiError::BadJson(e.body_text(), e.status()))?;
    let outputs = worker.run_batch(&request.inputs).await?;
    Ok(Json(BatchResponse { outputs }))
}

async fn stats(State(worker): State<Arc<SimWorker>>) -> Json<SimStats> {
    Json(worker.stats())
}

/// Serves the worker API on `listener` until `shutdown` is cancelled, then lets calls in
/// progress finish.
pub async fn run(
    worker: Arc<SimWorker>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener.tap_io(no_delay), router(worker))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Small answers go out at once rather than waiting on Nagle's algorithm.
fn no_delay(stream: &mut TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use batchgate_protocol::sim_output;

    use super::*;
    use crate::SimConfig;

    async fn start() -> (String, CancellationToken) {
        let worker = Arc::new(SimWorker::new(SimConfig {
            base: Duration::from_millis(1),
            per_item: Duration::ZERO,
            ..SimConfig::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let token = CancellationToken::new();
        tokio::spawn(run(worker, listener, token.clone()));
        (url, token)
    }

    #[tokio::test]
    async fn serves_batches_and_refuses_oversize_with_json_413() {
        let (url, token) = start().await;
        let client = reqwest::Client::new();
        let ok: BatchResponse = client
            .post(format!("{url}/v1/batch"))
            .json(&BatchRequest {
                inputs: vec!["x".into(), "y".into()],
            })
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(ok.outputs, vec![sim_output("x"), sim_output("y")]);

        let big = BatchRequest {
            inputs: (0..65).map(|i| i.to_string()).collect(),
        };
        let resp = client
            .post(format!("{url}/v1/batch"))
            .json(&big)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 413);
        let err: ErrorBody = resp.json().await.expect("json error");
        assert_eq!(err.error.code, "batch_too_large");

        let resp = client
            .post(format!("{url}/v1/batch"))
            .header("content-type", "application/json")
            .body("{\"inputs\": 5}")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 422);
        let err: ErrorBody = resp.json().await.expect("json error");
        assert_eq!(err.error.code, "invalid_request");

        let stats: SimStats = client
            .get(format!("{url}/v1/stats"))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!((stats.calls, stats.oversized_calls), (1, 1));
        token.cancel();
    }
}
