//! Connections that idle, dribble their headers, send huge ones, or come by the thousand:
//! closed within their bounds, and `/healthz` stays answered.
//!
//! Every attack loop is bounded in count and time; every wait has a deadline.

mod common;

use std::time::Duration;

use batchgate_net::ConnectionLimits;
use common::logged::Logged;
use common::raw::{addr_of, closed_within, raw, status_within};
use common::{client, fast_sim, serve_config, start_serve, start_worker, Infra, Serve};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

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
    let dribbled = timeout(limit, dribble_headers(&mut dribbler, 100)).await;
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

/// On a keep-alive connection the next request's head is timed from its first byte with the
/// header-read bound, not the (longer) idle bound: a client that finishes one request and
/// then dribbles the next head is cut off by the former.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbled_head_on_a_kept_alive_connection_is_cut_at_the_header_bound() {
    let worker = start_worker(fast_sim(4)).await;
    let mut config = serve_config(&Infra::None, &worker.url, 4);
    config.connections = ConnectionLimits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(60),
        ..ConnectionLimits::default()
    };
    let serve = start_serve(config).await;
    let mut stream = raw(
        &addr_of(&serve.url),
        "GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await;
    assert_eq!(
        status_within(&mut stream, Duration::from_secs(5)).await,
        Some(200)
    );
    // Idle for three header bounds first: the next head then starts on a connection whose
    // watchdog last saw it idle (and must still time the head from its first byte).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The next head, a header every 100 ms for 20 s; cut within 10 s (well inside the idle
    // bound) or the test fails.
    let cut = timeout(Duration::from_secs(10), async {
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n")
            .await;
        dribble_headers(&mut stream, 200).await;
    })
    .await;
    assert!(
        cut.is_ok(),
        "a dribbled head was not cut within 10 s (header bound 0.5 s, idle bound 60 s)"
    );
    serve.shutdown().await;
    worker.stop.cancel();
}

/// 1,500 connection attempts, held open, against a process allowed 400 file descriptors
/// (a flood of tens of thousands, scaled down): the server neither runs out of descriptors for good nor
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

/// Sends `count` header lines, one every 100 ms; returns early once the server has closed.
async fn dribble_headers(stream: &mut TcpStream, count: usize) {
    for i in 0..count {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream
            .write_all(format!("x-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
