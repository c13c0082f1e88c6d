//! The retry budget end to end: a worker that fails every call (a real HTTP server that
//! answers 500 to each batch and counts what it gets) behind `batchgate serve` with default
//! flags is sent at most (1 + 20%) × the first tries, plus the budget's fixed allowance of 100
//! calls per 10 s window, counted at the worker — instead of every batch's 3 retries and the
//! bisection of every batch down to single inputs.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use batchgate_protocol::api::{TaskStatus, TaskView};
use common::{client, Proc};
use tokio::net::TcpListener;

/// What the failing worker saw.
#[derive(Default)]
struct Seen {
    /// Every input that came in at least once.
    inputs: HashSet<String>,
    /// Every call.
    calls: u64,
    /// Calls that carried an input never seen before: a batch's first try. Retries carry the
    /// same inputs again, and bisection calls a part of them.
    first_tries: u64,
    /// When the last call came.
    last_call: Option<Instant>,
}

async fn fail_batch(
    State(seen): State<Arc<Mutex<Seen>>>,
    Json(body): Json<serde_json::Value>,
) -> StatusCode {
    let inputs: Vec<String> = body["inputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut seen = seen.lock().expect("not poisoned");
    seen.calls += 1;
    seen.last_call = Some(Instant::now());
    let mut new = false;
    for input in inputs {
        new |= seen.inputs.insert(input);
    }
    if new {
        seen.first_tries += 1;
    }
    StatusCode::INTERNAL_SERVER_ERROR
}

/// A worker on 127.0.0.1 port 0 that is healthy but answers every batch with 500.
async fn failing_worker() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new()
        .route("/v1/batch", post(fail_batch))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("worker server");
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_failing_every_call_gets_at_most_its_load_plus_the_budget() {
    let (worker_url, seen) = failing_worker().await;
    // Default flags but small batches, so that there are many first tries (and, without a
    // budget, a bisection of each batch into single inputs).
    let serve = Proc::start(&[
        "serve",
        "--insecure-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--worker-url",
        &worker_url,
        "--max-batch-size",
        "4",
    ]);
    let http = client();
    let started = Instant::now();
    let inputs: Vec<String> = (0..1500).map(|i| format!("doomed input {i}")).collect();
    let (http, base) = (&http, &serve.url);
    let views: Vec<TaskView> = futures::future::join_all(inputs.iter().map(|input| async move {
        http.post(format!("{base}/v1/inference?wait_ms=30000"))
            .json(&serde_json::json!({ "input": input }))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("a task view")
    }))
    .await;
    let mut exhausted = 0;
    for (input, view) in inputs.iter().zip(&views) {
        assert_eq!(view.status, TaskStatus::Failed, "{input}: {view:?}");
        let error = view.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("worker error: worker answered 500"),
            "{input}: {error}"
        );
        if error.ends_with("; not tried again: retry budget exhausted") {
            exhausted += 1;
        }
    }
    let seen = seen.lock().expect("not poisoned");
    let elapsed = seen
        .last_call
        .expect("the worker was called")
        .duration_since(started);
    // The allowance is per 10 s window: every window the run touched may have used it.
    let windows = elapsed.as_secs() / 10 + 2;
    let bound = seen.first_tries + seen.first_tries / 5 + 100 * windows;
    println!(
        "first tries {}, calls {}, bound {bound}, {exhausted} tasks failed by the budget, {:?}",
        seen.first_tries, seen.calls, elapsed
    );
    assert!(
        seen.first_tries >= 1500 / 4,
        "{} first tries for 1,500 inputs in batches of at most 4",
        seen.first_tries
    );
    assert!(
        seen.calls <= bound,
        "the worker got {} calls for {} first tries (bound {bound})",
        seen.calls,
        seen.first_tries
    );
    assert!(exhausted > 0, "some batches met the budget");
}
