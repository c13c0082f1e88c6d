//! Runs a process's parts — gateway, batcher, or both — on its backends, and shuts them down
//! in order. `batchgate serve` runs both; `gateway` and `batcher` run one each on Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use batchgate_queue::Rate;

use batchgate_batcher::{Batcher, BatcherConfig, BatcherMetrics};
use batchgate_gateway::readiness::WorkersHealthy;
use batchgate_gateway::{
    Admission, AppState, AuthConfig, Authenticator, GatewayConfig, GatewayMetrics, RateLimits,
    Readiness, Shared, ShedBound, Shedder,
};
use batchgate_net::{ClientTlsFiles, ConnectionLimits, ServerTls, TlsFiles};
use batchgate_sim::{SimConfig, SimWorker};
use batchgate_worker::{Pool, PoolConfig, SpecError, Worker, WorkerSpec};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::{self, StoreConfig};

/// How long the HTTP server may take to answer its last requests after the drain.
pub const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(4);

/// Which worker the batcher calls.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerChoice {
    /// The simulated worker, in-process.
    Simulated(SimConfig),
    /// Workers reached over the network, each by its protocol (`--worker-url`), as one pool.
    Remote {
        /// The workers, with their protocols and limits.
        workers: Vec<WorkerSpec>,
        /// What their URLs leave unset, and how often their health is checked.
        pool: PoolConfig,
        /// TLS to workers whose URLs ask for it (`https://`, `…+https://`): the CA to
        /// trust, and a client certificate for workers that require one (mTLS).
        tls: ClientTlsFiles,
    },
    /// A real model (sentence embeddings), in-process, loaded from a local directory.
    #[cfg(feature = "model")]
    Model {
        /// The model directory (`scripts/fetch-model.sh`).
        dir: std::path::PathBuf,
        /// Most inputs per forward pass: the batcher's own limit.
        max_batch_size: usize,
    },
}

impl WorkerChoice {
    /// The workers at `urls`, with `timeout` for calls and other settings at their defaults.
    pub fn remote(urls: &[&str], timeout: Duration) -> Result<WorkerChoice, SpecError> {
        Ok(WorkerChoice::Remote {
            workers: urls.iter().map(|u| u.parse()).collect::<Result<_, _>>()?,
            pool: PoolConfig {
                timeout,
                ..PoolConfig::default()
            },
            tls: ClientTlsFiles::default(),
        })
    }
}

/// The batcher part of a process.
#[derive(Debug, Clone)]
pub struct BatcherPart {
    /// Batching limits and worker concurrency.
    pub config: BatcherConfig,
    /// The worker to call.
    pub worker: WorkerChoice,
}

/// The edge's protections and its admin API.
#[derive(Clone)]
pub struct EdgeConfig {
    /// Bearer token of the admin API (`/admin/...`); `None` disables it.
    pub admin_token: Option<String>,
    /// When new tasks are shed (503 `overloaded`): by default when the workers are the
    /// bottleneck and the estimate breaks the 500 ms objective.
    pub shed: ShedBound,
    /// Requests per period allowed to each authenticated caller, and per-user exceptions;
    /// `None`: unlimited.
    pub rate_limit: Option<RateLimitConfig>,
    /// Who may call. The library default is no authentication (tests, embedding); the command
    /// line requires JWT keys or an explicit `--insecure-no-auth` on loopback.
    pub auth: AuthConfig,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            admin_token: None,
            shed: ShedBound::default(),
            rate_limit: Some(RateLimitConfig::default()),
            auth: AuthConfig::Disabled,
        }
    }
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("shed", &self.shed)
            .field("rate_limit", &self.rate_limit)
            .field("auth", &self.auth)
            .finish()
    }
}

/// Per-user rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Every user's rate unless overridden.
    pub default: Rate,
    /// Users with a limit of their own (per the same period).
    pub overrides: HashMap<String, u64>,
}

/// The default: 1,000 requests per user per minute.
pub const DEFAULT_RATE_LIMIT: Rate = Rate {
    limit: 1000,
    period: Duration::from_secs(60),
};

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            default: DEFAULT_RATE_LIMIT,
            overrides: HashMap::new(),
        }
    }
}

/// Everything a process runs; built from flags in [`crate::cli`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Queue and stores.
    pub store: StoreConfig,
    /// The HTTP API, if this process serves it (else only `/healthz` and `/metrics`).
    pub gateway: Option<GatewayConfig>,
    /// The bounds of every client connection of the HTTP port.
    pub connections: ConnectionLimits,
    /// Shedding, rate limits and the admin API of the HTTP API.
    pub edge: EdgeConfig,
    /// The batcher, if this process runs one.
    pub batcher: Option<BatcherPart>,
    /// Bound on the shutdown drain (after the shutdown delay).
    pub grace_period: Duration,
    /// On a shutdown signal, how long `/readyz` answers 503 while requests are still served
    /// normally, before the drain: time for load balancers (Kubernetes endpoints) to stop
    /// sending new requests here.
    pub shutdown_delay: Duration,
    /// How long queue (Redis) errors may last before `/readyz` answers 503.
    pub queue_error_tolerance: Duration,
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOutcome {
    /// True if the drain finished within the grace period (nothing accepted was dropped).
    pub drained: bool,
}

/// The worker `choice` names; a pool of remote workers also shows each worker's health and
/// load on `/metrics` ([`crate::pool_metrics`]), and makes readiness depend on them: the
/// second value says whether any of them is healthy (in-process workers always are).
fn build_worker(
    choice: &WorkerChoice,
    registry: &mut Registry,
) -> anyhow::Result<(Arc<dyn Worker>, WorkersHealthy)> {
    let always: WorkersHealthy = Box::new(|| true);
    Ok(match choice {
        WorkerChoice::Simulated(sim) => (Arc::new(SimWorker::new(*sim)), always),
        WorkerChoice::Remote { workers, pool, tls } => {
            let tls = if tls.is_empty() {
                None
            } else {
                Some(batchgate_net::client_config(tls)?)
            };
            let pool_of_workers = Pool::connect(workers, pool, tls.as_ref())?;
            // Runs until the batcher drops the pool.
            pool_of_workers.spawn_health_checks(pool.health_interval);
            registry.register_collector(Box::new(crate::pool_metrics::PoolCollector(
                pool_of_workers.clone(),
            )));
            let watched = pool_of_workers.clone();
            let healthy: WorkersHealthy =
                Box::new(move || watched.status().iter().any(|member| member.healthy));
            (Arc::new(pool_of_workers), healthy)
        }
        #[cfg(feature = "model")]
        WorkerChoice::Model {
            dir,
            max_batch_size,
        } => (Arc::new(load_model(dir, *max_batch_size)?), always),
    })
}

/// The model in `dir` as a worker; the one place a process loads it.
#[cfg(feature = "model")]
pub fn load_model(
    dir: &std::path::Path,
    max_batch_size: usize,
) -> anyhow::Result<batchgate_model::ModelWorker> {
    let started = std::time::Instant::now();
    let model = batchgate_model::EmbeddingModel::load(dir)?;
    info!(
        dir = %dir.display(),
        dim = model.dim(),
        max_tokens = model.max_tokens(),
        device = ?model.device(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    Ok(batchgate_model::ModelWorker::new(model).with_max_batch_size(max_batch_size))
}

/// Runs the configured parts until `shutdown` is cancelled, then shuts down in order:
///
/// 0. `/readyz` answers 503 `draining`, while everything else is served as before, for the
///    shutdown delay: load balancers stop sending new requests;
/// 1. the admission gate closes — new submissions get 503 — and we wait for submissions
///    already past it to finish enqueueing;
/// 2. the batcher drains: what it holds (and, in-process, every queued task) is batched and
///    sent, every batch in flight finishes, results are stored, tasks acked;
/// 3. the HTTP server stops accepting and answers the requests it has (long polls now find
///    their results);
/// 4. background tasks stop and the outcome is logged.
///
/// Steps 1–2 are bounded by the grace period, step 3 by a few seconds ([`HTTP_CLOSE_GRACE`]):
/// the process exits within shutdown delay + grace period + that.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServeOutcome> {
    let addr = listener.local_addr()?;
    // TLS files are read before anything starts, so a bad file stops the process at once.
    let tls = config.tls.clone().map(ServerTls::load).transpose()?;
    let mut registry = Registry::default();
    let backends = backend::build(&config.store, config.gateway.is_some()).await?;
    if let Some(evictions) = &backends.evictions {
        registry.register_collector(Box::new(evictions.clone()));
    }

    let batcher_stop = CancellationToken::new();
    let mut workers_healthy = None;
    let batcher = match &config.batcher {
        Some(part) => {
            let metrics = BatcherMetrics::register(&mut registry);
            let (worker, healthy) = build_worker(&part.worker, &mut registry)?;
            workers_healthy = Some(healthy);
            let batcher = Batcher::new(
                backends.queue.clone(),
                backends.results.clone(),
                backends.dead_letters.clone(),
                worker,
                part.config,
                metrics,
            )
            .with_load_board(backends.load_board.clone(), backends.name.clone());
            Some(tokio::spawn(batcher.run(batcher_stop.clone())))
        }
        None => None,
    };

    let admission = Arc::new(Admission::default());
    let readiness = Arc::new(Readiness::new(
        config.queue_error_tolerance,
        workers_healthy,
    ));
    let metrics = GatewayMetrics::register(&mut registry);
    let auth =
        Arc::new(Authenticator::new(config.edge.auth.clone()).map_err(|e| anyhow::anyhow!(e))?);
    if config.gateway.is_some() && !auth.enabled() {
        warn!("authentication is OFF (--insecure-no-auth): every caller is anonymous and can read every result");
    }
    // Stops the gateway's background tasks (key and certificate reloads, shedding samples)
    // at shutdown.
    let edge_stop = CancellationToken::new();
    tokio::spawn(auth.clone().watch(edge_stop.clone()));
    if let Some(tls) = &tls {
        tls.spawn_reloader(edge_stop.clone());
    }
    let shedder = Arc::new(Shedder::new(config.edge.shed));
    if config.gateway.is_some() {
        tokio::spawn(shedder.clone().run(
            backends.queue.clone(),
            backends.load_board.clone(),
            edge_stop.clone(),
        ));
    }
    let state = AppState::new(Shared {
        queue: backends.queue.clone(),
        results: backends.results.clone(),
        intake: backends.intake.clone(),
        dedupe: backends.dedupe,
        gateway_id: backends.gateway_id.clone(),
        admission: admission.clone(),
        shedder,
        rate_limits: config.edge.rate_limit.clone().map(|r| RateLimits {
            default: r.default,
            overrides: r.overrides,
            limiter: backends.rate_limiter.clone(),
        }),
        dead_letters: backends.dead_letters.clone(),
        admin_token: config.edge.admin_token.clone(),
        auth,
        config: config.gateway.clone().unwrap_or_default(),
        metrics,
        registry: Arc::new(registry),
        readiness: readiness.clone(),
    });
    let router = if config.gateway.is_some() {
        batchgate_gateway::router(state)
    } else {
        batchgate_gateway::ops_router(state)
    };
    let http_stop = CancellationToken::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let http = tokio::spawn(batchgate_net::serve_with(
        listener,
        router,
        tls,
        config.connections,
        http_stop.clone(),
    ));
    announce(&config, scheme, addr);

    shutdown.cancelled().await;
    let bound = config.shutdown_delay + config.grace_period + HTTP_CLOSE_GRACE;
    readiness.start_draining();
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
    let drain_started = std::time::Instant::now();
    let drain = async {
        admission.close().await;
        // Nothing enters the queue through us any more: the batcher can drain.
        batcher_stop.cancel();
        match batcher {
            Some(b) => b.await.map(|report| report.drained_batches),
            None => Ok(0),
        }
    };
    let drained = match tokio::time::timeout(config.grace_period, drain).await {
        Ok(Ok(drained_batches)) => {
            info!(
                drained_batches,
                drain_ms = drain_started.elapsed().as_millis() as u64,
                "drain complete"
            );
            true
        }
        Ok(Err(join_error)) => {
            warn!(%join_error, "the batcher task failed during the drain");
            false
        }
        Err(_) => {
            warn!("drain did not finish within the grace period; exiting with work left");
            false
        }
    };
    http_stop.cancel();
    edge_stop.cancel();
    match tokio::time::timeout(HTTP_CLOSE_GRACE, http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => warn!(%error, "HTTP server ended with an error"),
        Ok(Err(join_error)) => warn!(%join_error, "HTTP server task failed"),
        Err(_) => warn!("HTTP connections still open after the close grace; dropping them"),
    }
    backends.shutdown().await;
    info!(drained, "batchgate stopped");
    Ok(ServeOutcome { drained })
}

fn announce(config: &ServeConfig, scheme: &str, addr: std::net::SocketAddr) {
    let backend = match &config.store.redis {
        Some(r) => format!(
            "redis{} {}",
            if r.redis.cluster { " cluster" } else { "" },
            r.redis
                .urls
                .iter()
                .map(|u| batchgate_redis::conn::redact(u))
                .collect::<Vec<_>>()
                .join(",")
        ),
        None => "in-process".to_owned(),
    };
    let worker = match config.batcher.as_ref().map(|b| &b.worker) {
        Some(WorkerChoice::Simulated(sim)) => {
            format!("built-in simulated worker ({} slots)", sim.slots)
        }
        Some(WorkerChoice::Remote { workers, .. }) => workers
            .iter()
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        #[cfg(feature = "model")]
        Some(WorkerChoice::Model { dir, .. }) => format!("in-process model from {}", dir.display()),
        None => "none (gateway only)".to_owned(),
    };
    if config.gateway.is_some() {
        info!(
            %addr, %backend, %worker,
            "batchgate listening on {scheme}://{addr} — try: curl -s -X POST '{scheme}://{addr}/v1/inference?wait_ms=1000' -H 'content-type: application/json' -d '{{\"input\":\"hello\"}}'"
        );
    } else {
        info!(%addr, %backend, %worker, "batcher running; health and metrics listening on {scheme}://{addr}");
    }
}
