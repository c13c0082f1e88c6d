//! `batchgate serve`: the whole system in one process, on in-process backends.

use std::sync::Arc;
use std::time::Duration;

use batchgate_batcher::{Batcher, BatcherConfig, BatcherMetrics};
use batchgate_gateway::{Admission, AppState, GatewayConfig, GatewayMetrics, Shared};
use batchgate_queue::memory::{MemoryQueue, MemoryResultStore};
use batchgate_sim::{SimConfig, SimWorker};
use batchgate_worker::{HttpJsonWorker, Worker};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often expired results are swept from memory.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long the HTTP server may take to answer its last requests after the drain.
const HTTP_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Which worker the batcher calls.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerChoice {
    /// The simulated worker, in-process.
    Simulated(SimConfig),
    /// A worker speaking the JSON batch API.
    Http {
        /// Its base URL.
        url: String,
        /// Bound on one call.
        timeout: Duration,
    },
}

/// Everything `serve` needs; built from flags by [`crate::cli::ServeArgs::into_config`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The worker to call.
    pub worker: WorkerChoice,
    /// Batching limits and worker concurrency.
    pub batcher: BatcherConfig,
    /// Gateway limits.
    pub gateway: GatewayConfig,
    /// Queue partitions.
    pub partitions: usize,
    /// Most queued tasks.
    pub queue_capacity: usize,
    /// Most result records.
    pub max_results: usize,
    /// Result lifetime after completion.
    pub result_ttl: Duration,
    /// Bound on the shutdown drain.
    pub grace_period: Duration,
}

/// How a `serve` run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOutcome {
    /// True if the drain finished within the grace period (nothing accepted was dropped).
    pub drained: bool,
}

fn build_worker(choice: &WorkerChoice) -> anyhow::Result<Arc<dyn Worker>> {
    Ok(match choice {
        WorkerChoice::Simulated(sim) => Arc::new(SimWorker::new(*sim)),
        WorkerChoice::Http { url, timeout } => Arc::new(HttpJsonWorker::new(url, *timeout)?),
    })
}

/// Runs gateway, batcher and stores until `shutdown` is cancelled, then shuts down in order:
///
/// 1. the admission gate closes — new submissions get 503 — and we wait for submissions
///    already past it to finish enqueueing;
/// 2. the batcher drains: every queued or buffered task is batched and sent, every batch in
///    flight finishes, results are stored, tasks acked;
/// 3. the HTTP server stops accepting and answers the requests it has (long polls now find
///    their results);
/// 4. the outcome is logged.
///
/// Steps 1–2 are bounded by the grace period, step 3 by a few seconds.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<ServeOutcome> {
    let addr = listener.local_addr()?;
    let mut registry = Registry::default();
    let gateway_metrics = GatewayMetrics::register(&mut registry);
    let batcher_metrics = BatcherMetrics::register(&mut registry);

    let queue = Arc::new(MemoryQueue::new(config.partitions, config.queue_capacity));
    let results = Arc::new(MemoryResultStore::new(
        config.max_results,
        config.result_ttl,
    ));
    let worker = build_worker(&config.worker)?;

    let sweeper_stop = CancellationToken::new();
    let sweeper = tokio::spawn(sweep_results(results.clone(), sweeper_stop.clone()));

    let batcher_stop = CancellationToken::new();
    let batcher = Batcher::new(
        queue.clone(),
        results.clone(),
        worker,
        config.batcher,
        batcher_metrics,
    );
    let batcher = tokio::spawn(batcher.run(batcher_stop.clone()));

    let admission = Arc::new(Admission::default());
    let state = AppState::new(Shared {
        queue,
        results,
        admission: admission.clone(),
        config: config.gateway,
        metrics: gateway_metrics,
        registry: Arc::new(registry),
    });
    let http_stop = CancellationToken::new();
    let http = tokio::spawn(batchgate_gateway::serve(listener, state, http_stop.clone()));

    let worker_desc = match &config.worker {
        WorkerChoice::Simulated(sim) => format!("built-in simulated worker ({} slots)", sim.slots),
        WorkerChoice::Http { url, .. } => url.clone(),
    };
    info!(
        %addr,
        worker = %worker_desc,
        "batchgate listening on http://{addr} — try: curl -s -X POST 'http://{addr}/v1/inference?wait_ms=1000' -H 'content-type: application/json' -d '{{\"input\":\"hello\"}}'"
    );

    shutdown.cancelled().await;
    info!(
        grace_period_s = config.grace_period.as_secs(),
        "shutting down: closing admission"
    );
    let drain = async {
        admission.close().await;
        // Nothing enters the queue any more: the batcher can drain it to the end.
        batcher_stop.cancel();
        batcher.await
    };
    let drained = match tokio::time::timeout(config.grace_period, drain).await {
        Ok(Ok(report)) => {
            info!(drained_batches = report.drained_batches, "drain complete");
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
    match tokio::time::timeout(HTTP_CLOSE_GRACE, http).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => warn!(%error, "HTTP server ended with an error"),
        Ok(Err(join_error)) => warn!(%join_error, "HTTP server task failed"),
        Err(_) => warn!("HTTP connections still open after the close grace; dropping them"),
    }
    sweeper_stop.cancel();
    let _ = sweeper.await;
    info!(drained, "batchgate stopped");
    Ok(ServeOutcome { drained })
}

async fn sweep_results(results: Arc<MemoryResultStore>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {
                results.sweep(tokio::time::Instant::now());
            }
        }
    }
}
