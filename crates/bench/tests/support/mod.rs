//! A tiny server implementing batchgate's public API honestly, for tests of `run()`:
//! output = `sim_output(input)`, answered at once (or `202` + poll when `wait_ms=0`), and a
//! `/metrics` whose batch histogram moves by a fixed amount per scrape, so deltas are exact.

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
    scrapes: AtomicU64,
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

/// Scrape `k` reports `10k` batches of total size `40k` (7k full, 3k timer) and `2k` seconds in
/// worker calls: every delta between consecutive scrapes is 10 batches of mean size 4 and 2 s
/// of worker time.
async fn metrics(State(server): State<TestServer>) -> String {
    let k = server.0.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
    format!(
        "# HELP batchgate_batch_size Tasks per batch.\n\
         # TYPE batchgate_batch_size histogram\n\
         batchgate_batch_size_bucket{{le=\"1\"}} {k}\n\
         batchgate_batch_size_bucket{{le=\"8\"}} {count}\n\
         batchgate_batch_size_bucket{{le=\"+Inf\"}} {count}\n\
         batchgate_batch_size_sum {sum}\n\
         batchgate_batch_size_count {count}\n\
         # TYPE batchgate_batches_total counter\n\
         batchgate_batches_total{{reason=\"full\"}} {full}\n\
         batchgate_batches_total{{reason=\"timer\"}} {timer}\n\
         # TYPE batchgate_process_resident_memory_bytes gauge\n\
         batchgate_process_resident_memory_bytes 12345678\n\
         # TYPE batchgate_worker_call_duration_seconds histogram\n\
         batchgate_worker_call_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n\
         batchgate_worker_call_duration_seconds_sum {worker_secs}\n\
         batchgate_worker_call_duration_seconds_count {count}\n",
        count = 10 * k,
        sum = 40 * k,
        full = 7 * k,
        timer = 3 * k,
        worker_secs = 2 * k,
    )
}

/// Starts the test server on a free loopback port; returns its base URL.
pub(crate) async fn start(behaviour: Behaviour) -> (String, TestServer, JoinHandle<()>) {
    let server = TestServer(Arc::new(Shared {
        behaviour,
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        inferences: AtomicU64::new(0),
        polls: AtomicU64::new(0),
        scrapes: AtomicU64::new(0),
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
