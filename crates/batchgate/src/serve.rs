//! Turns a process's config into its parts — gateway, batcher, or both — on its backends,
//! and hands them to [`batchgate_gateway::serve`], which runs them and shuts them down in
//! order. `batchgate serve` runs both; `gateway` and `batcher` run one each on Redis.

use std::sync::Arc;
use std::time::Duration;

use batchgate_batcher::BatcherConfig;
use batchgate_gateway::ops::ModelQueue;
use batchgate_gateway::readiness::WorkersHealthy;
pub use batchgate_gateway::{EdgeConfig, RateLimitConfig, HTTP_CLOSE_GRACE};
use batchgate_gateway::{
    Front, GatewayConfig, Ops, Outcome, Readiness, ServerConfig, StateBuilder,
};
use batchgate_net::{ClientTlsFiles, ConnectionLimits, ServerTls, TlsFiles};
use batchgate_sim::{SimConfig, SimWorker};
use batchgate_worker::{Pool, PoolConfig, SpecError, Worker, WorkerSpec};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::backend::{self, StoreConfig};

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
    /// The models after the first (`--model`), each with its own queue, batcher and workers
    /// (on Redis, its own keys); the gateway's `models` lists them after the first.
    pub models: Vec<crate::models::ModelPart>,
}

/// How a run ended.
pub type ServeOutcome = Outcome;

/// The worker `choice` names; a pool of remote workers also shows each worker's health and
/// load on `/metrics` ([`crate::pool_metrics`]), and makes readiness depend on them: the
/// second value says whether any of them is healthy (in-process workers always are).
pub(crate) fn build_worker(
    choice: &WorkerChoice,
    registry: &mut Registry,
) -> anyhow::Result<(Arc<dyn Worker>, WorkersHealthy)> {
    let always: WorkersHealthy = Arc::new(|| true);
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
                Arc::new(move || watched.status().iter().any(|member| member.healthy));
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

/// Builds the backends, the batcher and the HTTP front the config names, runs them until
/// `shutdown` is cancelled, then shuts down in the order [`batchgate_gateway::serve`] gives
/// (admission closes, the batcher drains, HTTP closes), and stops the backends.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServeOutcome> {
    let addr = listener.local_addr()?;
    // TLS files are read before anything starts, so a bad file stops the process at once.
    let tls = config.tls.clone().map(ServerTls::load).transpose()?;
    let backends = backend::build(&config.store, config.gateway.is_some()).await?;
    let mut registry = Registry::default();
    if let Some(memory) = &backends.memory {
        registry.register_collector(Box::new(crate::store_metrics::EvictionCollector(
            memory.clone(),
        )));
    }
    let first_model = config.gateway.as_ref().and_then(|g| g.models.first());
    let (batcher, workers_healthy) = match &config.batcher {
        Some(part) => {
            // With several models, each one's batching metrics carry its name.
            let registry = match first_model {
                Some(name) if !config.models.is_empty() => {
                    crate::models::labelled(&mut registry, name)
                }
                _ => &mut registry,
            };
            let (worker, healthy) = build_worker(&part.worker, registry)?;
            let running = batchgate_batcher::run(part.config, &backends, worker, registry);
            (Some(running), Some(healthy))
        }
        None => (None, None),
    };
    let (models, model_batchers) = crate::models::start(
        &config.models,
        &backends,
        &config.store,
        config.gateway.is_some(),
        &mut registry,
    )
    .await?;
    let front = match &config.gateway {
        Some(gateway) => {
            let mut builder = StateBuilder::new(gateway.clone(), config.edge.clone())
                .queue_error_tolerance(config.queue_error_tolerance)
                .further_models(models.gateway.clone())
                .registry(registry);
            if let Some(healthy) = workers_healthy {
                builder = builder.workers_healthy(healthy);
            }
            let state = builder.build(&backends)?;
            // Keys fetched from an identity provider's JWKS URL: none, no start.
            state
                .auth
                .load_remote()
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            Front::Api(state)
        }
        // A batcher alone serves only its operator routes: no authenticator, shedder or
        // request metrics are built.
        None => {
            // Each further model's queue and workers are shown beside the first's.
            let mut queues = vec![ModelQueue {
                label: None,
                queue: backends.queue.clone(),
                dead_letters: backends.dead_letters.clone(),
            }];
            for (part, model) in config.models.iter().zip(&models.gateway) {
                queues.push(ModelQueue {
                    label: Some(part.name.clone()),
                    queue: model.queue.clone(),
                    dead_letters: model.dead_letters.clone(),
                });
            }
            let readiness = Readiness::new(config.queue_error_tolerance, workers_healthy)
                .with_further_models(models.gateway.iter().map(|m| m.workers_healthy.clone()));
            Front::Ops(Ops::build_models(
                queues,
                backends.results.clone(),
                registry,
                Arc::new(readiness),
            ))
        }
    };
    let server = ServerConfig {
        connections: config.connections,
        tls,
        shutdown_delay: config.shutdown_delay,
        grace_period: config.grace_period,
    };
    announce(
        &config,
        if server.tls.is_some() {
            "https"
        } else {
            "http"
        },
        addr,
    );
    let drain = async {
        let others = model_batchers.drain().await;
        match batcher {
            Some(batcher) => batcher.drain().await.map(|n| n + others),
            None => Some(others),
        }
    };
    let outcome = batchgate_gateway::serve(&server, front, listener, shutdown, drain).await;
    models.shutdown().await;
    backends.shutdown().await;
    info!(drained = outcome.drained, "batchgate stopped");
    Ok(outcome)
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
