//! The reference worker server: one port, four protocols, one model behind them
//! (`docs/worker-api.md`).
//!
//! - batchgate's JSON batch API: `POST /v1/batch`, `GET /healthz`, `GET /v1/stats`
//!   ([`batch_api`]);
//! - KServe V2 / Open Inference Protocol: `POST /v2/models/sim/infer` (BYTES in, BYTES out),
//!   `GET /v2`, `/v2/health/live`, `/v2/health/ready`, `/v2/models/sim`,
//!   `/v2/models/sim/ready` ([`kserve_v2`]);
//! - OpenAI-style embeddings: `POST /v1/embeddings`, `GET /v1/models` ([`openai`]);
//! - gRPC `batchgate.worker.v1.Worker/Infer` and `grpc.health.v1.Health`, on the same port:
//!   HTTP/2 without TLS, routed by path ([`grpc`]).
//!
//! Whatever the protocol, a batch is computed by a [`Served`] model: an
//! `Arc<dyn batchgate_worker::Worker>` — the simulated GPU, or any real model that implements
//! the trait. When it is the simulator, the server also offers its counters (`/v1/stats`),
//! the load header, and its crash and hang faults.
//!
//! Besides the documented API, for backpressure tests: every successful `POST /v1/batch`
//! carries [`LOAD_HEADER`], and a full wait queue ([`batchgate_sim::Faults::max_queued_calls`]) is
//! answered 429 with `Retry-After` (`RESOURCE_EXHAUSTED` over gRPC).

mod batch_api;
mod error;
mod grpc;
mod kserve_v2;
mod openai;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use batchgate_net::ServerTls;
use batchgate_sim::SimWorker;
use batchgate_worker::Worker;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) use error::ApiError;

/// Largest request body: 64 inputs of the gateway's 64 KiB limit, each up to six times longer
/// once JSON-escaped (`\u00XX`), with room to spare. gRPC messages have the same limit.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Response header of every successful `POST /v1/batch` from the simulator:
/// `<in_flight>/<slots>`, two decimal integers, e.g. `x-worker-load: 3/32`. `in_flight` is the
/// calls holding a slot as the answer leaves (this one has already released its own), `slots`
/// the simulated GPUs.
pub const LOAD_HEADER: &str = "x-worker-load";

/// `Retry-After` of a 429 (full wait queue), in seconds.
pub const OVERLOAD_RETRY_AFTER_SECS: u64 = 1;

/// The simulator's model name in the V2 and OpenAI APIs.
pub const SIM_MODEL_NAME: &str = "sim";

/// How long a crashed worker lingers before [`run`] returns, so that the answer of the call
/// that triggered the crash reaches its client before the process exits.
const CRASH_LINGER: Duration = Duration::from_millis(100);

/// What the server serves: the model that computes a batch, and the simulator's extras when
/// the model is the simulator. Cloning is shallow.
#[derive(Clone)]
pub struct Served {
    /// Computes a batch, whatever protocol it came in by.
    model: Arc<dyn Worker>,
    /// The model's name in the V2 (`/v2/models/{name}`) and OpenAI (`model`) APIs.
    name: String,
    /// Further names the same model answers to (several models to try a deployment's
    /// routing without a GPU); cloning is shallow.
    also: Arc<[String]>,
    /// Most inputs per call, checked before the model is called; `None` when the model
    /// checks it itself (the simulator does, to count oversized calls).
    max_batch_size: Option<usize>,
    /// The simulator behind `model`, if it is one: counters, load, crash and hang faults.
    sim: Option<Arc<SimWorker>>,
    /// The API key every inference call must carry (`Authorization: Bearer KEY`), if any.
    api_key: Option<Arc<str>>,
}

impl Served {
    /// The simulated GPU, named [`SIM_MODEL_NAME`].
    pub fn sim(sim: Arc<SimWorker>) -> Served {
        Served {
            model: sim.clone(),
            name: SIM_MODEL_NAME.to_owned(),
            also: Arc::new([]),
            max_batch_size: None,
            sim: Some(sim),
            api_key: None,
        }
    }

    /// Any model, served under `name`, refusing calls of more than `max_batch_size` inputs.
    pub fn model(name: &str, model: Arc<dyn Worker>, max_batch_size: usize) -> Served {
        Served {
            model,
            name: name.to_owned(),
            also: Arc::new([]),
            max_batch_size: Some(max_batch_size.max(1)),
            sim: None,
            api_key: None,
        }
    }

    /// Requires `Authorization: Bearer KEY` on every inference call (HTTP and gRPC), as
    /// hosted inference servers do; health checks stay open. `None` leaves calls open.
    pub fn with_api_key(mut self, key: Option<String>) -> Served {
        self.api_key = key.map(Arc::from);
        self
    }

    /// The model's name in the V2 and OpenAI APIs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Answers to `names` too, as further models (the same model under each name).
    pub fn with_names(mut self, names: Vec<String>) -> Served {
        self.also = names.into();
        self
    }

    /// Every name the model answers to, its own first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.also.iter().map(String::as_str))
    }

    /// Whether the model answers to `name`.
    pub fn serves(&self, name: &str) -> bool {
        self.names().any(|n| n == name)
    }

    /// Runs one batch through the model, after the checks every protocol shares.
    pub(crate) async fn run(&self, inputs: &[String]) -> Result<Vec<String>, ApiError> {
        if inputs.is_empty() {
            return Err(ApiError::Empty);
        }
        if let Some(max) = self.max_batch_size {
            if inputs.len() > max {
                return Err(ApiError::TooLarge {
                    got: inputs.len(),
                    max,
                });
            }
        }
        let outputs = self.model.infer(inputs).await.map_err(ApiError::Model)?;
        // The batch protocols carry text: a typed output in the form `/v1/inference` shows.
        let outputs: Vec<String> = outputs
            .iter()
            .map(batchgate_worker::Output::to_text)
            .collect();
        if outputs.len() != inputs.len() {
            // A model breaking the trait's promise: better an error than a cross-wired batch.
            return Err(ApiError::Model(
                batchgate_worker::WorkerError::InvalidResponse(format!(
                    "the model gave {} outputs for {} inputs",
                    outputs.len(),
                    inputs.len()
                )),
            ));
        }
        Ok(outputs)
    }
}

impl From<Arc<SimWorker>> for Served {
    fn from(sim: Arc<SimWorker>) -> Served {
        Served::sim(sim)
    }
}

/// The router of every protocol, for tests to call directly or to serve.
pub fn router(served: impl Into<Served>) -> Router {
    let served = served.into();
    let http = Router::new()
        .merge(batch_api::routes())
        .merge(kserve_v2::routes())
        .merge(openai::routes())
        .with_state(served.clone());
    let api_key = served.api_key.clone();
    let router = grpc::add_routes(http, served).layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    match api_key {
        Some(key) => router.layer(axum::middleware::from_fn_with_state(key, require_api_key)),
        None => router,
    }
}

/// Refuses an inference call without the API key: 401 in the JSON error shape over HTTP,
/// `UNAUTHENTICATED` over gRPC. Health checks need no key.
async fn require_api_key(
    axum::extract::State(key): axum::extract::State<Arc<str>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request.uri().path();
    let open = matches!(path, "/healthz" | "/v2/health/live" | "/v2/health/ready")
        || path.starts_with("/grpc.health.v1.Health/");
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if open || same_key(given.as_bytes(), key.as_bytes()) {
        return next.run(request).await;
    }
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unauthenticated("an API key is required")
            .into_http::<axum::body::Body>()
            .into_response();
    }
    (
        axum::http::StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({
            "error": { "code": "unauthorized", "message": "an API key is required" }
        })),
    )
        .into_response()
}

/// Compares every byte of `expected`, whatever `given` is, so the time taken does not tell
/// how much of a guess was right.
fn same_key(given: &[u8], expected: &[u8]) -> bool {
    let mut differ = given.len() != expected.len();
    for (i, e) in expected.iter().enumerate() {
        differ |= given.get(i) != Some(e);
    }
    !differ
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` was cancelled and the calls under way finished (hung ones end with 503).
    Shutdown,
    /// The worker crashed on purpose ([`batchgate_sim::Faults::crash_after`]): it stopped accepting
    /// connections and answers nothing more. The caller should now end the process abruptly,
    /// as a crashed host would (`batchgate worker` exits with a non-zero code).
    Crashed,
}

/// Serves every protocol on `listener` — over TLS if `tls` is given, requiring client
/// certificates if it names a client CA — until `shutdown` is cancelled, then lets calls in
/// progress finish; or until the simulated worker crashes on purpose.
pub async fn run(
    served: impl Into<Served>,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<Stopped> {
    run_with_routes(served, Router::new(), listener, tls, shutdown).await
}

/// [`run`], with `extra` routes served beside the worker API (the binary adds `/metrics`).
pub async fn run_with_routes(
    served: impl Into<Served>,
    extra: Router,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<Stopped> {
    let served = served.into();
    let sim = served.sim.clone();
    // HTTP/1.1 and HTTP/2 (gRPC clients speak it without TLS, with prior knowledge; over TLS,
    // ALPN chooses).
    let app = router(served).merge(extra);
    let serve = batchgate_net::serve(listener, app, tls, shutdown.clone());
    // The graceful drain waits for every call under way; hung calls would never finish.
    let end_hangs = async {
        shutdown.cancelled().await;
        if let Some(sim) = &sim {
            sim.stop_hanging();
        }
    };
    let crashed = async {
        match &sim {
            Some(sim) => sim.crashed().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        (served, ()) = async { tokio::join!(serve, end_hangs) } => served.map(|()| Stopped::Shutdown),
        () = crashed => {
            // The listener is closed now; connections already open live on until the exit.
            if let Some(sim) = &sim {
                tracing::error!(stats = ?sim.stats(), "simulated worker crashed on purpose");
            }
            tokio::time::sleep(CRASH_LINGER).await;
            Ok(Stopped::Crashed)
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod protocol_tests;
