//! Flags of a process that runs a batcher (`serve`, `batcher`): the batching policy, the
//! workers it calls and how.

use std::path::PathBuf;
use std::time::Duration;

use batchgate_flags::PolicyName;
use batchgate_worker::{PoolConfig, RetryPolicy, WorkerSpec};
use clap::Args;

use super::error::{at_least, count_at_least, ms, ConfigError};
use crate::serve::{BatcherPart, WorkerChoice};

/// Default in-flight batches with an in-process model: one in the forward pass, the next one
/// formed and waiting for it, so the model never waits for the batcher.
#[cfg(feature = "model")]
pub const MODEL_INFLIGHT_BATCHES: usize = 2;

/// Batching and the worker.
#[derive(Debug, Clone, Args)]
pub struct BatchingArgs {
    /// A worker to send batches to; repeat it (or separate with commas) for several, which
    /// share the batches (least in-flight first, health-checked, failover). The scheme names
    /// the protocol: `http://host:port` (batchgate's JSON batch API), `grpc://host:port`,
    /// `kserve-v2+http://host:port/v2/models/NAME`, `openai+http://host:port/v1`. Query
    /// parameters set that worker's limits: `max_batch_size`, `max_inflight_batches`,
    /// `timeout_ms` (docs/worker-api.md). With `serve`, without it a simulated worker runs
    /// in-process.
    #[arg(
        long = "worker-url",
        env = "BATCHGATE_WORKER_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub worker_url: Vec<String>,

    /// Time between two health checks of each --worker-url (its protocol's health endpoint),
    /// in milliseconds. A worker failing one gets no batches until it passes one.
    #[arg(long, env = "BATCHGATE_WORKER_HEALTH_INTERVAL_MS", default_value_t = ms(batchgate_worker::pool::DEFAULT_HEALTH_INTERVAL))]
    pub worker_health_interval_ms: u64,

    /// Bound on one worker call, in milliseconds.
    #[arg(long, env = "BATCHGATE_WORKER_TIMEOUT_MS", default_value_t = ms(batchgate_worker::http_json::DEFAULT_TIMEOUT))]
    pub worker_timeout_ms: u64,

    /// Retries of a worker call that timed out, could not connect, or got 429/5xx, with
    /// exponential backoff (50 ms doubling, at most 2 s) and full jitter; 0 turns them off.
    #[arg(long, env = "BATCHGATE_WORKER_RETRIES", default_value_t = batchgate_worker::retry::DEFAULT_RETRIES)]
    pub worker_retries: u32,

    /// Retry budget: retries and the calls that bisect a rejected batch may add at most this
    /// share of first tries, in percent, over a sliding 10 s window (plus 100 calls per window
    /// whatever the traffic), so a worker failing every call gets at most about (1 + this/100)
    /// times its load. Past it, a failed batch fails at once ("retry budget exhausted"). 0
    /// leaves only the 100 calls per window.
    #[arg(long, env = "BATCHGATE_RETRY_BUDGET_PERCENT", default_value_t = batchgate_worker::budget::DEFAULT_RETRY_BUDGET_PERCENT)]
    pub retry_budget_percent: u32,

    /// Most inputs in one worker call (the worker API's limit).
    #[arg(long, env = "BATCHGATE_MAX_BATCH_SIZE", default_value_t = batchgate_policy::DEFAULT_MAX_BATCH_SIZE)]
    pub max_batch_size: usize,

    /// Longest wait of a batch's first task before the batch goes, in milliseconds.
    #[arg(long, env = "BATCHGATE_MAX_WAIT_MS", default_value_t = ms(batchgate_policy::DEFAULT_MAX_WAIT))]
    pub max_wait_ms: u64,

    /// Run a real model in-process instead of calling a worker: sentence embeddings from the
    /// model directory DIR (see scripts/fetch-model.sh).
    #[cfg(feature = "model")]
    #[arg(
        long,
        env = "BATCHGATE_MODEL_DIR",
        value_name = "DIR",
        conflicts_with = "worker_url"
    )]
    pub model_dir: Option<PathBuf>,

    /// Worker calls under way at once [default: --sim-slots with the built-in worker, 2 with
    /// --model-dir (one running, the next ready), the sum of the workers' own
    /// `max_inflight_batches` when every --worker-url sets one, else 32].
    #[arg(long, env = "BATCHGATE_MAX_INFLIGHT_BATCHES")]
    pub max_inflight_batches: Option<usize>,

    /// A task older than this when its batch leaves is not sent to the worker; it becomes
    /// FAILED with `expired` (e.g. `30s`, `500ms`).
    #[arg(long, env = "BATCHGATE_MAX_QUEUE_AGE", default_value = "30s", value_parser = batchgate_flags::parse_duration)]
    pub max_queue_age: Duration,

    /// When a batch goes: `fixed` (wait-or-full) or `adaptive` (also early when waiting cannot
    /// fill the batch and the worker has idle slots; longer, up to --max-hold-ms, when the
    /// batch would take the worker's last free slot). See docs/batching.md.
    #[arg(long, env = "BATCHGATE_POLICY", value_enum, default_value_t = PolicyName::Fixed)]
    pub policy: PolicyName,

    /// Adaptive policy: longest wait of a batch's first task when the batch would take the
    /// worker's last free slot, in milliseconds (at least --max-wait-ms).
    #[arg(long, env = "BATCHGATE_MAX_HOLD_MS", default_value_t = ms(batchgate_policy::DEFAULT_MAX_HOLD))]
    pub max_hold_ms: u64,

    /// Keep the in-flight batch limit fixed even when the worker answers 429/503 (by default
    /// such answers halve it, and successes raise it back one by one).
    #[arg(long, env = "BATCHGATE_NO_BACKPRESSURE")]
    pub no_backpressure: bool,

    /// CA certificate (PEM) that signed the worker's certificate; required for an `https://`
    /// --worker-url, and the only CA trusted for it.
    #[arg(long, env = "BATCHGATE_WORKER_CA", value_name = "FILE")]
    pub worker_ca: Option<PathBuf>,

    /// Certificate (PEM) the batcher presents to a worker that requires one (mTLS).
    #[arg(
        long,
        env = "BATCHGATE_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,

    /// Private key (PEM) of --client-cert.
    #[arg(
        long,
        env = "BATCHGATE_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

impl BatchingArgs {
    /// The batcher part; `sim` is the built-in worker to use when no --worker-url is given.
    pub fn part(
        &self,
        sim: Option<batchgate_sim::SimConfig>,
        zone: Option<batchgate_protocol::zone::Zone>,
    ) -> Result<BatcherPart, ConfigError> {
        count_at_least("max-batch-size", self.max_batch_size, 1)?;
        at_least("worker-timeout-ms", self.worker_timeout_ms, 1)?;
        at_least(
            "worker-health-interval-ms",
            self.worker_health_interval_ms,
            1,
        )?;
        if let Some(n) = self.max_inflight_batches {
            count_at_least("max-inflight-batches", n, 1)?;
        }
        #[cfg(feature = "model")]
        if let Some(dir) = &self.model_dir {
            batchgate_model::check_dir(dir)?;
        }
        #[cfg(feature = "model")]
        let sim = if self.model_dir.is_some() { None } else { sim };
        let worker = match (self.worker_url.is_empty(), sim) {
            (false, _) => {
                let workers = self
                    .worker_url
                    .iter()
                    .map(|url| url.parse::<WorkerSpec>())
                    .collect::<Result<Vec<_>, _>>()?;
                let tls = self.worker_tls(&workers)?;
                WorkerChoice::Remote {
                    tls,
                    workers,
                    pool: PoolConfig {
                        timeout: Duration::from_millis(self.worker_timeout_ms),
                        max_batch_size: self.max_batch_size,
                        health_interval: Duration::from_millis(self.worker_health_interval_ms),
                        zone,
                    },
                }
            }
            (true, Some(sim)) => WorkerChoice::Simulated(sim),
            #[cfg(feature = "model")]
            (true, None) if self.model_dir.is_some() => WorkerChoice::Model {
                dir: self.model_dir.clone().unwrap_or_default(),
                max_batch_size: self.max_batch_size,
            },
            (true, None) => return Err(ConfigError::NoWorker),
        };
        let max_inflight_batches = self.max_inflight_batches.unwrap_or(match &worker {
            WorkerChoice::Simulated(sim) => sim.slots,
            // Every worker has an in-flight limit: their sum is what the pool can take.
            WorkerChoice::Remote { workers, .. } => workers
                .iter()
                .map(|w| w.limits.max_inflight_batches)
                .sum::<Option<usize>>()
                .unwrap_or(batchgate_batcher::driver::DEFAULT_MAX_INFLIGHT_BATCHES),
            #[cfg(feature = "model")]
            WorkerChoice::Model { .. } => MODEL_INFLIGHT_BATCHES,
        });
        Ok(BatcherPart {
            config: batchgate_batcher::BatcherConfig {
                limits: batchgate_policy::Limits {
                    max_batch_size: self.max_batch_size,
                    max_wait: Duration::from_millis(self.max_wait_ms),
                },
                max_inflight_batches,
                max_queue_age: self.max_queue_age,
                rule: self.policy.rule(Duration::from_millis(self.max_hold_ms)),
                retry: RetryPolicy {
                    retries: self.worker_retries,
                    budget_percent: Some(self.retry_budget_percent),
                    ..Default::default()
                },
                backpressure: !self.no_backpressure,
            },
            worker,
        })
    }

    /// The TLS flags, checked against the worker URLs: a URL over TLS needs --worker-ca, and
    /// TLS flags need at least one such URL.
    fn worker_tls(
        &self,
        workers: &[WorkerSpec],
    ) -> Result<batchgate_net::ClientTlsFiles, ConfigError> {
        let tls = batchgate_net::ClientTlsFiles {
            ca: self.worker_ca.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
        };
        if let Some(spec) = workers.iter().find(|w| w.uses_tls()) {
            if tls.ca.is_none() {
                return Err(ConfigError::NoWorkerCa {
                    url: spec.to_string(),
                });
            }
        } else if !tls.is_empty() {
            return Err(ConfigError::WorkerTlsUnused);
        }
        Ok(tls)
    }
}
