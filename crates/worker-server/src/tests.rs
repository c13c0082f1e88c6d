//! The worker API over real HTTP (`run` on a free port) and through `router` with paused time.

use std::time::Duration;

use axum::body::Body;
use axum::http::header::RETRY_AFTER;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use batchgate_protocol::api::ErrorBody;
use batchgate_protocol::sim_output;
use batchgate_protocol::worker_api::{BatchRequest, BatchResponse};
use batchgate_sim::{Faults, SimConfig, SimStats};
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::*;

/// A running server on a free port.
struct Server {
    url: String,
    worker: Arc<SimWorker>,
    shutdown: CancellationToken,
    stopped: JoinHandle<std::io::Result<Stopped>>,
}

/// 1 ms calls, as `faults` says.
async fn start(faults: Faults) -> Server {
    let worker = Arc::new(
        SimWorker::new(SimConfig {
            base: Duration::from_millis(1),
            per_item: Duration::ZERO,
            ..SimConfig::default()
        })
        .with_faults(faults),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let stopped = tokio::spawn(run(worker.clone(), listener, None, shutdown.clone()));
    Server {
        url,
        worker,
        shutdown,
        stopped,
    }
}

/// How the server ended, failing the test if it takes more than 5 s.
async fn ended(stopped: JoinHandle<std::io::Result<Stopped>>) -> Stopped {
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the server stops")
        .expect("join")
        .expect("serves")
}

fn batch_request(inputs: &[&str]) -> Request<Body> {
    let body = serde_json::to_vec(&BatchRequest {
        inputs: inputs.iter().map(|&i| i.to_owned()).collect(),
    })
    .expect("json");
    Request::post("/v1/batch")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request")
}

async fn json<T: serde::de::DeserializeOwned>(response: Response) -> T {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("json body")
}

#[tokio::test]
async fn serves_batches_and_refuses_oversize_with_json_413() {
    let Server {
        url,
        shutdown: token,
        ..
    } = start(Faults::default()).await;
    let client = http_client();
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

#[tokio::test(start_paused = true)]
async fn a_full_queue_is_429_with_retry_after_and_answers_carry_the_load() {
    let worker = Arc::new(
        SimWorker::new(SimConfig {
            slots: 2,
            base: Duration::from_millis(100),
            per_item: Duration::from_millis(10),
            max_batch_size: 64,
        })
        .with_faults(Faults {
            max_queued_calls: Some(0),
            ..Faults::default()
        }),
    );
    let app = router(worker.clone());
    let short = tokio::spawn(app.clone().oneshot(batch_request(&["a"])));
    let long = tokio::spawn(app.clone().oneshot(batch_request(&["b", "c", "d"])));
    tokio::task::yield_now().await;
    assert_eq!(worker.in_flight(), 2);

    let refused = app
        .clone()
        .oneshot(batch_request(&["e"]))
        .await
        .expect("infallible");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()[RETRY_AFTER], "1");
    assert!(!refused.headers().contains_key(LOAD_HEADER));
    let error: ErrorBody = json(refused).await;
    assert_eq!(error.error.code, "worker_overloaded");

    // The short call answers while the long one still holds the other slot.
    let short = short.await.expect("join").expect("infallible");
    assert_eq!(short.status(), StatusCode::OK);
    assert_eq!(short.headers()[LOAD_HEADER], "1/2");
    let long = long.await.expect("join").expect("infallible");
    assert_eq!(long.headers()[LOAD_HEADER], "0/2");
    let answer: BatchResponse = json(long).await;
    assert_eq!(answer.outputs.len(), 3);

    let stats = app
        .oneshot(
            Request::get("/v1/stats")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let stats: SimStats = json(stats).await;
    assert_eq!((stats.calls, stats.calls_rejected_overload), (2, 1));
    assert!((stats.busy_seconds - 0.24).abs() < 1e-9, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_hung_and_failed_calls_show_in_stats() {
    for (faults, counter) in [
        (
            Faults {
                slow_rate: 1.0,
                ..Faults::default()
            },
            "calls_slow",
        ),
        (
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            "calls_failed_injected",
        ),
        (
            Faults {
                hang_rate: 1.0,
                ..Faults::default()
            },
            "calls_hung",
        ),
    ] {
        let worker = Arc::new(SimWorker::new(SimConfig::default()).with_faults(faults));
        let app = router(worker);
        let call = app.clone().oneshot(batch_request(&["x"]));
        let status = match tokio::time::timeout(Duration::from_secs(30), call).await {
            Ok(answer) => answer.expect("infallible").status().as_u16(),
            Err(_) => 0,
        };
        let stats = app
            .oneshot(
                Request::get("/v1/stats")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let stats: serde_json::Value = json(stats).await;
        assert_eq!(stats[counter], 1, "{counter}: {stats}");
        let expected = match counter {
            "calls_slow" => 200,
            "calls_failed_injected" => 500,
            _ => 0, // cut by the timeout
        };
        assert_eq!(status, expected, "{counter}");
    }
}

#[tokio::test]
async fn shutdown_ends_hung_calls_with_503_instead_of_waiting_forever() {
    let server = start(Faults {
        hang_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let call = tokio::spawn(
        http_client()
            .post(format!("{}/v1/batch", server.url))
            .json(&BatchRequest {
                inputs: vec!["x".into()],
            })
            .send(),
    );
    // Wait for the call to arrive and hang.
    tokio::time::timeout(Duration::from_secs(5), async {
        while server.worker.stats().calls_hung == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the call arrives");

    server.shutdown.cancel();
    assert_eq!(ended(server.stopped).await, Stopped::Shutdown);
    let answer = call.await.expect("join").expect("answered");
    assert_eq!(answer.status(), 503);
    let error: ErrorBody = answer.json().await.expect("json error");
    assert_eq!(error.error.code, "worker_unavailable");
}

#[tokio::test]
async fn crash_after_answers_that_many_calls_then_run_reports_the_crash() {
    let server = start(Faults {
        crash_after: Some(2),
        ..Faults::default()
    })
    .await;
    let client = http_client();
    for input in ["a", "b"] {
        let answer = client
            .post(format!("{}/v1/batch", server.url))
            .json(&BatchRequest {
                inputs: vec![input.into()],
            })
            .send()
            .await
            .expect("answered before the crash");
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(ended(server.stopped).await, Stopped::Crashed);
    // The listener is gone: a crashed host takes no new connection.
    let refused = http_client()
        .post(format!("{}/v1/batch", server.url))
        .json(&BatchRequest {
            inputs: vec!["c".into()],
        })
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

/// A plain HTTP client (reqwest needs the TLS provider installed even for plain HTTP).
fn http_client() -> reqwest::Client {
    batchgate_net::install_crypto_provider();
    reqwest::Client::new()
}
