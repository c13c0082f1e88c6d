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

    #[command(flatten)]
    pub server: ServerArgs,
}

impl BatcherArgs {
    /// Checks the flags; a batcher needs Redis and a worker.
    pub fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let redis = self.redis.required_backend("batcher")?;
        let lifecycle = self.server.lifecycle();
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
            models: Vec::new(),
        })
    }
}
