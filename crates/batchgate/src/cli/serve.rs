//! `batchgate serve`: the whole system in one process.

use std::net::SocketAddr;

use clap::Args;

use super::backends::{QueueArgs, RedisArgs};
use super::batching::BatchingArgs;
use super::error::{count_at_least, millis, ms_f64, ConfigError};
use super::http::HttpArgs;
use super::server::ServerArgs;
use crate::serve::ServeConfig;

/// Default address of `serve` (and of `gateway`).
pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:8080";

/// Flags of `batchgate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BATCHGATE_LISTEN", default_value = DEFAULT_SERVE_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub queue: QueueArgs,

    #[command(flatten)]
    pub batching: BatchingArgs,

    /// Concurrent batches of the built-in simulated worker (simulated GPUs).
    #[arg(long, env = "BATCHGATE_SIM_SLOTS", default_value_t = batchgate_sim::model::DEFAULT_SLOTS)]
    pub sim_slots: usize,

    /// Fixed cost of one call to the built-in simulated worker, in milliseconds.
    #[arg(long, env = "BATCHGATE_SIM_BASE_MS", default_value_t = ms_f64(batchgate_sim::model::DEFAULT_BASE))]
    pub sim_base_ms: f64,

    /// Added cost per input of the built-in simulated worker, in milliseconds.
    #[arg(long, env = "BATCHGATE_SIM_PER_ITEM_MS", default_value_t = ms_f64(batchgate_sim::model::DEFAULT_PER_ITEM))]
    pub sim_per_item_ms: f64,

    /// A further model, with its own queue (on Redis, its own keys), batcher and workers:
    /// `NAME:worker=URL[,worker=URL]…[,max_batch_size=N][,max_wait_ms=N][,max_inflight_batches=N]`
    /// (unset limits as the flags above say). Repeat it for several; batches never mix models.
    /// The first model is the one the other flags describe, named by --model-name.
    #[arg(long = "model", env = "BATCHGATE_MODELS", value_delimiter = ';')]
    pub models: Vec<String>,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl ServeArgs {
    /// Checks the flags and turns them into the plain config `serve::run` takes.
    pub fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let sim = batchgate_sim::SimConfig {
            slots: count_at_least("sim-slots", self.sim_slots, 1)?,
            base: millis("sim-base-ms", self.sim_base_ms)?,
            per_item: millis("sim-per-item-ms", self.sim_per_item_ms)?,
            max_batch_size: self.batching.max_batch_size,
        };
        let zone = self.queue.zone()?;
        let batcher = self.batching.part(Some(sim), zone.clone())?;
        let store = self.queue.store(self.redis.backend()?)?;
        let models = super::models::parse(
            &self.models,
            &self.http.api.model_name,
            Some(&self.batching),
        )?;

        let mut http = self.http.into_config(self.listen, zone)?;
        http.gateway
            .models
            .extend(models.iter().map(|m| m.name.clone()));
        let lifecycle = self.server.lifecycle();
        Ok(ServeConfig {
            batcher: Some(batcher),
            store,
            gateway: Some(http.gateway),
            connections: http.connections,
            edge: http.edge,
            grace_period: lifecycle.grace_period,
            shutdown_delay: lifecycle.shutdown_delay,
            queue_error_tolerance: lifecycle.queue_error_tolerance,
            tls: http.tls,
            models,
        })
    }
}
