//! The simulated worker behind the JSON batch API (`docs/worker-api.md`).
//!
//! Routes: `POST /v1/batch`, `GET /healthz`, `GET /v1/stats` (what the worker has seen).
//!
//! Besides the documented API, for backpressure tests: every successful answer carries
//! [`LOAD_HEADER`], and a full wait queue ([`crate::Faults::max_queued_calls`]) is answered
//! 429 with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batchgate_net::ServerTls;
use batchgate_protocol::api::{ErrorBody, ErrorDetail};
use batchgate_protocol::worker_api::{BatchRequest, BatchResponse};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::model::{SimError, SimStats, SimWorker};

/// Largest request body: 64 inputs of the gateway's 64 KiB limit, each up to six times longer
/// once JSON-escaped (`\u00XX`), with room to spare.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Response header of every successful `POST /v1/batch`: `<in_flight>/<slots>`, two decimal
/// integers, e.g. `x-worker-load: 3/32`. `in_flight` is the calls holding a slot as the answer
/// leaves (this one has already released its own), `slots` the simulated GPUs.
pub const LOAD_HEADER: &str = "x-worker-load";

/// `Retry-After` of a 429 (full wait queue), in seconds.
pub const OVERLOAD_RETRY_AFTER_SECS: u64 = 1;

/// How long a crashed worker lingers before [`run`] returns, so that the answer of the call
/// that triggered the crash reaches its client before the process exits.
const CRASH_LINGER: Duration = Duration::from_millis(100);

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
                    SimError::Overloaded { .. } => "worker_overloaded",
                    SimError::Stopping => "worker_stopping",
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
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(OVERLOAD_RETRY_AFTER_SECS));
        }
        response
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
) -> Result<impl IntoResponse, WorkerApiError> {
    let Json(request) = body.map_err(|e| WorkerApiError::BadJson(e.body_text(), e.status()))?;
    let outputs = worker.run_batch(&request.inputs).await?;
    let load = format!("{}/{}", worker.in_flight(), worker.config().slots);
    Ok(([(LOAD_HEADER, load)], Json(BatchResponse { outputs })))
}

async fn stats(State(worker): State<Arc<SimWorker>>) -> Json<SimStats> {
    Json(worker.stats())
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` was cancelled and the calls under way finished (hung ones end with 503).
    Shutdown,
    /// The worker crashed on purpose ([`crate::Faults::crash_after`]): it stopped accepting
    /// connections and answers nothing more. The caller should now end the process abruptly,
    /// as a crashed host would (`batchgate worker` exits with a non-zero code).
    Crashed,
}

/// Serves the worker API on `listener` — over TLS if `tls` is given, requiring client
/// certificates if it names a client CA — until `shutdown` is cancelled, then lets calls in
/// progress finish; or until the worker crashes on purpose.
pub async fn run(
    worker: Arc<SimWorker>,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<Stopped> {
    run_with_routes(worker, Router::new(), listener, tls, shutdown).await
}

/// [`run`], with `extra` routes served beside the worker API (the binary adds `/metrics`).
pub async fn run_with_routes(
    worker: Arc<SimWorker>,
    extra: Router,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<Stopped> {
    let app = router(worker.clone()).merge(extra);
    let serve = batchgate_net::serve(listener, app, tls, shutdown.clone());
    // The graceful drain waits for every call under way; hung calls would never finish.
    let end_hangs = async {
        shutdown.cancelled().await;
        worker.stop_hanging();
    };
    tokio::select! {
        (served, ()) = async { tokio::join!(serve, end_hangs) } => served.map(|()| Stopped::Shutdown),
        () = worker.crashed() => {
            // The listener is closed now; connections already open live on until the exit.
            tracing::error!(stats = ?worker.stats(), "simulated worker crashed on purpose");
            tokio::time::sleep(CRASH_LINGER).await;
            Ok(Stopped::Crashed)
        }
    }
}

#[cfg(test)]
mod tests;
