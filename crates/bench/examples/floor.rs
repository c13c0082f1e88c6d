//! The floor of `serve`'s CPU per request: a bare axum server on the same stack (axum, hyper,
//! tokio's multi-threaded runtime, mimalloc) that answers `POST /v1/inference?wait_ms=…` as
//! `serve` does when the result is ready in time, and does nothing else. It parses the same
//! JSON body, holds each request for `--hold-ms` (the simulated worker's latency at the
//! batch sizes `serve --sim-slots 40` forms at 8,000/s: ≈ 210 ms from arrival to answer),
//! computes the simulated worker's output (the SHA-256 of the input, which `serve` computes in
//! the same process), and answers 200 with the same `TaskView`. No queue, batcher, store,
//! dedupe, metrics (`/metrics` is empty), request ids, limits or spans.
//!
//! ```sh
//! cargo build --release -p batchgate-bench --example floor
//! target/release/examples/floor --listen 127.0.0.1:0 --hold-ms 210 [--stack net]
//! ```
//!
//! `--stack net` serves the same handler through batchgate's accept loop instead of
//! `axum::serve`, to tell the connection layer's cost from the rest.
//!
//! It logs `listening on http://ADDR` on stderr like `batchgate serve`, so the benchmark
//! scripts start either the same way (`scripts/bench-floor.sh`).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use batchgate_protocol::api::{InferenceRequest, TaskStatus, TaskView, WaitQuery};
use batchgate_protocol::sim_output;
use batchgate_protocol::task::unix_ms;
use tokio_util::sync::CancellationToken;

/// The allocator of the `batchgate` binary, so that the two differ only in their work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `--listen ADDR` (default `127.0.0.1:0`), `--hold-ms N` (default 210) and `--stack
/// axum|net` (default `axum`).
struct Args {
    listen: SocketAddr,
    hold: Duration,
    /// Serve with batchgate's own accept loop (`batchgate_net::serve`: connection cap, header,
    /// body and idle timeouts), as `serve` does, instead of `axum::serve`: the difference
    /// between the two floors is the cost of that connection layer.
    net: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        hold: Duration::from_millis(210),
        net: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => args.listen = value.parse().map_err(|e| format!("--listen: {e}"))?,
            "--hold-ms" => {
                let ms: u64 = value.parse().map_err(|e| format!("--hold-ms: {e}"))?;
                args.hold = Duration::from_millis(ms);
            }
            "--stack" => {
                args.net = match value.as_str() {
                    "axum" => false,
                    "net" => true,
                    other => return Err(format!("--stack: axum or net, not {other}")),
                }
            }
            other => {
                return Err(format!(
                    "unknown flag {other}: --listen ADDR, --hold-ms N, --stack axum|net"
                ))
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = args()?;
    let hold = args.hold;
    let app = Router::new()
        // `batchgate bench` reads `/metrics` before and after a run: none here.
        .route("/metrics", get(|| async { "# EOF\n" }))
        .route(
        "/v1/inference",
        post(
            move |Query(wait): Query<WaitQuery>, Json(request): Json<InferenceRequest>| async move {
                let created_at = unix_ms(SystemTime::now());
                // Answer within the client's wait, as `serve` does.
                let wait = Duration::from_millis(wait.wait_ms.unwrap_or(0));
                tokio::time::sleep(hold.min(wait)).await;
                let view = TaskView {
                    task_id: uuid::Uuid::new_v4().to_string(),
                    status: TaskStatus::Success,
                    output: Some(sim_output(&request.input)),
                    error: None,
                    created_at,
                    completed_at: Some(unix_ms(SystemTime::now())),
                };
                (StatusCode::OK, Json(view))
            },
        ),
    );
    // The same listen backlog as `serve` (batchgate-net), so connection bursts meet the same
    // kernel queue.
    let socket = match args.listen {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    socket.bind(args.listen).map_err(|e| e.to_string())?;
    let listener = socket.listen(8192).map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("listening on http://{local}");
    if args.net {
        return batchgate_net::serve(listener, app, None, CancellationToken::new())
            .await
            .map_err(|e| e.to_string());
    }
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        // As `serve` sets it: answers leave at once.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}
