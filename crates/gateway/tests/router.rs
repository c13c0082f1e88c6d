//! The gateway's HTTP behaviour, through `router(state).oneshot(…)` on memory backends: the
//! fast layer. What needs a real socket (connection limits, TLS, slow clients, shutdown of a
//! running server) is tested in `crates/batchgate/tests` against a served port.

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use batchgate_gateway::{GatewayConfig, RateLimitConfig};
use batchgate_protocol::task::{unix_ms, Task};
use batchgate_queue::{Failure, Rate};
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_submission_is_queued_and_its_result_read_when_stored() {
    let gw = gateway(open_edge());
    let answer = gw
        .post("/v1/inference", None, &json!({ "input": "hello" }))
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.body["status"], "PENDING");
    let task_id = answer.body["task_id"].as_str().expect("task id").to_owned();
    assert_eq!(
        answer.header("location"),
        Some(format!("/v1/result/{task_id}").as_str())
    );
    assert!(answer.header("x-request-id").is_some(), "{answer:?}");
    assert_eq!(gw.queued().await, 1);

    let pending = gw.get(&format!("/v1/result/{task_id}"), None).await;
    assert_eq!(pending.status, StatusCode::OK);
    assert_eq!(pending.body["status"], "PENDING");

    gw.complete(&task_id, "olleh").await;
    let done = gw.get(&format!("/v1/result/{task_id}"), None).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.body["status"], "SUCCESS");
    assert_eq!(done.body["output"], "olleh");
    assert!(done.body["completed_at"].is_u64(), "{done:?}");
}

#[tokio::test]
async fn an_identical_input_is_answered_with_the_first_task() {
    let gw = gateway(open_edge());
    let first = gw.submit("same").await;
    let second = gw.submit("same").await;
    assert_eq!(first, second);
    assert_eq!(gw.queued().await, 1);
}

#[tokio::test]
async fn a_long_poll_is_answered_when_the_result_is_stored() {
    let gw = gateway(open_edge());
    let task_id = gw.submit("wait for me").await;
    let poll = {
        let gw = gw.clone();
        let path = format!("/v1/result/{task_id}?wait_ms=30000");
        tokio::spawn(async move { gw.get(&path, None).await })
    };
    // The current-thread runtime runs the poll only when this test yields: after a few
    // yields it has registered and is waiting.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !poll.is_finished(),
        "the long poll returned before the result"
    );
    gw.complete(&task_id, "done").await;
    let answer = poll.await.expect("the poll task");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "SUCCESS");
    assert_eq!(answer.body["output"], "done");
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_that_times_out_answers_pending() {
    let gw = gateway(open_edge());
    let task_id = gw.submit("never done").await;
    let answer = gw
        .get(&format!("/v1/result/{task_id}?wait_ms=250"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "PENDING");
}

#[tokio::test]
async fn bad_requests_get_their_status_and_code() {
    let config = GatewayConfig {
        max_input_bytes: 8,
        ..GatewayConfig::default()
    };
    let max_body_bytes = config.max_body_bytes();
    let gw = gateway_with(config, open_edge(), 1000);
    let send = |body: &str, json_type: bool| {
        let mut request = request("POST", "/v1/inference", None, Some(body.to_owned()));
        if !json_type {
            request.headers_mut().remove("content-type");
        }
        gw.call(request)
    };
    send("{", true).await.assert_error(400, "invalid_json");
    send(r#"{"input":"x"}"#, false)
        .await
        .assert_error(415, "unsupported_media_type");
    send(r#"{"input":""}"#, true)
        .await
        .assert_error(422, "invalid_request");
    send(r#"{"inpt":"x"}"#, true)
        .await
        .assert_error(422, "invalid_request");
    send(r#"{"input":"x","timeout_ms":0}"#, true)
        .await
        .assert_error(422, "invalid_request");
    send(r#"{"input":"123456789"}"#, true)
        .await
        .assert_error(413, "input_too_large");
    let huge = format!(r#"{{"input":"{}"}}"#, "x".repeat(max_body_bytes + 1));
    send(&huge, true).await.assert_error(413, "body_too_large");
    gw.get("/v1/result/x?wait_ms=abc", None)
        .await
        .assert_error(400, "invalid_query");
    gw.get("/v1/result/no-such-task", None)
        .await
        .assert_error(404, "task_not_found");
    gw.get("/no/such/route", None)
        .await
        .assert_error(404, "not_found");
    gw.get("/v1/inference", None)
        .await
        .assert_error(405, "method_not_allowed");
    // Only the exact path submits (it is served without the router): other spellings are
    // the router's, which matches paths as given.
    for other in ["/v1/inference/", "/V1/inference", "/v1//inference"] {
        let body = Some(r#"{"input":"x"}"#.to_owned());
        gw.call(request("POST", other, None, body))
            .await
            .assert_error(404, "not_found");
    }
    assert_eq!(gw.queued().await, 0, "nothing bad was queued");
}

#[tokio::test]
async fn a_full_queue_is_overloaded_with_retry_after() {
    let gw = gateway_with(GatewayConfig::default(), open_edge(), 1);
    gw.submit("first").await;
    let answer = gw
        .post("/v1/inference", None, &json!({ "input": "second" }))
        .await;
    answer.assert_error(503, "overloaded");
    assert_eq!(answer.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn a_closed_admission_refuses_submissions_and_readiness() {
    let gw = gateway(open_edge());
    assert_eq!(gw.get("/readyz", None).await.status, StatusCode::OK);
    gw.state.admission.close().await;
    gw.post("/v1/inference", None, &json!({ "input": "late" }))
        .await
        .assert_error(503, "shutting_down");
    let ready = gw.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["status"], "draining", "{ready:?}");
    assert_eq!(gw.get("/healthz", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn callers_without_a_valid_token_are_refused() {
    let gw = gateway(jwt_edge());
    let missing = gw
        .post("/v1/inference", None, &json!({ "input": "x" }))
        .await;
    missing.assert_error(401, "unauthenticated");
    assert!(missing.header("www-authenticate").is_some(), "{missing:?}");
    gw.post("/v1/inference", Some("not-a-jwt"), &json!({ "input": "x" }))
        .await
        .assert_error(401, "unauthenticated");
    gw.get("/v1/result/some-task", None)
        .await
        .assert_error(401, "unauthenticated");
    gw.post(
        "/v1/inference",
        Some(&token("alice")),
        &json!({ "input": "x", "client_id": "bob" }),
    )
    .await
    .assert_error(403, "client_id_mismatch");
    assert_eq!(gw.queued().await, 0);
}

#[tokio::test]
async fn a_task_is_readable_by_its_owner_only() {
    let gw = gateway(jwt_edge());
    let answer = gw
        .post(
            "/v1/inference",
            Some(&token("alice")),
            &json!({ "input": "mine" }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let path = format!(
        "/v1/result/{}",
        answer.body["task_id"].as_str().expect("id")
    );
    assert_eq!(
        gw.get(&path, Some(&token("alice"))).await.status,
        StatusCode::OK
    );
    gw.get(&path, Some(&token("mallory")))
        .await
        .assert_error(404, "task_not_found");
}

#[tokio::test]
async fn a_caller_over_its_rate_is_told_when_to_come_back() {
    let edge = batchgate_gateway::EdgeConfig {
        rate_limit: Some(RateLimitConfig {
            default: Rate {
                limit: 1,
                period: Duration::from_secs(60),
            },
            overrides: HashMap::new(),
        }),
        ..jwt_edge()
    };
    let gw = gateway(edge);
    let alice = token("alice");
    let first = gw
        .post("/v1/inference", Some(&alice), &json!({ "input": "1" }))
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let second = gw
        .post("/v1/inference", Some(&alice), &json!({ "input": "2" }))
        .await;
    second.assert_error(429, "rate_limited");
    assert_eq!(second.header("ratelimit-limit"), Some("1"));
    assert_eq!(second.header("ratelimit-remaining"), Some("0"));
    // Another caller has an allowance of its own.
    let bob = gw
        .post(
            "/v1/inference",
            Some(&token("bob")),
            &json!({ "input": "3" }),
        )
        .await;
    assert_eq!(bob.status, StatusCode::ACCEPTED, "{bob:?}");
}

/// Holds one API request open (a long poll on a pending task) while the test goes on.
async fn hold_a_request(gw: &Gateway, token: Option<String>) -> tokio::task::JoinHandle<Answer> {
    let body = json!({ "input": "held" });
    let answer = gw.post("/v1/inference", token.as_deref(), &body).await;
    let path = format!(
        "/v1/result/{}?wait_ms=30000",
        answer.body["task_id"].as_str().expect("id")
    );
    let gw = gw.clone();
    let held = tokio::spawn(async move { gw.get(&path, token.as_deref()).await });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!held.is_finished(), "the held request returned");
    held
}

#[tokio::test]
async fn a_caller_with_its_share_in_flight_gets_429() {
    let config = GatewayConfig {
        max_requests_per_caller: 1,
        ..GatewayConfig::default()
    };
    let gw = gateway_with(config, jwt_edge(), 1000);
    let held = hold_a_request(&gw, Some(token("alice"))).await;
    gw.post(
        "/v1/inference",
        Some(&token("alice")),
        &json!({ "input": "more" }),
    )
    .await
    .assert_error(429, "too_many_in_flight");
    held.abort();
}

#[tokio::test]
async fn a_gateway_at_its_request_limit_gets_503() {
    let config = GatewayConfig {
        max_concurrent_requests: 1,
        ..GatewayConfig::default()
    };
    let gw = gateway_with(config, open_edge(), 1000);
    let held = hold_a_request(&gw, None).await;
    gw.post("/v1/inference", None, &json!({ "input": "more" }))
        .await
        .assert_error(503, "concurrency_limited");
    // Operator routes are not limited.
    assert_eq!(gw.get("/healthz", None).await.status, StatusCode::OK);
    held.abort();
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_token_and_guarded_with_one() {
    gateway(open_edge())
        .get("/admin/dlq", None)
        .await
        .assert_error(404, "admin_disabled");
    let gw = gateway(edge_with_admin());
    gw.get("/admin/dlq", None)
        .await
        .assert_error(401, "unauthorized");
    gw.get("/admin/dlq", Some("wrong"))
        .await
        .assert_error(401, "unauthorized");
    let empty = gw.get("/admin/dlq", Some(ADMIN_TOKEN)).await;
    assert_eq!(empty.status, StatusCode::OK, "{empty:?}");
    assert_eq!(empty.body["count"], 0);
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_purged() {
    let gw = gateway(edge_with_admin());
    let failure = |id: &str| Failure {
        task: Task {
            task_id: id.to_owned(),
            input: format!("input of {id}"),
            enqueued_at: SystemTime::now(),
            reply_to: None,
            deadline: None,
            owner: None,
            trace_parent: None,
            zone: None,
        },
        error: "worker rejected it".into(),
        attempts: 3,
        failed_at: unix_ms(SystemTime::now()),
    };
    gw.dead_letters
        .add(vec![failure("t1"), failure("t2")])
        .await
        .expect("add");
    let listing = gw.get("/admin/dlq", Some(ADMIN_TOKEN)).await;
    assert_eq!(listing.body["count"], 2, "{listing:?}");
    assert_eq!(listing.body["entries"][0]["task_id"], "t1");

    let replayed = gw
        .post(
            "/admin/dlq/replay",
            Some(ADMIN_TOKEN),
            &json!({ "limit": 1 }),
        )
        .await;
    assert_eq!(replayed.status, StatusCode::OK, "{replayed:?}");
    assert_eq!(replayed.body["task_ids"], json!(["t1"]));
    assert_eq!(gw.queued().await, 1, "the replayed task is queued again");

    let purged = gw
        .post("/admin/dlq/purge", Some(ADMIN_TOKEN), &json!({}))
        .await;
    assert_eq!(purged.body["task_ids"], json!(["t2"]), "{purged:?}");
    assert_eq!(
        gw.get("/admin/dlq", Some(ADMIN_TOKEN)).await.body["count"],
        0
    );
    gw.post(
        "/admin/dlq/purge",
        Some(ADMIN_TOKEN),
        &json!({ "bogus": 1 }),
    )
    .await
    .assert_error(422, "invalid_request");
}

#[tokio::test]
async fn operator_routes_answer() {
    let gw = gateway(open_edge());
    gw.submit("counted").await;
    let ready = gw.get("/readyz", None).await;
    assert_eq!(ready.body["status"], "ready", "{ready:?}");
    assert_eq!(ready.body["queue_depth"], 1);
    let metrics = gw.get("/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    for series in [
        "batchgate_tasks_accepted_total 1",
        "batchgate_queue_depth{partition=\"0\"} 1",
        "batchgate_http_requests_in_flight 0",
    ] {
        assert!(
            metrics.text.contains(series),
            "{series} missing:\n{}",
            metrics.text
        );
    }
    let status = gw.get("/status.json", None).await;
    assert_eq!(status.body["tasks_accepted"], 1.0, "{status:?}");
    assert_eq!(gw.get("/", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_batcher_alone_serves_its_operator_routes_and_no_api() {
    use batchgate_gateway::{ops_router, Ops, Readiness};
    use std::sync::Arc;
    use tower::ServiceExt;

    let backends = batchgate_queue::memory::build(&batchgate_queue::memory::MemoryConfig {
        partitions: Some(1),
        queue_capacity: 10,
        max_results: 10,
        result_ttl: Duration::from_secs(60),
        dedupe_ttl: None,
    });
    let ops = Ops::build(
        backends.queue.clone(),
        backends.results.clone(),
        backends.dead_letters.clone(),
        prometheus_client::registry::Registry::default(),
        Arc::new(Readiness::default()),
    );
    let send = |method: &str, path: &str| {
        let router = ops_router(ops.clone());
        let request = request(method, path, None, None);
        async move {
            let response = router.oneshot(request).await.expect("infallible");
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .expect("body")
                .to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, metrics) = send("GET", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("batchgate_queue_depth{partition=\"0\"} 0"),
        "{metrics}"
    );
    // No API was built: none of its request metrics, no submissions.
    assert!(!metrics.contains("batchgate_http_"), "{metrics}");
    assert_eq!(send("GET", "/readyz").await.0, StatusCode::OK);
    assert_eq!(send("POST", "/v1/inference").await.0, StatusCode::NOT_FOUND);
}
