//! `batchgate gateway`: only the HTTP API, on Redis; any number of them share the work.

use std::net::SocketAddr;

use clap::Args;

use super::backends::{QueueArgs, RedisArgs};
use super::error::ConfigError;
use super::http::HttpArgs;
use super::serve::DEFAULT_SERVE_LISTEN;
use super::server::ServerArgs;
use crate::serve::ServeConfig;

/// Flags of `batchgate gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
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
    pub server: ServerArgs,
}

impl GatewayArgs {
    /// Checks the flags; a gateway needs Redis.
    pub fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let redis = self.redis.required_backend("gateway")?;
        let store = self.queue.store(Some(redis))?;
        let http = self.http.into_config(self.listen, self.queue.zone()?)?;
        let lifecycle = self.server.lifecycle();
        Ok(ServeConfig {
            store,
            gateway: Some(http.gateway),
            connections: http.connections,
            edge: http.edge,
            batcher: None,
            grace_period: lifecycle.grace_period,
            shutdown_delay: lifecycle.shutdown_delay,
            queue_error_tolerance: lifecycle.queue_error_tolerance,
            tls: http.tls,
            models: Vec::new(),
        })
    }
}
