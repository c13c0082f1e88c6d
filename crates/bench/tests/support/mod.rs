//! A tiny server implementing batchgate's public API honestly, for tests of `run()`:
//! output = `sim_output(input)`, answered at once (or `202` + poll when `wait_ms=0`), and a
//! `/metrics` that follows the traffic it has had, so the bench's deltas can be checked
//! against the requests it sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use batchgate_protocol::api::{
    ErrorBody, ErrorDetail, InferenceRequest, TaskStatus, TaskView, WaitQuery,
};
use batchgate_protocol::sim_output;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the test server answers `POST /v1/inference`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Behaviour {
    /// The right output, at once (or pending then right, when `wait_ms=0`).
    Honest,
    /// Always `429 rate_limited` with `Retry-After`.
    RateLimited,
    /// `SUCCESS` with an output that is not `sim_output(input)`.
    WrongOutput,
    /// Never answers (the client's timeout must end the request).
    Silent,
}

#[derive(Debug)]
pub(crate) struct Shared {
    behaviour: Behaviour,
    /// Tasks answered `202`, until their result is fetched.
    pending: Mutex<HashMap<String, TaskView>>,
    next_id: AtomicU64,
    pub(crate) inferences: AtomicU64,
    pub(crate) polls: AtomicU64,
    /// The inference requests seen so far at each `/metrics` scrape, in order.
    scrapes: Mutex<Vec<u64>>,
}

impl TestServer {
    /// The inference requests the server had seen at each scrape, in order.
    pub(crate) fn seen_at_scrapes(&self) -> Vec<u64> {
        self.0.scrapes.lock().expect("test server lock").clone()
    }
}

/// The server's state; cloning is shallow.
#[derive(Debug, Clone)]
pub(crate) struct TestServer(pub(crate) Arc<Shared>);

fn error(status: StatusCode, code: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: format!("test server says {code}"),
        },
    };
    (status, Json(body)).into_response()
}

async fn inference(
    State(server): State<TestServer>,
    Query(wait): Query<WaitQuery>,
    Json(request): Json<InferenceRequest>,
) -> Response {
    let shared = &server.0;
    shared.inferences.fetch_add(1, Ordering::Relaxed);
    let id = format!("task-{}", shared.next_id.fetch_add(1, Ordering::Relaxed));
    let mut view = TaskView {
        task_id: id.clone(),
        status: TaskStatus::Success,
        output: Some(sim_output(&request.input)),
        error: None,
        created_at: 1,
        completed_at: Some(2),
    };
    match shared.behaviour {
        Behaviour::Honest if wait.wait_ms == Some(0) => {
            shared
                .pending
                .lock()
                .expect("test server lock")
                .insert(id.clone(), view.clone());
            view.status = TaskStatus::Pending;
            view.output = None;
            view.completed_at = None;
            (StatusCode::ACCEPTED, Json(view)).into_response()
        }
        Behaviour::Honest => Json(view).into_response(),
        Behaviour::WrongOutput => {
            view.output = Some(sim_output("something else"));
            Json(view).into_response()
        }
        Behaviour::RateLimited => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            response
        }
        Behaviour::Silent => std::future::pending().await,
    }
}

async fn result(State(server): State<TestServer>, Path(id): Path<String>) -> Response {
    server.0.polls.fetch_add(1, Ordering::Relaxed);
    let view = server
        .0
        .pending
        .lock()
        .expect("test server lock")
        .remove(&id);
    match view {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, "task_not_found"),
    }
}

/// What the server reports after `n` inference requests: each counted as one batch of 4
/// tasks (mean batch size 4) that took 0.25 s of worker time; one batch in three left on its
/// timer, the others full; resident memory of 1,000 bytes per request so far, plus 1 MB.
pub(crate) const TASKS_PER_BATCH: u64 = 4;
/// Requests the server "served" before the test, as a long-running server has: the bench's
/// deltas must subtract them. A multiple of 3, so that the flush split of the test's own
/// requests is exactly a third on the timer.
const PRIOR_REQUESTS: u64 = 999;
/// Worker time of one request's batch, in seconds (exact in binary floating point).
pub(crate) const WORKER_SECS_PER_BATCH: f64 = 0.25;

/// The traffic-driven `/metrics` of [`TASKS_PER_BATCH`] and [`WORKER_SECS_PER_BATCH`].
async fn metrics(State(server): State<TestServer>) -> String {
    let n = {
        let mut scrapes = server.0.scrapes.lock().expect("test server lock");
        let n = server.0.inferences.load(Ordering::Relaxed);
        scrapes.push(n);
        PRIOR_REQUESTS + n
    };
    format!(
        "# HELP batchgate_batch_size Tasks per batch.\n\
         # TYPE batchgate_batch_size histogram\n\
         batchgate_batch_size_bucket{{le=\"1\"}} 0\n\
         batchgate_batch_size_bucket{{le=\"8\"}} {n}\n\
         batchgate_batch_size_bucket{{le=\"+Inf\"}} {n}\n\
         batchgate_batch_size_sum {sum}\n\
         batchgate_batch_size_count {n}\n\
         # TYPE batchgate_batches_total counter\n\
         batchgate_batches_total{{reason=\"full\"}} {full}\n\
         batchgate_batches_total{{reason=\"timer\"}} {timer}\n\
         # TYPE batchgate_process_resident_memory_bytes gauge\n\
         batchgate_process_resident_memory_bytes {resident}\n\
         # TYPE batchgate_worker_call_duration_seconds histogram\n\
         batchgate_worker_call_duration_seconds_bucket{{le=\"+Inf\"}} {n}\n\
         batchgate_worker_call_duration_seconds_sum {worker_secs}\n\
         batchgate_worker_call_duration_seconds_count {n}\n",
        sum = TASKS_PER_BATCH * n,
        full = n - n / 3,
        timer = n / 3,
        resident = 1_000_000 + 1000 * n,
        worker_secs = WORKER_SECS_PER_BATCH * n as f64,
    )
}

/// The resident memory the server reports after `n` requests of the test.
pub(crate) fn resident_bytes(n: u64) -> u64 {
    1_000_000 + 1000 * (PRIOR_REQUESTS + n)
}

/// Starts the test server on a free loopback port; returns its base URL.
pub(crate) async fn start(behaviour: Behaviour) -> (String, TestServer, JoinHandle<()>) {
    let server = TestServer(Arc::new(Shared {
        behaviour,
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        inferences: AtomicU64::new(0),
        polls: AtomicU64::new(0),
        scrapes: Mutex::new(Vec::new()),
    }));
    let app = Router::new()
        .route("/v1/inference", post(inference))
        .route("/v1/result/{id}", get(result))
        .route("/metrics", get(metrics))
        .with_state(server.clone());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("test server");
    });
    (url, server, task)
}
