//! `batchgate worker`: the reference worker server — the simulated cost model, or with the
//! `model` feature a real model — with fault injection.

use std::net::SocketAddr;
#[cfg(feature = "model")]
use std::path::PathBuf;

use batchgate_sim::model as sim;
use clap::Args;

use super::error::{count_at_least, fraction, millis, ms_f64, ConfigError};
use super::http::TlsArgs;
use crate::worker::ReferenceWorkerConfig;

/// Default address of `worker`.
pub const DEFAULT_WORKER_LISTEN: &str = "127.0.0.1:9000";

/// Flags of `batchgate worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Serve the simulated cost model.
    #[cfg_attr(
        not(feature = "model"),
        arg(long, env = "BATCHGATE_WORKER_SIM", required = true)
    )]
    #[cfg_attr(
        feature = "model",
        arg(
            long,
            env = "BATCHGATE_WORKER_SIM",
            required_unless_present = "model_dir"
        )
    )]
    pub sim: bool,

    /// Serve a real model instead: sentence embeddings from the model directory DIR
    /// (config.json, tokenizer.json, model.safetensors; see scripts/fetch-model.sh). One
    /// forward pass at a time; --max-batch-size applies, the --sim flags do not.
    #[cfg(feature = "model")]
    #[arg(
        long,
        env = "BATCHGATE_WORKER_MODEL_DIR",
        value_name = "DIR",
        conflicts_with = "sim"
    )]
    pub model_dir: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "BATCHGATE_WORKER_LISTEN", default_value = DEFAULT_WORKER_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub tls: TlsArgs,

    /// Require every client (batcher) to present a certificate signed by this CA (PEM): mTLS.
    /// Needs --tls-cert and --tls-key.
    #[arg(long, env = "BATCHGATE_WORKER_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<std::path::PathBuf>,

    /// Require `Authorization: Bearer KEY` on every inference call (HTTP and gRPC; health
    /// checks stay open), KEY being this file's content without surrounding whitespace.
    #[arg(long, env = "BATCHGATE_WORKER_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<std::path::PathBuf>,

    /// A further name the simulated model answers to besides `sim` (KServe V2
    /// `/v2/models/NAME`, OpenAI `model`): the same model under several names, to try a
    /// deployment of several models without a GPU. Repeatable.
    #[arg(
        long = "model-name",
        env = "BATCHGATE_WORKER_MODEL_NAMES",
        value_delimiter = ','
    )]
    pub model_names: Vec<String>,

    /// Batches that run at once (simulated GPUs); further calls queue.
    #[arg(long, env = "BATCHGATE_WORKER_SLOTS", default_value_t = sim::DEFAULT_SLOTS)]
    pub slots: usize,

    /// Fixed cost of one call, in milliseconds.
    #[arg(long, env = "BATCHGATE_WORKER_BASE_MS", default_value_t = ms_f64(sim::DEFAULT_BASE))]
    pub base_ms: f64,

    /// Added cost per input, in milliseconds.
    #[arg(long, env = "BATCHGATE_WORKER_PER_ITEM_MS", default_value_t = ms_f64(sim::DEFAULT_PER_ITEM))]
    pub per_item_ms: f64,

    /// Most inputs accepted in one call; more is answered 413.
    #[arg(long, env = "BATCHGATE_WORKER_MAX_BATCH_SIZE", default_value_t = sim::DEFAULT_MAX_BATCH_SIZE)]
    pub max_batch_size: usize,

    /// Fault injection: fraction of calls, in [0, 1], that fail at random with 500 (429 and 503 mean overload, which batchgate answers with backpressure).
    #[arg(long, env = "BATCHGATE_WORKER_ERROR_RATE", default_value_t = 0.0)]
    pub error_rate: f64,

    /// Fault injection: a call whose inputs include one containing this text fails whole with
    /// 500, as a model crashing on one bad input would.
    #[arg(long, env = "BATCHGATE_WORKER_POISON_PATTERN")]
    pub poison_pattern: Option<String>,

    /// Fault injection: fraction of calls, in [0, 1], that take --slow-factor times their
    /// modelled cost (holding their slot all that time).
    #[arg(long, env = "BATCHGATE_WORKER_SLOW_RATE", default_value_t = 0.0)]
    pub slow_rate: f64,

    /// Fault injection: how many times its modelled cost a slow call takes (at least 1).
    #[arg(long, env = "BATCHGATE_WORKER_SLOW_FACTOR", default_value_t = batchgate_sim::DEFAULT_SLOW_FACTOR)]
    pub slow_factor: f64,

    /// Fault injection: fraction of calls, in [0, 1], that never answer; only the client's
    /// timeout ends them. A hung call holds no slot; at shutdown it is answered 503.
    #[arg(long, env = "BATCHGATE_WORKER_HANG_RATE", default_value_t = 0.0)]
    pub hang_rate: f64,

    /// Fault injection: after this many calls have run, the process exits at once with code
    /// 70, as a crashed GPU host would (calls still running never answer).
    #[arg(long, env = "BATCHGATE_WORKER_CRASH_AFTER", value_name = "CALLS")]
    pub crash_after: Option<u64>,

    /// Overload signalling: when every slot is busy and this many calls already wait for one,
    /// answer 429 with `Retry-After: 1` at once instead of queueing. Unlimited by default.
    #[arg(long, env = "BATCHGATE_WORKER_MAX_QUEUED_CALLS", value_name = "CALLS")]
    pub max_queued_calls: Option<usize>,

    /// Seed of the random faults (--error-rate, --slow-rate, --hang-rate), for runs that
    /// repeat; random by default.
    #[arg(long, env = "BATCHGATE_WORKER_FAULT_SEED")]
    pub fault_seed: Option<u64>,
}

impl WorkerArgs {
    /// Checks the flags and turns them into the worker's config.
    pub fn into_config(self) -> Result<ReferenceWorkerConfig, ConfigError> {
        count_at_least("max-batch-size", self.max_batch_size, 1)?;
        if !(self.slow_factor.is_finite() && self.slow_factor >= 1.0) {
            return Err(ConfigError::SlowFactor(self.slow_factor));
        }
        if self.crash_after == Some(0) {
            return Err(ConfigError::AtLeast {
                flag: "crash-after",
                min: 1,
            });
        }
        #[cfg(feature = "model")]
        if let Some(dir) = &self.model_dir {
            batchgate_model::check_dir(dir)?;
        }
        Ok(ReferenceWorkerConfig {
            #[cfg(feature = "model")]
            model_dir: self.model_dir,
            tls: self.tls.files(self.client_ca.clone())?,
            api_key_file: self.api_key_file,
            model_names: self.model_names,
            faults: batchgate_sim::Faults {
                error_rate: fraction("error-rate", self.error_rate)?,
                poison_pattern: self.poison_pattern.filter(|p| !p.is_empty()),
                slow_rate: fraction("slow-rate", self.slow_rate)?,
                slow_factor: self.slow_factor,
                hang_rate: fraction("hang-rate", self.hang_rate)?,
                crash_after: self.crash_after,
                max_queued_calls: self.max_queued_calls,
                seed: self.fault_seed,
            },
            sim: batchgate_sim::SimConfig {
                slots: count_at_least("slots", self.slots, 1)?,
                base: millis("base-ms", self.base_ms)?,
                per_item: millis("per-item-ms", self.per_item_ms)?,
                max_batch_size: self.max_batch_size,
            },
        })
    }
}
