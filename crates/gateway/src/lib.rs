//! The HTTP gateway: accepts single inference requests, enqueues them, and serves results.
//!
//! It holds no state of its own beyond handles to the queue and the result store, so any
//! number of gateways can stand behind a load balancer.
//!
//! Layout:
//! - [`config`]: [`GatewayConfig`], the limits the gateway enforces.
//! - [`state`]: [`AppState`], the shared handle every route gets, and [`Admission`], the gate
//!   that shutdown closes.
//! - [`error`]: [`ApiError`], every error the API can answer, mapped to status and code in one
//!   place.
//! - [`routes`]: one file per endpoint group; [`router`] wires them with the middleware.
//! - [`metrics`]: [`GatewayMetrics`] and the `/metrics` rendering.

pub mod config;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod state;

pub use config::GatewayConfig;
pub use error::ApiError;
pub use metrics::GatewayMetrics;
pub use routes::router;
pub use state::{Admission, AppState, Shared};

use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Serves the API on `listener` until `shutdown` is cancelled; requests under way (long polls
/// included) finish before it returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener.tap_io(no_delay), router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Small answers go out at once rather than waiting on Nagle's algorithm.
fn no_delay(stream: &mut TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
}
