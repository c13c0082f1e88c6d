//! Hostile clients, tried as an attacker would, at the scale a test machine takes: one caller
//! cannot take the gateway's slots (HTTP/2 streams, slow bodies, held long polls); its rate
//! limit counts every call and is checked before the body; connections that idle, dribble
//! headers or send huge ones are closed; many connections leave `/healthz` answered; request
//! ids cannot forge log fields; refused requests cannot flood the log.
//!
//! Every attack loop is bounded in count and time; every wait has a deadline.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchgate::token::{mint, TokenArgs};
use batchgate_gateway::auth::KeySource;
use batchgate_gateway::{AuthConfig, GatewayConfig};
use batchgate_net::ConnectionLimits;
use batchgate_protocol::api::ErrorBody;
use common::{client, fast_sim, serve_config, start_serve, start_worker, Infra, Serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Sends `head` (a request's head, and maybe the start of its body) on a new connection and
/// leaves the connection open.
async fn raw(addr: &str, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// The status code of the first answer on `stream`, if one comes within `limit`.
async fn status_within(stream: &mut TcpStream, limit: Duration) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    let read = timeout(limit, async {
        while got < 12 {
            match stream.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    if read.is_err() || got < 12 {
        return None;
    }
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
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

/// A server with half-second header and idle bounds and 16 KiB heads.
async fn start_bounded() -> (Serve, common::Worker) {
    let worker = start_worker(fast_sim(4)).await;
    let mut config = serve_config(&Infra::None, &worker.url, 4);
    config.connections = ConnectionLimits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        max_header_bytes: 16 * 1024,
        ..ConnectionLimits::default()
    };
    (start_serve(config).await, worker)
}

/// Whether the server closes `stream` within `limit` (reads end, or fail).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Idle connections (HTTP/1.1 silent, after a request, and HTTP/2) and connections that
/// dribble their headers are closed within the configured bounds; oversized heads are
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_dribbling_and_oversized_connections_are_closed() {
    let (serve, worker) = start_bounded().await;
    let addr = addr_of(&serve.url);
    // Bounds are 0.5 s; each check allows 5 s, so a pass never rests on slack, and a server
    // without the bounds keeps the connection past it.
    let limit = Duration::from_secs(5);

    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    assert!(
        closed_within(&mut silent, limit).await,
        "a silent connection stayed open"
    );

    let mut kept_alive = raw(&addr, "GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(status_within(&mut kept_alive, limit).await, Some(200));
    assert!(
        closed_within(&mut kept_alive, limit).await,
        "an idle keep-alive connection stayed open"
    );

    let mut dribbler = raw(&addr, "GET /healthz HTTP/1.1\r\nhost: t\r\n").await;
    let dribbled = timeout(limit, async {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if dribbler
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await;
    assert!(
        dribbled.is_ok() || closed_within(&mut dribbler, Duration::ZERO).await,
        "a header dribble was never cut"
    );

    let tcp = TcpStream::connect(&addr).await.expect("connect");
    let (_h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let ended = timeout(limit, connection).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");

    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let mut oversized = TcpStream::connect(&addr).await.expect("connect");
    // The server may close before reading it all: a failed write is a refusal too.
    let _ = oversized.write_all(huge.as_bytes()).await;
    let status = status_within(&mut oversized, limit).await;
    assert_ne!(status, Some(200), "a 100 KiB head was accepted");

    serve.shutdown().await;
    worker.stop.cancel();
}

/// A `batchgate serve` process started under `ulimit -n fds`, its log lines collected.
struct Logged {
    child: Child,
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn start(fds: u32, rust_log: &str, args: &[&str]) -> Logged {
        let script = format!("ulimit -n {fds} && exec \"$0\" \"$@\"");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_batchgate"))
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn batchgate");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(url);
                }
                kept.lock().expect("lines").push(line);
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("batchgate did not report its address");
        Logged { child, url, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 1,500 connection attempts, held open, against a process allowed 400 file descriptors
/// (the 20,000 scaled down): the server neither runs out of descriptors for good nor
/// stops answering `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_answered_under_a_flood_of_connections() {
    let server = Logged::start(
        400,
        "info",
        &[
            "serve",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--header-read-timeout-ms",
            "500",
            "--idle-timeout-ms",
            "500",
        ],
    );
    let addr = addr_of(&server.url);
    let flood = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            let started = std::time::Instant::now();
            for _ in 0..1500 {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                match timeout(Duration::from_secs(2), TcpStream::connect(&addr)).await {
                    Ok(Ok(stream)) => held.push(stream),
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            held
        })
    };
    // Give the flood a head start in the kernel's queue, bounded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let http = client();
    let healthz = timeout(
        Duration::from_secs(30),
        http.get(format!("{}/healthz", server.url)).send(),
    )
    .await
    .expect("/healthz was not answered within 30 s under the flood")
    .expect("send");
    assert_eq!(healthz.status(), 200);
    let held = timeout(Duration::from_secs(60), flood)
        .await
        .expect("the flood ends")
        .expect("flood task");
    assert!(
        held.len() > 400,
        "the flood opened {} connections",
        held.len()
    );
    drop(held);
    // And again once the flood is over.
    let again = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), 200);
}

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
