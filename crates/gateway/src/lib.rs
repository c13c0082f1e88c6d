//! The HTTP gateway: accepts single inference requests, enqueues them, and serves results.
//!
//! It holds no state of its own beyond handles to the queue and the result store, so any
//! number of gateways can stand behind a load balancer.
//!
//! Layout:
//! - [`auth`]: [`Authenticator`], JWT verification; the token's subject owns the tasks.
//! - [`config`]: [`GatewayConfig`], the limits the gateway enforces.
//! - [`state`]: [`AppState`], the shared handle every route gets, and [`Admission`], the gate
//!   that shutdown closes.
//! - [`error`]: [`ApiError`], every error the API can answer, mapped to status and code in one
//!   place.
//! - [`routes`]: one file per endpoint group; [`router`] wires them with the middleware.
//! - [`metrics`]: [`GatewayMetrics`] and the `/metrics` rendering.
//! - [`shed`]: load shedding — the system-wide wait estimate.

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod shed;
pub mod state;

pub use auth::{AuthConfig, Authenticator};
pub use config::GatewayConfig;
pub use error::ApiError;
pub use metrics::GatewayMetrics;
pub use routes::{ops_router, router};
pub use shed::Shedder;
pub use state::{Admission, AppState, RateLimits, Shared};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Concurrent HTTP/2 streams one client connection may open. hyper's default (200) caps a
/// multiplexing client at about 1,000 requests/s when each waits ~200 ms for its batch.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 16_384;
/// HTTP/2 flow-control window of a whole client connection. With the 64 KiB default, a
/// client multiplexing thousands of 2 KiB bodies gets its DATA split into small frames
/// whenever the server falls behind, and h2 closes the connection (`ENHANCE_YOUR_CALM`,
/// "too_many_data_frames") once such frames pile up: seen at 13,000 requests/s here. A large
/// window keeps frames whole (and sizes h2's small-frame budget, half the window).
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// HTTP/2 flow-control window of one stream: more than any accepted request body.
pub const H2_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves `router` (the API, or the ops routes of a batcher) on `listener` (HTTP/1.1, and HTTP/2 with prior knowledge) until `shutdown`
/// is cancelled; then stops accepting and waits for the requests under way (long polls
/// included) to finish. The caller bounds that wait.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(H2_STREAM_WINDOW_BYTES);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
