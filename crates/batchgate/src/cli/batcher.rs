//! `batchgate batcher`: only a batcher, on Redis: reads the queue, calls the workers, stores
//! results.

use std::net::SocketAddr;

use clap::Args;

use super::backends::{QueueArgs, RedisArgs};
use super::batching::BatchingArgs;
use super::error::ConfigError;
use super::server::ServerArgs;
use crate::serve::ServeConfig;

/// Default address of `batcher`'s health and metrics.
pub const DEFAULT_BATCHER_LISTEN: &str = "127.0.0.1:9100";

/// Flags of `batchgate batcher`.
#[derive(Debug, Args)]
pub struct BatcherArgs {
    /// Address of the batcher's own `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "BATCHGATE_LISTEN", default_value = DEFAULT_BATCHER_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub queue: QueueArgs,

    #[command(flatten)]
    pub batching: BatchingArgs,

    /// A further model to batch, with its own keys on Redis, batcher and workers:
    /// `NAME:worker=URL[,worker=URL]…[,max_batch_size=N][,max_wait_ms=N][,max_inflight_batches=N]`
    /// (unset limits as the flags above say). Repeat it for several; the gateways name the
    /// same models.
    #[arg(long = "model", env = "BATCHGATE_MODELS", value_delimiter = ';')]
    pub models: Vec<String>,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl BatcherArgs {
    /// Checks the flags; a batcher needs Redis and a worker.
    pub fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let redis = self.redis.required_backend("batcher")?;
        let lifecycle = self.server.lifecycle();
        let models = super::models::parse(&self.models, "", Some(&self.batching))?;
        Ok(ServeConfig {
            store: self.queue.store(Some(redis))?,
            gateway: None,
            connections: batchgate_net::ConnectionLimits::default(),
            edge: crate::serve::EdgeConfig::default(),
            batcher: Some(self.batching.part(None, self.queue.zone()?)?),
            grace_period: lifecycle.grace_period,
            shutdown_delay: lifecycle.shutdown_delay,
            queue_error_tolerance: lifecycle.queue_error_tolerance,
            tls: None,
            models,
        })
    }
}
