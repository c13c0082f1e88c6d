//! What a client can make the gateway write to its log: a request id cannot forge a field,
//! and refused requests cannot flood it. Each test runs a real `batchgate` process and reads
//! its stderr.

mod common;

use std::time::Duration;

use common::client;
use common::logged::Logged;

/// A request id that carries text of its own (a space and a `key=value`) never reaches a log
/// line; a plain one is kept, and quoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_request_id_cannot_add_a_field_to_a_log_line() {
    let server = Logged::start(
        4096,
        "info,batchgate_gateway=debug",
        &["serve", "--insecure-no-auth", "--listen", "127.0.0.1:0"],
    );
    let http = client();
    let forged = http
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "abc task_id=FORGED")
        .send()
        .await
        .expect("send");
    assert_eq!(forged.status(), 200);
    let echoed = forged
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(!echoed.contains("FORGED"), "echoed {echoed:?}");
    let huge = http
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "x".repeat(60_000))
        .send()
        .await
        .expect("send");
    let echoed_len = huge.headers().get("x-request-id").map_or(0, |v| v.len());
    assert!(echoed_len <= 128, "a {echoed_len}-byte id was echoed");
    let plain = http
        .get(format!("{}/healthz", server.url))
        .header("x-request-id", "plain-id-42")
        .send()
        .await
        .expect("send");
    assert_eq!(plain.status(), 200);
    // The plain id's line is the last to be written: once it is in, so are the others.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = server.lines();
        if lines.iter().any(|l| l.contains("plain-id-42")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("request_id=\"plain-id-42\"")),
        "a plain id is logged, quoted:\n{}",
        lines.join("\n")
    );
    // The answer's debug line (logged here: the filter lets debug through) has its latency.
    let answered = lines
        .iter()
        .find(|l| l.contains("plain-id-42") && l.contains("answered"))
        .unwrap_or_else(|| panic!("no answered line:\n{}", lines.join("\n")));
    let latency_ms: f64 = answered
        .split("latency_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no latency in {answered}"));
    assert!(latency_ms > 0.0, "{answered}");
    for line in &lines {
        assert!(!line.contains("FORGED"), "forged text in the log: {line}");
        assert!(line.len() < 8192, "a {}-byte log line", line.len());
    }
}

/// 200 requests refused at a full gateway (503) add no more than a few log lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_cannot_flood_the_log() {
    let server = Logged::start(
        4096,
        "info",
        &[
            "serve",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--max-concurrent-requests",
            "1",
            "--sim-base-ms",
            "20000",
        ],
    );
    let http = client();
    // One long poll holds the only slot while the simulated worker takes 20 s.
    let holder = {
        let (http, url) = (http.clone(), server.url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/inference?wait_ms=30000"))
                .json(&serde_json::json!({ "input": "hold" }))
                .send()
                .await
        })
    };
    // Wait (bounded) until the holder is in flight, watching the gauge: /metrics takes no slot.
    let mut full = false;
    for _ in 0..200 {
        let metrics = http
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("text");
        if metrics
            .lines()
            .any(|l| l.starts_with("batchgate_http_requests_in_flight 1"))
        {
            full = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(full, "the gateway never filled");
    let before = server.lines().len();
    for _ in 0..200 {
        let refused = http
            .get(format!("{}/v1/result/x", server.url))
            .header("x-request-id", "y".repeat(100))
            .send()
            .await
            .expect("send");
        assert_eq!(refused.status(), 503);
    }
    // A request answered after them, so their lines (if any) are written by then.
    let health = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), 200);
    // Lines written while answering reach our reader through a pipe: give it a moment, so
    // a flood would be seen (the bound holds however long this is).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let added = server.lines().len() - before;
    assert!(
        added <= 5,
        "200 refused requests added {added} log lines:\n{}",
        server.lines()[before..].join("\n")
    );
    holder.abort();
}
