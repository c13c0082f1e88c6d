//! Flags of a process that serves the HTTP API (`serve`, `gateway`): its listening port's TLS
//! and connection bounds, and the API's limits and sharing. Authentication and the edge's
//! protections are in [`super::auth`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use batchgate_gateway::config as gateway;
use batchgate_net::limits as net;
use clap::Args;

use super::auth::{AuthArgs, EdgeArgs};
use super::error::{at_least, count_at_least, ms, ConfigError};
use crate::serve::EdgeConfig;

/// Whose identical inputs share one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DedupeScopeName {
    /// The same caller's only.
    Owner,
    /// Everyone's.
    Global,
}

impl From<DedupeScopeName> for batchgate_gateway::DedupeScope {
    fn from(name: DedupeScopeName) -> Self {
        match name {
            DedupeScopeName::Owner => batchgate_gateway::DedupeScope::Owner,
            DedupeScopeName::Global => batchgate_gateway::DedupeScope::Global,
        }
    }
}

/// Everything about the HTTP API that `serve` and `gateway` share, flattened into both.
#[derive(Debug, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub edge: EdgeArgs,

    /// Largest accepted input, in bytes.
    #[arg(long, env = "BATCHGATE_MAX_INPUT_BYTES", default_value_t = gateway::DEFAULT_MAX_INPUT_BYTES)]
    pub max_input_bytes: usize,

    #[command(flatten)]
    pub api: ApiArgs,
}

/// The HTTP API's part of a process's config.
pub struct HttpConfig {
    /// The API's limits.
    pub gateway: batchgate_gateway::GatewayConfig,
    /// The bounds of every client connection.
    pub connections: batchgate_net::ConnectionLimits,
    /// Authentication, shedding, rate limits, the admin API.
    pub edge: EdgeConfig,
    /// HTTPS, if asked for.
    pub tls: Option<batchgate_net::TlsFiles>,
}

impl HttpArgs {
    /// Checks the flags against the address the API listens on.
    pub fn into_config(
        self,
        listen: SocketAddr,
        zone: Option<batchgate_protocol::zone::Zone>,
    ) -> Result<HttpConfig, ConfigError> {
        Ok(HttpConfig {
            gateway: self.api.gateway(self.max_input_bytes, zone)?,
            connections: self.api.connections()?,
            edge: self.edge.into_config(self.auth.into_config(listen)?)?,
            tls: self.tls.files(None)?,
        })
    }
}

/// Limits and sharing of the HTTP API.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Most API requests (`/v1/…`, long polls included) served at once; more are answered
    /// 503 `concurrency_limited` with Retry-After.
    #[arg(long, env = "BATCHGATE_MAX_CONCURRENT_REQUESTS", default_value_t = gateway::DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,

    /// Whose identical inputs share one task: `owner` (the same caller's only: the token's
    /// subject, or with --insecure-no-auth the request's `client_id`, requests without one
    /// sharing one anonymous scope) or `global` (everyone's: saves GPU time across users, but a
    /// caller learns that someone sent the same input, and any caller holding a task id can
    /// read its result; see docs/security.md).
    #[arg(long, env = "BATCHGATE_DEDUPE_SCOPE", value_enum, default_value_t = DedupeScopeName::Owner)]
    pub dedupe_scope: DedupeScopeName,

    /// Most API requests one authenticated caller (token subject) may have in flight, long
    /// polls included, counted from when a request's headers arrive; more are answered 429
    /// `too_many_in_flight` before their bodies are read.
    #[arg(long, env = "BATCHGATE_MAX_REQUESTS_PER_CALLER", default_value_t = gateway::DEFAULT_MAX_REQUESTS_PER_CALLER)]
    pub max_requests_per_caller: usize,

    /// Bound on receiving a request's body once its headers are in, in milliseconds; past
    /// it, 408 `timeout`.
    #[arg(long, env = "BATCHGATE_BODY_READ_TIMEOUT_MS", default_value_t = ms(gateway::DEFAULT_BODY_READ_TIMEOUT))]
    pub body_read_timeout_ms: u64,

    /// Bound on receiving a request's head (HTTP/1.1), in milliseconds, counted from its
    /// first byte; past it the connection is closed.
    #[arg(long, env = "BATCHGATE_HEADER_READ_TIMEOUT_MS", default_value_t = ms(net::DEFAULT_HEADER_READ_TIMEOUT))]
    pub header_read_timeout_ms: u64,

    /// A connection with no request under way (and no head arriving) for this long is closed,
    /// in milliseconds; keep it above the idle timeout of a load balancer in front.
    #[arg(long, env = "BATCHGATE_IDLE_TIMEOUT_MS", default_value_t = ms(net::DEFAULT_IDLE_TIMEOUT))]
    pub idle_timeout_ms: u64,

    /// Most client connections open at once (lowered to fit the process's open-file limit);
    /// more wait in the kernel's backlog until one closes.
    #[arg(long, env = "BATCHGATE_MAX_CONNECTIONS", default_value_t = net::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Largest request head (request line and headers), in bytes; at least 8192.
    #[arg(long, env = "BATCHGATE_MAX_HEADER_BYTES", default_value_t = net::DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,

    /// The name of the model served, as OpenAI-compatible requests (`model`) and KServe V2
    /// paths (`/v2/models/NAME/…`) give it and `GET /v1/models` lists it: letters, digits and
    /// `.`, `_`, `-`, `:`.
    #[arg(long, env = "BATCHGATE_MODEL_NAME", default_value = gateway::DEFAULT_MODEL_NAME)]
    pub model_name: String,

    /// Most concurrent HTTP/2 streams (requests) on one connection.
    #[arg(long, env = "BATCHGATE_H2_MAX_STREAMS", default_value_t = net::DEFAULT_H2_MAX_STREAMS)]
    pub h2_max_streams: u32,
}

impl ApiArgs {
    /// The bounds of every client connection, checked.
    fn connections(&self) -> Result<batchgate_net::ConnectionLimits, ConfigError> {
        let limits = batchgate_net::ConnectionLimits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
            max_header_bytes: self.max_header_bytes,
            h2_max_streams: self.h2_max_streams,
        };
        limits.validate()?;
        Ok(limits)
    }

    /// The gateway's limits, checked.
    fn gateway(
        &self,
        max_input_bytes: usize,
        zone: Option<batchgate_protocol::zone::Zone>,
    ) -> Result<batchgate_gateway::GatewayConfig, ConfigError> {
        Ok(batchgate_gateway::GatewayConfig {
            max_input_bytes: count_at_least("max-input-bytes", max_input_bytes, 1)?,
            max_concurrent_requests: count_at_least(
                "max-concurrent-requests",
                self.max_concurrent_requests,
                1,
            )?,
            max_requests_per_caller: count_at_least(
                "max-requests-per-caller",
                self.max_requests_per_caller,
                1,
            )?,
            body_read_timeout: Duration::from_millis(at_least(
                "body-read-timeout-ms",
                self.body_read_timeout_ms,
                1,
            )?),
            dedupe_scope: self.dedupe_scope.into(),
            zone,
            models: vec![model_name(&self.model_name)?],
            ..Default::default()
        })
    }
}

/// A model name, checked: 1 to 128 letters, digits, `.`, `_`, `-` or `:` (it stands in URL
/// paths and metric labels).
pub(crate) fn model_name(name: &str) -> Result<String, ConfigError> {
    let fits = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if fits {
        Ok(name.to_owned())
    } else {
        Err(ConfigError::ModelName(name.to_owned()))
    }
}

/// HTTPS on the listening port.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first) instead of HTTP. The files
    /// are read again on SIGHUP and when they change; a bad new file keeps the old ones.
    #[arg(
        long,
        env = "BATCHGATE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "BATCHGATE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to serve HTTPS with (`None`: plain HTTP); `client_ca` makes it mTLS.
    pub fn files(
        &self,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<batchgate_net::TlsFiles>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(batchgate_net::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca,
            })),
            _ if client_ca.is_some() => Err(ConfigError::ClientCaWithoutTls),
            _ => Ok(None),
        }
    }
}
