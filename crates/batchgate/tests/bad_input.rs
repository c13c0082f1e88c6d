//! Every kind of bad input gets its status and JSON error, is counted, and harms no one else.

#[macro_use]
mod common;

use batchgate_protocol::api::{ErrorBody, TaskStatus};
use batchgate_protocol::sim_output;
use common::{client, fast_sim, infer, serve_config, start_serve, start_worker, Backend, Infra};
use reqwest::header::CONTENT_TYPE;

struct Case {
    name: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    query: &'static str,
    status: u16,
    code: &'static str,
}

fn cases() -> Vec<Case> {
    let json = Some("application/json");
    let big_input = format!("{{\"input\": \"{}\"}}", "a".repeat(64 * 1024 + 1));
    let huge_body = format!("{{\"input\": \"{}\"}}", "a".repeat(400 * 1024));
    vec![
        Case {
            name: "not json",
            content_type: json,
            body: b"{not json".to_vec(),
            query: "",
            status: 400,
            code: "invalid_json",
        },
        Case {
            name: "empty body",
            content_type: json,
            body: Vec::new(),
            query: "",
            status: 400,
            code: "invalid_json",
        },
        Case {
            name: "wrong type",
            content_type: json,
            body: br#"{"input": 42}"#.to_vec(),
            query: "",
            status: 422,
            code: "invalid_request",
        },
        Case {
            name: "missing input",
            content_type: json,
            body: br#"{"client_id": "c"}"#.to_vec(),
            query: "",
            status: 422,
            code: "invalid_request",
        },
        Case {
            name: "unknown field",
            content_type: json,
            body: br#"{"input": "x", "inptu": 1}"#.to_vec(),
            query: "",
            status: 422,
            code: "invalid_request",
        },
        Case {
            name: "empty input",
            content_type: json,
            body: br#"{"input": ""}"#.to_vec(),
            query: "",
            status: 422,
            code: "invalid_request",
        },
        Case {
            name: "array body",
            content_type: json,
            body: br#"["input"]"#.to_vec(),
            query: "",
            status: 422,
            code: "invalid_request",
        },
        Case {
            name: "input over 64 KiB",
            content_type: json,
            body: big_input.into_bytes(),
            query: "",
            status: 413,
            code: "input_too_large",
        },
        Case {
            name: "body over limit",
            content_type: json,
            body: huge_body.into_bytes(),
            query: "",
            status: 413,
            code: "body_too_large",
        },
        Case {
            name: "not utf-8",
            content_type: json,
            body: b"{\"input\": \"\xff\xfe\"}".to_vec(),
            query: "",
            status: 400,
            code: "invalid_utf8",
        },
        Case {
            name: "no content type",
            content_type: None,
            body: br#"{"input": "x"}"#.to_vec(),
            query: "",
            status: 415,
            code: "unsupported_media_type",
        },
        Case {
            name: "text/plain",
            content_type: Some("text/plain"),
            body: br#"{"input": "x"}"#.to_vec(),
            query: "",
            status: 415,
            code: "unsupported_media_type",
        },
        Case {
            name: "bad wait_ms",
            content_type: json,
            body: br#"{"input": "x"}"#.to_vec(),
            query: "?wait_ms=soon",
            status: 400,
            code: "invalid_query",
        },
        Case {
            name: "negative wait_ms",
            content_type: json,
            body: br#"{"input": "x"}"#.to_vec(),
            query: "?wait_ms=-1",
            status: 400,
            code: "invalid_query",
        },
    ]
}

on_every_backend!(every_bad_input_gets_its_status_and_json_error_and_good_requests_still_work);
async fn every_bad_input_gets_its_status_and_json_error_and_good_requests_still_work(
    backend: Backend,
) {
    let infra = Infra::start(backend).await;
    let worker = start_worker(fast_sim(4)).await;
    let serve = start_serve(serve_config(&infra, &worker.url, 4)).await;
    let http = client();
    let cases = cases();

    for case in &cases {
        let mut request = http
            .post(format!("{}/v1/inference{}", serve.url, case.query))
            .body(case.body.clone());
        if let Some(ct) = case.content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        let response = request.send().await.expect("send");
        assert_eq!(response.status(), case.status, "{}", case.name);
        let body: ErrorBody = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: error body is not our JSON shape: {e}", case.name));
        assert_eq!(body.error.code, case.code, "{}", case.name);
        assert!(!body.error.message.is_empty(), "{}", case.name);
    }

    // Other routes answer in the same shape.
    for (method, path, status, code) in [
        ("GET", "/v1/result/does-not-exist", 404, "task_not_found"),
        ("GET", "/no/such/route", 404, "not_found"),
        ("DELETE", "/v1/inference", 405, "method_not_allowed"),
        ("GET", "/v1/result/x?wait_ms=abc", 400, "invalid_query"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = http
            .request(method, format!("{}{path}", serve.url))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), status, "{path}");
        let body: ErrorBody = response.json().await.expect("json error");
        assert_eq!(body.error.code, code, "{path}");
    }

    // The server is unharmed: a good request right after succeeds.
    let view = infer(&http, &serve.url, "still fine").await;
    assert_eq!(view.status, TaskStatus::Success);
    assert_eq!(view.output, Some(sim_output("still fine")));

    // Every refusal was counted by its code.
    let metrics = http
        .get(format!("{}/metrics", serve.url))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("batchgate_http_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, cases.len() as u64 + 4);
    // The worker only ever saw the one good input.
    assert_eq!(worker.sim.stats().items, 1);

    serve.shutdown().await;
    worker.stop.cancel();
}

#[tokio::test]
async fn health_readiness_and_openapi_answer() {
    let infra = Infra::start(Backend::Memory).await;
    let worker = start_worker(fast_sim(1)).await;
    let serve = start_serve(serve_config(&infra, &worker.url, 1)).await;
    let http = client();
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("{}{path}", serve.url))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "{path}");
    }
    let spec: serde_json::Value = http
        .get(format!("{}/openapi.json", serve.url))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("the spec is JSON");
    assert!(spec["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    serve.shutdown().await;
    worker.stop.cancel();
}

/// Opens a connection to `addr` and sends a submission's headers and the start of a body
/// that never completes: the server holds the request until its timeout.
async fn start_unfinished_request(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"POST /v1/inference HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"input\":",
        )
        .await
        .expect("write");
    stream
}

/// A slowloris-style client: headers, then a body that trickles and never completes. The
/// request timeout answers 408 and closes it; other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_is_timed_out() {
    use tokio::io::AsyncReadExt;

    let infra = Infra::start(Backend::Memory).await;
    let worker = common::start_faulty_worker(fast_sim(2), batchgate_sim::Faults::default()).await;
    let mut config = serve_config(&infra, &worker.url, 2);
    if let Some(gateway) = config.gateway.as_mut() {
        gateway.request_timeout = std::time::Duration::from_secs(1);
    }
    let serve = start_serve(config).await;
    let addr = serve.url.trim_start_matches("http://").to_owned();
    let mut slow = start_unfinished_request(&addr).await;
    // Meanwhile an ordinary client is served.
    let view = infer(&client(), &serve.url, "not slow").await;
    assert_eq!(view.status, TaskStatus::Success);
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        slow.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers and closes within its timeout")
    .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    serve.shutdown().await;
    worker.stop.cancel();
}

/// The global concurrency limit: requests held open (here, bodies that never complete) use
/// up `max_concurrent_requests`; the next API request is refused at once with 503
/// `concurrency_limited`, health checks still answer, and the places come back when the
/// held requests end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_concurrency_limit_are_refused_at_once() {
    let infra = Infra::start(Backend::Memory).await;
    let worker = common::start_faulty_worker(fast_sim(2), batchgate_sim::Faults::default()).await;
    let mut config = serve_config(&infra, &worker.url, 2);
    if let Some(gateway) = config.gateway.as_mut() {
        gateway.max_concurrent_requests = 2;
    }
    let serve = start_serve(config).await;
    let addr = serve.url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(start_unfinished_request(&addr).await);
    }
    let http = client();
    let submit = || {
        http.post(format!("{}/v1/inference", serve.url))
            .json(&serde_json::json!({ "input": "one more" }))
            .send()
    };
    // The held requests take their places once the server has read their headers: wait
    // (bounded) until the gauge shows both, so no probe of ours races them for a place.
    let scrape = || async {
        http.get(format!("{}/metrics", serve.url))
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("text")
    };
    let mut both_held = false;
    for _ in 0..200 {
        if scrape()
            .await
            .contains("batchgate_http_requests_in_flight 2\n")
        {
            both_held = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(both_held, "the two held requests are in flight");
    let refused = submit().await.expect("send");
    assert_eq!(refused.status(), 503, "a third request is refused at once");
    assert!(refused.headers().contains_key("retry-after"));
    let body: ErrorBody = refused.json().await.expect("json error");
    assert_eq!(body.error.code, "concurrency_limited");
    let health = http
        .get(format!("{}/healthz", serve.url))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200, "operators' routes are not limited");
    let metrics = scrape().await;
    assert!(
        metrics.contains(r#"batchgate_http_errors_total{code="concurrency_limited"}"#),
        "refusals are counted"
    );

    // Closing the held connections frees their places.
    drop(held);
    let mut accepted = false;
    for _ in 0..100 {
        if submit().await.expect("send").status() == 202 {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(accepted, "places come back when held requests end");
    serve.shutdown().await;
    worker.stop.cancel();
}
