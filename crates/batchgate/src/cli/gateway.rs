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

    /// A further model this gateway admits tasks for, by name: its tasks go to its own keys
    /// on Redis, where `batchgate batcher --model NAME:worker=URL,…` batches them. Repeat it
    /// for several; the first model is --model-name.
    #[arg(long = "model", env = "BATCHGATE_MODELS", value_delimiter = ';')]
    pub models: Vec<String>,

    #[command(flatten)]
    pub server: ServerArgs,
}

impl GatewayArgs {
    /// Checks the flags; a gateway needs Redis.
    pub fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let redis = self.redis.required_backend("gateway")?;
        let store = self.queue.store(Some(redis))?;
        let models = super::models::parse(&self.models, &self.http.api.model_name, None)?;
        let mut http = self.http.into_config(self.listen, self.queue.zone()?)?;
        http.gateway
            .models
            .extend(models.iter().map(|m| m.name.clone()));
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
            models,
        })
    }
}
