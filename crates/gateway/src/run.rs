//! Runs a process's HTTP front — the API, or only the operator routes of a batcher — until
//! shutdown, and shuts down in order.

use std::future::Future;
use std::time::{Duration, Instant};

use batchgate_net::{ConnectionLimits, ServerTls};
use futures_util::future::Either;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::ops::Ops;
use crate::state::AppState;

/// How long the HTTP server may take to answer its last requests after the drain.
pub const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(4);

/// How the HTTP server runs and stops.
#[derive(Clone, Default)]
pub struct ServerConfig {
    /// The bounds of every client connection.
    pub connections: ConnectionLimits,
    /// Serve HTTPS with this certificate (reloaded on SIGHUP and when its files change)
    /// instead of plain HTTP. Loaded by the caller, before anything starts, so that a bad
    /// file stops the process at once.
    pub tls: Option<ServerTls>,
    /// On a shutdown signal, how long `/readyz` answers 503 while requests are still served
    /// normally, before the drain: time for load balancers (Kubernetes endpoints) to stop
    /// sending new requests here.
    pub shutdown_delay: Duration,
    /// Bound on the drain (after the shutdown delay).
    pub grace_period: Duration,
}

/// What a process serves over HTTP.
pub enum Front {
    /// The whole API (a gateway, or `serve`).
    Api(AppState),
    /// Only `/healthz`, `/readyz`, `/metrics` and the status page (a batcher).
    Ops(Ops),
}

impl Front {
    fn ops(&self) -> &Ops {
        match self {
            Front::Api(state) => &state.ops,
            Front::Ops(ops) => ops,
        }
    }

    /// Serves this front on `listener` until `stop` (see [`batchgate_net::serve_with`]).
    fn serve(
        &self,
        listener: TcpListener,
        config: &ServerConfig,
        stop: CancellationToken,
    ) -> impl Future<Output = std::io::Result<()>> + Send + 'static {
        let (tls, limits) = (config.tls.clone(), config.connections);
        match self {
            Front::Api(state) => Either::Left(batchgate_net::serve_with(
                listener,
                crate::router(state.clone()),
                tls,
                limits,
                stop,
            )),
            Front::Ops(ops) => Either::Right(batchgate_net::serve_with(
                listener,
                crate::ops_router(ops.clone()),
                tls,
                limits,
                stop,
            )),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// True if the drain finished within the grace period (nothing accepted was dropped).
    pub drained: bool,
}

/// Serves the API of `state` on `listener` until `shutdown` is cancelled, then drains (see
/// [`serve`]). A gateway-only process: nothing runs after admission closes.
pub async fn run(
    config: &ServerConfig,
    state: AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Outcome {
    serve(
        config,
        Front::Api(state),
        listener,
        shutdown,
        std::future::ready(Some(0)),
    )
    .await
}

/// Serves `front` on `listener` until `shutdown` is cancelled, then shuts down in order:
///
/// 0. `/readyz` answers 503 `draining`, while everything else is served as before, for the
///    shutdown delay: load balancers stop sending new requests;
/// 1. the admission gate closes — new submissions get 503 — and we wait for submissions
///    already past it to finish enqueueing;
/// 2. `drain` runs: a batcher in this process stops reading and finishes its work (it
///    answers `Some(batches drained)`, or `None` if it failed);
/// 3. the HTTP server stops accepting and answers the requests it has (long polls now find
///    their results);
/// 4. background tasks (key and certificate reloads, shedding samples) stop and the outcome
///    is logged.
///
/// Steps 1–2 are bounded by the grace period, step 3 by [`HTTP_CLOSE_GRACE`]: the process
/// exits within shutdown delay + grace period + that.
pub async fn serve<D>(
    config: &ServerConfig,
    front: Front,
    listener: TcpListener,
    shutdown: CancellationToken,
    drain: D,
) -> Outcome
where
    D: Future<Output = Option<u64>>,
{
    let background = TaskTracker::new();
    let background_stop = CancellationToken::new();
    if let Front::Api(state) = &front {
        if !state.auth.enabled() {
            warn!("authentication is OFF (--insecure-no-auth): every caller is anonymous and can read every result");
        }
        background.spawn(state.auth.clone().watch(background_stop.clone()));
        background.spawn(state.shedder.clone().run(
            state.queue.clone(),
            state.load_board.clone(),
            background_stop.clone(),
        ));
        // Each further model sheds by its own queue and workers.
        for (shedder, model) in state.model_shedders.iter().zip(&state.further_models) {
            background.spawn(shedder.clone().run(
                model.queue.clone(),
                model.load_board.clone(),
                background_stop.clone(),
            ));
        }
    }
    if let Some(tls) = &config.tls {
        let reloader = tls.spawn_reloader(background_stop.clone());
        background.spawn(async move {
            let _ = reloader.await;
        });
    }
    background.close();
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(front.serve(listener, config, http_stop.clone()));

    shutdown.cancelled().await;
    let ops = front.ops();
    let bound = config.shutdown_delay + config.grace_period + HTTP_CLOSE_GRACE;
    ops.readiness.start_draining();
    info!(
        shutdown_delay_ms = config.shutdown_delay.as_millis() as u64,
        drain_bound_s = config.grace_period.as_secs_f64(),
        http_close_bound_s = HTTP_CLOSE_GRACE.as_secs(),
        exit_within_s = bound.as_secs_f64(),
        "shutting down: /readyz now answers 503; requests are still served during the shutdown delay, then the drain"
    );
    tokio::time::sleep(config.shutdown_delay).await;
    info!(
        drain_bound_s = config.grace_period.as_secs_f64(),
        "shutdown delay over: closing admission and draining"
    );
    let drain_started = Instant::now();
    let drain = async {
        ops.admission.close().await;
        // Nothing enters the queue through us any more: a batcher here can drain.
        drain.await
    };
    let drained = match tokio::time::timeout(config.grace_period, drain).await {
        Ok(Some(drained_batches)) => {
            info!(
                drained_batches,
                drain_ms = drain_started.elapsed().as_millis() as u64,
                "drain complete"
            );
            true
        }
        Ok(None) => {
            warn!("the batcher failed during the drain");
            false
        }
        Err(_) => {
            warn!("drain did not finish within the grace period; exiting with work left");
            false
        }
    };
    http_stop.cancel();
    background_stop.cancel();
    match tokio::time::timeout(HTTP_CLOSE_GRACE, http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => warn!(%error, "HTTP server ended with an error"),
        Ok(Err(join_error)) => warn!(%join_error, "HTTP server task failed"),
        Err(_) => warn!("HTTP connections still open after the close grace; dropping them"),
    }
    background.wait().await;
    Outcome { drained }
}
