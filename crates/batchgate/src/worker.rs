//! `batchgate worker`: the reference worker — the simulated worker (`--sim`), or a real model,
//! served by `batchgate_worker_server` behind the four worker protocols.
//!
//! With `--crash-after`, [`run`] returns [`Stopped::Crashed`] once the simulated worker
//! "crashes", and the binary exits at once (code [`CRASH_EXIT_CODE`]): no drain, no goodbye,
//! as a GPU host that went down.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use batchgate_net::{ServerTls, TlsFiles};
use batchgate_sim::{Faults, SimConfig, SimWorker};
pub use batchgate_worker_server::Stopped;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Exit code of `batchgate worker` when it crashes on purpose (`--crash-after`): EX_SOFTWARE,
/// distinct from a clean stop (0) and from a configuration error (1).
pub const CRASH_EXIT_CODE: u8 = 70;

/// What the reference worker runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceWorkerConfig {
    /// The simulated cost model.
    pub sim: SimConfig,
    /// Failures to inject.
    pub faults: Faults,
    /// Serve HTTPS (and, with a client CA, require client certificates) instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// Require the API key in this file on every inference call.
    pub api_key_file: Option<std::path::PathBuf>,
    /// Further names the simulated model answers to, besides `sim`.
    pub model_names: Vec<String>,
    /// Serve the real model in this directory instead of the simulated one.
    #[cfg(feature = "model")]
    pub model_dir: Option<std::path::PathBuf>,
}

/// Serves the batch API until `shutdown`, then lets calls under way finish. Returns
/// [`Stopped::Crashed`] at once, without a drain, when the simulated worker crashes on purpose
/// (`--crash-after`); the caller exits the process with [`CRASH_EXIT_CODE`].
pub async fn run(
    config: ReferenceWorkerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<Stopped> {
    let tls = config
        .tls
        .clone()
        .map(ServerTls::load)
        .transpose()
        .map_err(std::io::Error::other)?;
    // The reloader ends with `shutdown`; it is also stopped (and joined) when serving ends
    // without one, as after a simulated crash.
    let reloader = tls.as_ref().map(|tls| tls.spawn_reloader(shutdown.clone()));
    let stopped = serve(&config, listener, tls, shutdown).await;
    if let Some(reloader) = reloader {
        reloader.abort();
        let _ = reloader.await;
    }
    stopped
}

/// Serves the model the config names until `shutdown` (or a simulated crash).
async fn serve(
    config: &ReferenceWorkerConfig,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<Stopped> {
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    #[cfg(feature = "model")]
    if let Some(dir) = &config.model_dir {
        run_model(dir, config.sim.max_batch_size, listener, tls, shutdown).await?;
        return Ok(Stopped::Shutdown);
    }
    info!(
        %addr,
        slots = config.sim.slots,
        base_ms = config.sim.base.as_secs_f64() * 1e3,
        per_item_ms = config.sim.per_item.as_secs_f64() * 1e3,
        client_certificates = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        "simulated worker listening on {scheme}://{addr} — JSON batch API (POST /v1/batch), \
         KServe V2 (model sim: /v2/models/sim/infer), OpenAI embeddings (/v1/embeddings), gRPC \
         (batchgate.worker.v1.Worker, same port)"
    );
    if config.faults != Faults::default() {
        tracing::warn!(faults = ?config.faults, "fault injection is on");
    }
    let api_key = config
        .api_key_file
        .as_deref()
        .map(crate::managed::read_secret_file)
        .transpose()
        .map_err(std::io::Error::other)?;
    let worker = Arc::new(SimWorker::new(config.sim).with_faults(config.faults.clone()));
    let metrics = metrics_router(worker.clone());
    let served = batchgate_worker_server::Served::sim(worker)
        .with_names(config.model_names.clone())
        .with_api_key(api_key);
    match batchgate_worker_server::run_with_routes(served, metrics, listener, tls, shutdown).await?
    {
        Stopped::Shutdown => {
            info!("simulated worker stopped");
            Ok(Stopped::Shutdown)
        }
        Stopped::Crashed => {
            tracing::error!(
                exit_code = CRASH_EXIT_CODE,
                "simulated crash (--crash-after): exiting the process at once"
            );
            Ok(Stopped::Crashed)
        }
    }
}

/// `worker --model-dir DIR`: the real model behind every protocol of the reference server,
/// under the directory's name (e.g. `/v2/models/all-minilm-l6-v2/infer` for a directory
/// `all-minilm-l6-v2`), refusing calls of more than `max_batch_size` inputs.
#[cfg(feature = "model")]
async fn run_model(
    dir: &std::path::Path,
    max_batch_size: usize,
    listener: TcpListener,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let model = crate::serve::load_model(dir, max_batch_size)
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or("model")
        .to_owned();
    info!(
        %addr, model = %name,
        "model worker listening on {scheme}://{addr} — JSON batch API (POST /v1/batch), \
         KServe V2 (/v2/models/{name}/infer), OpenAI embeddings (/v1/embeddings), gRPC"
    );
    let served = batchgate_worker_server::Served::model(&name, Arc::new(model), max_batch_size);
    batchgate_worker_server::run(served, listener, tls, shutdown).await?;
    info!("model worker stopped");
    Ok(())
}

/// `GET /metrics` of the worker process: what the simulated GPU has done, read from its
/// counters at each scrape.
fn metrics_router(worker: Arc<SimWorker>) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SimCollector(worker)));
    let registry = Arc::new(registry);
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                if let Err(error) = encode(&mut text, &registry) {
                    tracing::error!(%error, "encoding metrics failed");
                    return StatusCode::INTERNAL_SERVER_ERROR.into_response();
                }
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    )
}

/// Reads [`SimWorker::stats`] on each scrape.
#[derive(Debug)]
struct SimCollector(Arc<SimWorker>);

impl Collector for SimCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let calls = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "batchgate_worker_calls",
            "Batch calls the worker answered, by outcome",
            None,
            calls.metric_type(),
        )?;
        for (outcome, n) in [
            ("success", stats.calls),
            ("injected_failure", stats.calls_failed_injected),
            ("overloaded", stats.calls_rejected_overload),
            ("oversized", stats.oversized_calls),
        ] {
            let labels = [("outcome", outcome)];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        let counters: [(&str, &str, f64); 2] = [
            (
                "batchgate_worker_items",
                "Inputs in the batch calls that succeeded",
                stats.items as f64,
            ),
            (
                "batchgate_worker_busy_seconds",
                "Slot-seconds spent running calls; its rate over the slots is the busy fraction",
                stats.busy_seconds,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let gauges: [(&str, &str, i64); 2] = [
            (
                "batchgate_worker_slots",
                "Calls the worker runs at once (simulated GPUs)",
                i64::try_from(self.0.config().slots).unwrap_or(i64::MAX),
            ),
            (
                "batchgate_worker_inflight_calls",
                "Calls holding a slot now",
                i64::try_from(stats.in_flight).unwrap_or(i64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    /// The worker's config from its flags, which must parse.
    fn config(flags: &[&str]) -> Result<ReferenceWorkerConfig, crate::cli::ConfigError> {
        let argv = ["batchgate", "worker", "--sim"].iter().chain(flags);
        let cli = Cli::try_parse_from(argv).expect("flags that parse");
        let Command::Worker(args) = cli.command else {
            panic!("worker expected")
        };
        args.into_config()
    }

    #[test]
    fn fault_flags_become_faults() {
        let faults = config(&[
            "--slow-rate=0.25",
            "--slow-factor=4",
            "--hang-rate=0.01",
            "--crash-after=1000",
            "--max-queued-calls=0",
            "--fault-seed=42",
        ])
        .expect("valid")
        .faults;
        assert_eq!(
            faults,
            Faults {
                slow_rate: 0.25,
                slow_factor: 4.0,
                hang_rate: 0.01,
                crash_after: Some(1000),
                max_queued_calls: Some(0),
                seed: Some(42),
                ..Faults::default()
            }
        );
        assert_eq!(config(&[]).expect("valid").faults, Faults::default());
    }

    #[test]
    fn bad_fault_flags_are_refused_with_the_flag_named() {
        for (flag, expected) in [
            (
                "--error-rate=1.5",
                "--error-rate must be in [0, 1], got 1.5",
            ),
            (
                "--slow-rate=-0.1",
                "--slow-rate must be in [0, 1], got -0.1",
            ),
            ("--hang-rate=NaN", "--hang-rate must be in [0, 1], got NaN"),
            (
                "--slow-factor=0.5",
                "--slow-factor must be a finite number ≥ 1, got 0.5",
            ),
            ("--crash-after=0", "--crash-after must be at least 1"),
        ] {
            assert_eq!(config(&[flag]).expect_err(flag).to_string(), expected);
        }
    }
}
