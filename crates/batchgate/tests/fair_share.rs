//! One caller against the others, tried as an attacker would, at the scale a test machine
//! takes: one caller cannot take the gateway's slots (HTTP/2 streams, slow bodies, held long
//! polls); its rate limit counts every call and is checked before the body; every error is
//! in the JSON shape.
//!
//! Every attack loop is bounded in count and time; every wait has a deadline.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use batchgate::token::{mint, TokenArgs};
use batchgate_gateway::auth::KeySource;
use batchgate_gateway::{AuthConfig, GatewayConfig};
use batchgate_net::ConnectionLimits;
use batchgate_protocol::api::ErrorBody;
use common::raw::{addr_of, raw, status_within};
use common::{client, fast_sim, serve_config, start_serve, start_worker, Infra, Serve};
use tokio::net::TcpStream;
use tokio::time::timeout;

const SECRET: &str = "a-hostile-test-secret-of-32-bytes-or-more";

fn token(sub: &str) -> String {
    mint(&TokenArgs {
        sub: sub.into(),
        secret: SECRET.into(),
        ttl: Duration::from_secs(600),
        issuer: None,
        audience: None,
    })
    .expect("token")
}

/// A gateway with tokens on, `per_caller` requests in flight per caller, `global` in all,
/// and 16 HTTP/2 streams per connection; bodies may take a minute (slow bodies stay held).
async fn start_guarded(worker_url: &str, per_caller: usize, global: usize) -> Serve {
    let mut config = serve_config(&Infra::None, worker_url, 4);
    config.edge.auth = AuthConfig::Jwt {
        keys: KeySource::Secret(SECRET.as_bytes().to_vec()),
        issuer: None,
        audience: None,
    };
    config.edge.rate_limit = None;
    config.gateway = Some(GatewayConfig {
        max_concurrent_requests: global,
        max_requests_per_caller: per_caller,
        body_read_timeout: Duration::from_secs(60),
        ..GatewayConfig::default()
    });
    config.connections = ConnectionLimits {
        h2_max_streams: 16,
        ..ConnectionLimits::default()
    };
    start_serve(config).await
}

/// A POST whose body never comes (the head promises 100 bytes, one is sent).
fn slow_body(token: &str) -> String {
    format!(
        "POST /v1/inference HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    )
}

/// Alice's `n` submissions each get an answer (202 or 200) within `limit`.
async fn alice_is_served(url: &str, n: usize, limit: Duration) {
    let http = client();
    let alice = token("alice");
    for i in 0..n {
        let answer = timeout(
            limit,
            http.post(format!("{url}/v1/inference"))
                .bearer_auth(&alice)
                .json(&serde_json::json!({ "input": format!("alice {i}") }))
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("alice's request {i} was not answered within {limit:?}"))
        .expect("send");
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        assert!(
            status == 202 || status == 200,
            "alice's request {i}: {status} {body}"
        );
    }
}

/// The 16,384-stream attack, scaled: one HTTP/2 connection of mallory opens 40 streams whose
/// bodies never come. Only her share (8) is held; the rest are refused with 429 at once, and
/// alice is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_http2_streams_of_one_caller_leave_others_served() {
    let worker = start_worker(fast_sim(4)).await;
    let serve = start_guarded(&worker.url, 8, 32).await;
    let tcp = TcpStream::connect(addr_of(&serve.url))
        .await
        .expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    // Streams opened before the server's SETTINGS arrive would be refused for exceeding a
    // limit the client did not know yet; wait for it (bounded).
    for _ in 0..200 {
        if h2.current_max_send_streams() <= 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h2.current_max_send_streams(),
        16,
        "the server's stream limit"
    );
    let mallory = token("mallory");
    let (answers, mut answered) = tokio::sync::mpsc::channel(64);
    let mut streams = Vec::new();
    for _ in 0..40 {
        let h2 = h2.clone();
        let answers = answers.clone();
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("{}/v1/inference", serve.url))
            .header("authorization", format!("Bearer {mallory}"))
            .header("content-type", "application/json")
            .header("content-length", "100")
            .body(())
            .expect("request");
        streams.push(tokio::spawn(async move {
            let mut ready = h2.ready().await.expect("ready");
            // The body is never sent: the stream stays open, holding whatever it got.
            let (response, _body) = ready.send_request(request, false).expect("send");
            let status = response
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string());
            let _ = answers.send(status).await;
            // Keep the stream (and its body's sender) until the test ends.
            std::future::pending::<()>().await;
        }));
    }
    // Every stream past mallory's share is answered 429 without waiting for its body.
    let refused = timeout(Duration::from_secs(10), async {
        let mut refused = 0;
        while refused < 32 {
            match answered.recv().await {
                Some(Ok(429)) => refused += 1,
                other => panic!("one of mallory's streams answered {other:?}"),
            }
        }
        refused
    })
    .await
    .expect("mallory's streams past her share were not all refused within 10 s");
    assert_eq!(refused, 32, "all but mallory's share of 8 are refused");
    alice_is_served(&serve.url, 10, Duration::from_secs(10)).await;
    for stream in streams {
        stream.abort();
    }
    driver.abort();
    serve.shutdown().await;
    worker.stop.cancel();
}

/// Slow bodies over HTTP/1.1 and held long polls of one caller: only its share is held, the
/// rest are refused with 429 `too_many_in_flight` before their bodies, and others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_held_long_polls_of_one_caller_leave_others_served() {
    // One slot and 60 s a batch: mallory's task stays pending, so her long polls hold.
    let worker = start_worker(batchgate_sim::SimConfig {
        slots: 1,
        base: Duration::from_secs(60),
        per_item: Duration::ZERO,
        max_batch_size: 64,
    })
    .await;
    let serve = start_guarded(&worker.url, 8, 32).await;
    let addr = addr_of(&serve.url);
    let mallory = token("mallory");
    let http = client();
    let pending: serde_json::Value = http
        .post(format!("{}/v1/inference", serve.url))
        .bearer_auth(&mallory)
        .json(&serde_json::json!({ "input": "mallory's own" }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let task_id = pending["task_id"].as_str().expect("a task id").to_owned();
    let mut connections = Vec::new();
    for i in 0..40 {
        let head = if i % 2 == 0 {
            slow_body(&mallory)
        } else {
            format!(
                "GET /v1/result/{task_id}?wait_ms=30000 HTTP/1.1\r\nhost: t\r\n\
                 authorization: Bearer {mallory}\r\n\r\n"
            )
        };
        connections.push(raw(&addr, &head).await);
    }
    let statuses = futures::future::join_all(
        connections
            .iter_mut()
            .map(|c| status_within(c, Duration::from_secs(5))),
    )
    .await;
    let mut statuses_by: HashMap<Option<u16>, usize> = HashMap::new();
    for status in statuses {
        *statuses_by.entry(status).or_default() += 1;
    }
    let statuses = statuses_by;
    assert_eq!(
        statuses.get(&Some(429)).copied().unwrap_or(0),
        32,
        "all but mallory's share are refused: {statuses:?}"
    );
    assert_eq!(statuses.get(&None).copied().unwrap_or(0), 8, "{statuses:?}");
    alice_is_served(&serve.url, 10, Duration::from_secs(10)).await;
    // Mallory is still at her share: even a plain poll is refused while hers are held.
    let view = timeout(
        Duration::from_secs(10),
        http.get(format!("{}/v1/result/{task_id}", serve.url))
            .bearer_auth(&mallory)
            .send(),
    )
    .await
    .expect("answered at once")
    .expect("send");
    assert_eq!(view.status(), 429, "mallory is still at her share");
    drop(connections);
    serve.stop.cancel();
    worker.stop.cancel();
}

/// The rate limit counts every `/v1` call — unknown results, bad JSON, oversized bodies —
/// and is checked when the headers arrive: a caller over it gets 429 even for a body that
/// never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_counts_every_call_before_the_body() {
    let worker = start_worker(fast_sim(4)).await;
    let mut config = serve_config(&Infra::None, &worker.url, 4);
    config.edge.auth = AuthConfig::Jwt {
        keys: KeySource::Secret(SECRET.as_bytes().to_vec()),
        issuer: None,
        audience: None,
    };
    config.edge.rate_limit = Some(batchgate::serve::RateLimitConfig {
        default: batchgate_queue::Rate {
            limit: 5,
            period: Duration::from_secs(3600),
        },
        overrides: HashMap::new(),
    });
    let serve = start_serve(config).await;
    let http = client();
    let mallory = token("mallory");
    for i in 0..5 {
        let answer = http
            .get(format!("{}/v1/result/no-such-task-{i}", serve.url))
            .bearer_auth(&mallory)
            .send()
            .await
            .expect("send");
        assert_eq!(answer.status(), 404, "call {i} is within the limit");
    }
    let bad_json = http
        .post(format!("{}/v1/inference", serve.url))
        .bearer_auth(&mallory)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(bad_json.status(), 429);
    let code = bad_json.json::<ErrorBody>().await.expect("json").error.code;
    assert_eq!(code, "rate_limited");
    let oversized = http
        .post(format!("{}/v1/inference", serve.url))
        .bearer_auth(&mallory)
        .json(&serde_json::json!({ "input": "a".repeat(70_000) }))
        .send()
        .await
        .expect("send");
    assert_eq!(oversized.status(), 429);
    let mut slow = raw(&addr_of(&serve.url), &slow_body(&mallory)).await;
    assert_eq!(
        status_within(&mut slow, Duration::from_secs(5)).await,
        Some(429),
        "refused on its headers, without waiting for the body"
    );
    let metrics = http
        .get(format!("{}/metrics", serve.url))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    let limited = metrics
        .lines()
        .find(|l| l.starts_with("batchgate_rate_limited_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("batchgate_rate_limited_total");
    assert!(limited >= 3.0, "{limited}");
    // Another caller has an allowance of its own.
    let alice = http
        .get(format!("{}/v1/result/no-such-task", serve.url))
        .bearer_auth(token("alice"))
        .send()
        .await
        .expect("send");
    assert_eq!(alice.status(), 404);
    serve.shutdown().await;
    worker.stop.cancel();
}

/// Errors of every route come in the JSON shape — even those refused before a handler (a
/// path that is not UTF-8, a bad admin query) — every answer carries `nosniff`, and a
/// request with two `Authorization` headers is refused rather than one of them picked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_every_answer_nosniff_and_two_tokens_are_refused() {
    let worker = start_worker(fast_sim(4)).await;
    let serve = start_guarded(&worker.url, 8, 32).await;
    let http = client();
    let alice = token("alice");
    let cases = [
        ("GET", "/v1/result/%ff%fe", Some(&alice), 404),
        ("GET", "/admin/dlq?limit=-1", None, 400),
        ("GET", "/v1/result/x?wait_ms=soon", Some(&alice), 400),
        ("GET", "/nowhere", None, 404),
        ("DELETE", "/v1/inference", Some(&alice), 405),
    ];
    for (method, path, bearer, status) in cases {
        let mut request = http.request(
            method.parse().expect("method"),
            format!("{}{path}", serve.url),
        );
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if path.starts_with("/admin") {
            request = request.bearer_auth(common::ADMIN_TOKEN);
        }
        let answer = request.send().await.expect("send");
        assert_eq!(answer.status(), status, "{method} {path}");
        assert_eq!(
            answer
                .headers()
                .get("x-content-type-options")
                .and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{method} {path}"
        );
        let text = answer.text().await.expect("text");
        let body: ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not our JSON error ({e}): {text}"));
        assert!(!body.error.code.is_empty());
    }
    let healthz = http
        .get(format!("{}/healthz", serve.url))
        .send()
        .await
        .expect("send");
    assert_eq!(
        healthz
            .headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    let two = http
        .get(format!("{}/v1/result/x", serve.url))
        .header("authorization", format!("Bearer {alice}"))
        .header("authorization", format!("Bearer {}", token("mallory")))
        .send()
        .await
        .expect("send");
    assert_eq!(two.status(), 401);
    let message = two.json::<ErrorBody>().await.expect("json").error.message;
    assert!(message.contains("more than one"), "{message}");
    serve.shutdown().await;
    worker.stop.cancel();
}
