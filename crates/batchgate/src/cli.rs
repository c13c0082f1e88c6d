//! The subcommands and their flags. Every flag has a `BATCHGATE_*` environment variable and
//! may be set in the `--config` TOML file; precedence is flag > environment > file > default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use batchgate_bench::BenchArgs;
use batchgate_gateway::ShedBound;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backend::{RedisBackend, StoreConfig};
use crate::config_file;
use crate::serve::{BatcherPart, ServeConfig, WorkerChoice};
use crate::telemetry::{self, LogFormat};
use crate::worker::WorkerConfig;
use batchgate_redis::RedisConfig;
use batchgate_telemetry::OtlpConfig;

/// Default address of `serve`.
pub const DEFAULT_SERVE_LISTEN: &str = "127.0.0.1:8080";
/// Default address of `batcher`'s health and metrics.
pub const DEFAULT_BATCHER_LISTEN: &str = "127.0.0.1:9100";
/// Default address of `worker`.
pub const DEFAULT_WORKER_LISTEN: &str = "127.0.0.1:9000";

/// Dynamic batching in front of a fixed GPU inference API.
#[derive(Debug, Parser)]
#[command(name = "batchgate", version, about, long_about = None)]
pub struct Cli {
    /// TOML file with flag values (keys are flag names, at the top level or under a table
    /// named after the subcommand, e.g. `[serve]`); flags and environment variables win over it.
    #[arg(long, global = true, env = "BATCHGATE_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "BATCHGATE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// Log filter (tracing's EnvFilter syntax); `RUST_LOG` overrides it.
    #[arg(
        long,
        global = true,
        env = "BATCHGATE_LOG_FILTER",
        default_value = "info"
    )]
    pub log_filter: String,

    /// OTLP/gRPC endpoint to export traces to (e.g. `http://127.0.0.1:4317`). Off by default;
    /// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (and the other `OTEL_*` variables) work too.
    #[arg(
        long,
        global = true,
        env = "BATCHGATE_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otlp_endpoint: Option<String>,

    /// CA certificate (PEM) trusted for an `https://` OTLP endpoint besides the system's
    /// roots. Headers a collector needs (an auth token) go in the standard
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`authorization=Bearer%20TOKEN`).
    #[arg(long, global = true, env = "BATCHGATE_OTLP_CA", value_name = "FILE")]
    pub otlp_ca: Option<PathBuf>,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at start and consumed at once: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system in one process: gateway, queue, batcher, result store, and
    /// (unless --worker-url) a built-in simulated worker. In-process backends unless --redis.
    Serve(ServeArgs),
    /// Run only the HTTP gateway, on Redis: any number of them share the work.
    Gateway(GatewayArgs),
    /// Run only a batcher, on Redis: reads the queue, calls the worker, stores results.
    Batcher(BatcherArgs),
    /// Run the reference worker: the fixed batch API (`POST /v1/batch`), KServe V2, OpenAI
    /// embeddings and gRPC, all on one port.
    Worker(WorkerArgs),
    /// Load-test a running gateway over HTTP and report rate, errors and latency.
    Bench(BenchArgs),
    /// Run the batching policy and the batcher's slot logic in virtual time against modelled
    /// load and a worker cost model; reports as `bench` does.
    Simulate(batchgate_simulate::SimulateArgs),
    /// Find the cheapest deployment (workers, batchers, gateways, Redis masters) that serves
    /// --rate requests/s at --p99-ms, by simulation.
    Plan(batchgate_simulate::PlanArgs),
    /// Inspect, replay or purge the dead-letter queue through a gateway's admin API.
    Dlq(crate::dlq::DlqArgs),
    /// Mint a development token (HS256, signed with the gateway's --jwt-secret); prints it alone.
    Token(crate::token::TokenArgs),
    /// Write a throwaway CA, server and client certificate for TLS and mTLS (tests, local runs).
    Certs(crate::certs::CertsArgs),
    /// GET a health endpoint once: exit 0 on 2xx (a container HEALTHCHECK without curl).
    Probe(crate::probe::ProbeArgs),
}

/// Limits and sharing of the HTTP API.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Most API requests (`/v1/…`, long polls included) served at once; more are answered
    /// 503 `concurrency_limited` with Retry-After.
    #[arg(long, env = "BATCHGATE_MAX_CONCURRENT_REQUESTS", default_value_t = batchgate_gateway::config::DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,

    /// Whose identical inputs share one task: `owner` (the same caller's only: the token's
    /// subject, or with --insecure-no-auth the request's `client_id`, requests without one
    /// sharing one anonymous scope) or `global` (everyone's: saves GPU time across users, but a
    /// caller learns that someone sent the same input, and any caller holding a task id can
    /// read its result; see docs/security.md).
    #[arg(long, env = "BATCHGATE_DEDUPE_SCOPE", default_value = "owner", value_parser = ["owner", "global"])]
    pub dedupe_scope: String,

    /// Most API requests one authenticated caller (token subject) may have in flight, long
    /// polls included, counted from when a request's headers arrive; more are answered 429
    /// `too_many_in_flight` before their bodies are read.
    #[arg(long, env = "BATCHGATE_MAX_REQUESTS_PER_CALLER", default_value_t = batchgate_gateway::config::DEFAULT_MAX_REQUESTS_PER_CALLER)]
    pub max_requests_per_caller: usize,

    /// Bound on receiving a request's body once its headers are in, in milliseconds; past
    /// it, 408 `timeout`.
    #[arg(long, env = "BATCHGATE_BODY_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_read_timeout_ms: u64,

    /// Bound on receiving a request's head (HTTP/1.1), in milliseconds, counted from its
    /// first byte; past it the connection is closed.
    #[arg(
        long,
        env = "BATCHGATE_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,

    /// A connection with no request under way (and no head arriving) for this long is closed,
    /// in milliseconds; keep it above the idle timeout of a load balancer in front.
    #[arg(long, env = "BATCHGATE_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// Most client connections open at once (lowered to fit the process's open-file limit);
    /// more wait in the kernel's backlog until one closes.
    #[arg(long, env = "BATCHGATE_MAX_CONNECTIONS", default_value_t = batchgate_net::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Largest request head (request line and headers), in bytes; at least 8192.
    #[arg(long, env = "BATCHGATE_MAX_HEADER_BYTES", default_value_t = batchgate_net::limits::DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,

    /// Most concurrent HTTP/2 streams (requests) on one connection.
    #[arg(long, env = "BATCHGATE_H2_MAX_STREAMS", default_value_t = batchgate_net::limits::DEFAULT_H2_MAX_STREAMS)]
    pub h2_max_streams: u32,
}

impl ApiArgs {
    /// The bounds of every client connection, checked.
    fn connections(&self) -> Result<batchgate_net::ConnectionLimits, String> {
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
    fn files(&self, client_ca: Option<PathBuf>) -> Result<Option<batchgate_net::TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(batchgate_net::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca,
            })),
            _ if client_ca.is_some() => {
                Err("--client-ca needs --tls-cert and --tls-key (client certificates are checked only over TLS)".into())
            }
            _ => Ok(None),
        }
    }
}

/// Where Redis is (for the distributed deployment). `Debug` shows the URLs without their
/// passwords.
#[derive(Clone, Args)]
pub struct RedisArgs {
    /// Redis URL, `redis://host:port`, or `rediss://user:password@host:port` for TLS (and an
    /// ACL user and password); repeat it (or separate with commas) for the seed nodes of a
    /// cluster. Without it, `serve` runs on in-process backends.
    #[arg(
        long = "redis",
        env = "BATCHGATE_REDIS",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub redis: Vec<String>,

    /// Talk to the --redis nodes as a Redis Cluster.
    #[arg(long, env = "BATCHGATE_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Prefix of every Redis key, so that several deployments can share one Redis.
    #[arg(long, env = "BATCHGATE_KEY_PREFIX", default_value = batchgate_redis::conn::DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,

    /// Bound on one Redis command, in milliseconds; past it the gateway answers 503.
    #[arg(long, env = "BATCHGATE_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,

    /// How long a task read by a batcher may stay unacknowledged before another batcher
    /// claims it (the dead batcher's tasks are redelivered after this), in milliseconds.
    #[arg(long, env = "BATCHGATE_VISIBILITY_TIMEOUT_MS", default_value_t = 5000)]
    pub visibility_timeout_ms: u64,

    /// Deliveries of one task before it goes to the dead-letter stream and becomes FAILED.
    #[arg(long, env = "BATCHGATE_MAX_DELIVERIES", default_value_t = 5)]
    pub max_deliveries: usize,

    /// CA certificate (PEM) that signed the Redis servers' certificates, for `rediss://` URLs;
    /// without it the system's roots are trusted.
    #[arg(long, env = "BATCHGATE_REDIS_CA", value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,

    /// Certificate (PEM) presented to a Redis that requires one (`--tls-auth-clients yes`).
    #[arg(
        long,
        env = "BATCHGATE_REDIS_CLIENT_CERT",
        value_name = "FILE",
        requires = "redis_client_key"
    )]
    pub redis_client_cert: Option<PathBuf>,

    /// Private key (PEM) of --redis-client-cert.
    #[arg(
        long,
        env = "BATCHGATE_REDIS_CLIENT_KEY",
        value_name = "FILE",
        requires = "redis_client_cert"
    )]
    pub redis_client_key: Option<PathBuf>,
}

/// The queue and the stores.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// Partitions of the queue (Redis: one stream each). Default: 16 in process and on a
    /// Redis Cluster (spread over its masters), 1 on a standalone Redis (one server gains
    /// nothing from more streams); on Redis, a process without this flag adopts the count
    /// the deployment recorded, and one given a different count refuses to start.
    #[arg(long, env = "BATCHGATE_PARTITIONS")]
    pub partitions: Option<usize>,

    /// Most tasks waiting in the queue; past it, submissions get 503 with Retry-After.
    #[arg(long, env = "BATCHGATE_QUEUE_CAPACITY", default_value_t = 50_000)]
    pub queue_capacity: usize,

    /// Most records (pending and finished) in the in-process result store; past it, the oldest
    /// are evicted (batchgate_result_store_evictions_total), so results may live less than
    /// --result-ttl-secs. Also bounds the in-process dedupe cache.
    #[arg(long, env = "BATCHGATE_MAX_RESULTS", default_value_t = 8_000_000)]
    pub max_results: usize,

    /// How long a result is kept after it is stored, in seconds.
    #[arg(long, env = "BATCHGATE_RESULT_TTL_SECS", default_value_t = 600)]
    pub result_ttl_secs: u64,

    /// How long identical inputs share one task (dedupe by SHA-256 of the input, per
    /// --dedupe-scope), in seconds; 0 turns dedupe off, for models whose outputs differ from
    /// one call to the next (sampling), where every request must run.
    #[arg(long, env = "BATCHGATE_DEDUPE_TTL_SECS", default_value_t = 300)]
    pub dedupe_ttl_secs: u64,

    /// The zone this process runs in (an availability zone, e.g. the node's
    /// topology.kubernetes.io/zone label): a gateway stamps it on the tasks it accepts, which
    /// go to that zone's streams on Redis; a batcher reads its zone's streams and sends each
    /// batch to a worker of its zone (`zone=` on a --worker-url) unless they are all busy or
    /// down (docs/zones.md). Empty: no zone.
    #[arg(long, env = "BATCHGATE_ZONE", default_value = "")]
    pub zone: String,
}

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
    #[arg(
        long,
        env = "BATCHGATE_WORKER_HEALTH_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub worker_health_interval_ms: u64,

    /// Bound on one worker call, in milliseconds.
    #[arg(long, env = "BATCHGATE_WORKER_TIMEOUT_MS", default_value_t = 10_000)]
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
    #[arg(long, env = "BATCHGATE_MAX_BATCH_SIZE", default_value_t = 64)]
    pub max_batch_size: usize,

    /// Longest wait of a batch's first task before the batch goes, in milliseconds.
    #[arg(long, env = "BATCHGATE_MAX_WAIT_MS", default_value_t = 50)]
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
    /// --model-dir (one running, the next ready), else 32].
    #[arg(long, env = "BATCHGATE_MAX_INFLIGHT_BATCHES")]
    pub max_inflight_batches: Option<usize>,

    /// A task older than this when its batch leaves is not sent to the worker; it becomes
    /// FAILED with `expired` (e.g. `30s`, `500ms`).
    #[arg(long, env = "BATCHGATE_MAX_QUEUE_AGE", default_value = "30s", value_parser = batchgate_bench::parse_duration)]
    pub max_queue_age: Duration,

    /// When a batch goes: `fixed` (wait-or-full) or `adaptive` (also early when waiting cannot
    /// fill the batch and the worker has idle slots; longer, up to --max-hold-ms, when the
    /// batch would take the worker's last free slot). See docs/batching.md.
    #[arg(long, env = "BATCHGATE_POLICY", default_value = "fixed", value_parser = ["fixed", "adaptive"])]
    pub policy: String,

    /// Adaptive policy: longest wait of a batch's first task when the batch would take the
    /// worker's last free slot, in milliseconds (at least --max-wait-ms).
    #[arg(long, env = "BATCHGATE_MAX_HOLD_MS", default_value_t = 100)]
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

/// Who may call the API. `Debug` shows no secret.
#[derive(Args)]
pub struct AuthArgs {
    /// HS256 shared secret that signs client tokens (at least 32 bytes).
    #[arg(long, env = "BATCHGATE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key (RSA: RS256, or EC P-256: ES256) that verifies client tokens.
    #[arg(long, env = "BATCHGATE_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS of public keys (chosen by `kid`): a file, read again when it changes, or an
    /// identity provider's `https://` URL, fetched every --jwks-refresh-secs and when a token
    /// names an unknown `kid` (at most once per --jwks-min-refresh-secs); a failed fetch keeps
    /// the last good keys.
    #[arg(long, env = "BATCHGATE_JWKS", value_name = "FILE|URL")]
    pub jwks: Option<String>,

    /// Find the JWKS URL in the OpenID discovery document of --jwt-issuer
    /// (`ISSUER/.well-known/openid-configuration`, its `jwks_uri`) instead of --jwks.
    #[arg(long, env = "BATCHGATE_JWKS_FROM_ISSUER", conflicts_with = "jwks")]
    pub jwks_from_issuer: bool,

    /// CA certificate (PEM) trusted for the JWKS URL besides the system's roots (an
    /// identity provider with a private CA).
    #[arg(long, env = "BATCHGATE_JWKS_CA", value_name = "FILE")]
    pub jwks_ca: Option<PathBuf>,

    /// Time between two scheduled fetches of a JWKS URL, in seconds.
    #[arg(long, env = "BATCHGATE_JWKS_REFRESH_SECS", default_value_t = 300)]
    pub jwks_refresh_secs: u64,

    /// Least time between two fetches of a JWKS URL caused by tokens naming an unknown `kid`,
    /// in seconds: such tokens cannot make the gateway flood the identity provider.
    #[arg(long, env = "BATCHGATE_JWKS_MIN_REFRESH_SECS", default_value_t = 10)]
    pub jwks_min_refresh_secs: u64,

    /// Required `iss` claim.
    #[arg(long, env = "BATCHGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim.
    #[arg(long, env = "BATCHGATE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Serve without authentication: every caller is `anonymous` and can read every result.
    /// Refused unless --listen is a loopback address.
    #[arg(long, env = "BATCHGATE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

impl std::fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisArgs")
            .field(
                "redis",
                &self
                    .redis
                    .iter()
                    .map(|u| batchgate_redis::conn::redact(u))
                    .collect::<Vec<_>>(),
            )
            .field("redis_cluster", &self.redis_cluster)
            .field("key_prefix", &self.key_prefix)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("visibility_timeout_ms", &self.visibility_timeout_ms)
            .field("max_deliveries", &self.max_deliveries)
            .field("redis_ca", &self.redis_ca)
            .field("redis_client_cert", &self.redis_client_cert)
            .field("redis_client_key", &self.redis_client_key)
            .finish()
    }
}

/// How a secret flag shows in `Debug`: whether it is set, never its value.
fn redacted(secret: Option<&String>) -> Option<&'static str> {
    secret.map(|_| "<redacted>")
}

impl std::fmt::Debug for AuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthArgs")
            .field("jwt_secret", &redacted(self.jwt_secret.as_ref()))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwks", &self.jwks)
            .field("jwks_from_issuer", &self.jwks_from_issuer)
            .field("jwks_ca", &self.jwks_ca)
            .field("jwks_refresh_secs", &self.jwks_refresh_secs)
            .field("jwks_min_refresh_secs", &self.jwks_min_refresh_secs)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish()
    }
}

impl std::fmt::Debug for EdgeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeArgs")
            .field("admin_token", &redacted(self.admin_token.as_ref()))
            .field("latency_objective_ms", &self.latency_objective_ms)
            .field("shed_wait_ms", &self.shed_wait_ms)
            .field("rate_limit", &self.rate_limit)
            .field("rate_limit_period", &self.rate_limit_period)
            .field("rate_limit_overrides", &self.rate_limit_overrides)
            .finish()
    }
}

impl AuthArgs {
    /// The authentication the flags ask for, checked against where the API listens.
    fn into_config(self, listen: SocketAddr) -> Result<batchgate_gateway::AuthConfig, String> {
        use batchgate_gateway::auth::KeySource;
        if self.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("--jwt-secret must be at least 32 bytes".into());
        }
        let jwks = crate::managed::jwks_source(&self)?;
        let sources = [
            self.jwt_secret.map(|s| KeySource::Secret(s.into_bytes())),
            self.jwt_public_key.map(KeySource::PublicKeyPem),
            jwks,
        ];
        let mut given: Vec<KeySource> = sources.into_iter().flatten().collect();
        match (given.len(), self.insecure_no_auth) {
            (0, true) if listen.ip().is_loopback() => Ok(batchgate_gateway::AuthConfig::Disabled),
            (0, true) => Err(format!(
                "--insecure-no-auth is only allowed on a loopback address, not {listen}"
            )),
            (0, false) => Err(
                "no authentication configured: give --jwt-secret, --jwt-public-key or --jwks \
                 (or --insecure-no-auth, on loopback only)"
                    .into(),
            ),
            (1, false) => Ok(batchgate_gateway::AuthConfig::Jwt {
                keys: given.remove(0),
                issuer: self.jwt_issuer,
                audience: self.jwt_audience,
            }),
            (_, true) => Err("--insecure-no-auth cannot be combined with JWT keys".into()),
            (_, false) => Err("give only one of --jwt-secret, --jwt-public-key and --jwks".into()),
        }
    }
}

/// Flags of the HTTP edge: shedding, per-client limits, the admin API. `Debug` shows no
/// secret.
#[derive(Args)]
pub struct EdgeArgs {
    /// Bearer token of the admin API (`/admin/dlq`…); without it the admin API is off.
    #[arg(long, env = "BATCHGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// The latency objective that shedding protects, in milliseconds (the p99 accepted tasks
    /// should stay under). New tasks get 503 `overloaded` with Retry-After only while the
    /// workers are the bottleneck (their slots all taken most of the time) and a new task's
    /// estimated queue wait plus one worker call would pass 60% of it (the rest is the tail's
    /// headroom). 0 turns shedding off. See docs/batching.md, "Deadlines and shedding".
    #[arg(long, env = "BATCHGATE_LATENCY_OBJECTIVE_MS", default_value_t = 500)]
    pub latency_objective_ms: u64,

    /// Instead of the objective, shed when a new task's estimated queue wait alone would pass
    /// this many milliseconds (still only while the workers are the bottleneck); 0 turns
    /// shedding off.
    #[arg(long, env = "BATCHGATE_SHED_WAIT_MS")]
    pub shed_wait_ms: Option<u64>,

    /// Requests each authenticated caller may send per --rate-limit-period (GCRA: a whole
    /// period's worth may come at once); past it, 429 with Retry-After and RateLimit-* headers.
    /// Exact across gateways on Redis. 0 turns it off. Not applied without authentication.
    #[arg(long, env = "BATCHGATE_RATE_LIMIT", default_value_t = 1000)]
    pub rate_limit: u64,

    /// The period of --rate-limit (e.g. `60s`, `1h`).
    #[arg(long, env = "BATCHGATE_RATE_LIMIT_PERIOD", default_value = "60s", value_parser = batchgate_bench::parse_duration)]
    pub rate_limit_period: Duration,

    /// A caller with a limit of its own, `USER=N` (N requests per period); repeat for several.
    #[arg(
        long = "rate-limit-override",
        env = "BATCHGATE_RATE_LIMIT_OVERRIDES",
        value_delimiter = ',',
        value_name = "USER=N"
    )]
    pub rate_limit_overrides: Vec<String>,
}

impl EdgeArgs {
    fn into_config(
        self,
        auth: batchgate_gateway::AuthConfig,
    ) -> Result<crate::serve::EdgeConfig, String> {
        let mut overrides = std::collections::HashMap::new();
        for entry in &self.rate_limit_overrides {
            let parsed = entry
                .rsplit_once('=')
                .and_then(|(user, n)| Some((user, n.trim().parse::<u64>().ok()?)))
                .filter(|(user, n)| !user.is_empty() && *n > 0);
            let Some((user, n)) = parsed else {
                return Err(format!(
                    "--rate-limit-override takes USER=N with N ≥ 1, got {entry:?}"
                ));
            };
            overrides.insert(user.to_owned(), n);
        }
        if self.rate_limit > 0 && self.rate_limit_period.is_zero() {
            return Err("--rate-limit-period must be longer than 0".into());
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err("--admin-token must be at least 16 characters".into());
        }
        Ok(crate::serve::EdgeConfig {
            admin_token: self.admin_token,
            shed: match (self.shed_wait_ms, self.latency_objective_ms) {
                (Some(0), _) | (None, 0) => ShedBound::Off,
                (Some(ms), _) => ShedBound::QueueWait(Duration::from_millis(ms)),
                (None, ms) => ShedBound::Objective(Duration::from_millis(ms)),
            },
            rate_limit: (self.rate_limit > 0).then_some(crate::serve::RateLimitConfig {
                default: batchgate_queue::Rate {
                    limit: self.rate_limit,
                    period: self.rate_limit_period,
                },
                overrides,
            }),
            auth,
        })
    }
}

/// Default bound on the shutdown drain, in seconds: with the default shutdown delay (5 s) and
/// the HTTP close (4 s), a process exits within 29 s of SIGTERM, inside Kubernetes' default
/// 30 s termination grace period.
pub const DEFAULT_DRAIN_SECS: u64 = 20;

/// What orchestrators (Kubernetes, compose) and load balancers see of a server process: its
/// shutdown sequence and its readiness.
#[derive(Debug, Clone, Args)]
pub struct OrchestrationArgs {
    /// On SIGTERM (or SIGINT), how long `/readyz` answers 503 while requests are still served
    /// as before, in milliseconds, before the drain (--grace-period-secs) begins: the time load
    /// balancers (Kubernetes endpoints) take to stop sending new requests here. The process
    /// exits within this + --grace-period-secs + 4 s.
    #[arg(long, env = "BATCHGATE_SHUTDOWN_DELAY_MS", default_value_t = 5000)]
    pub shutdown_delay_ms: u64,

    /// How long the queue (Redis) may keep failing before `/readyz` answers 503, in
    /// milliseconds. A shorter Redis blip leaves readiness at 200 (requests during it still get
    /// 503 `unavailable`), so every gateway does not leave its load balancer at once; 0 fails
    /// readiness at the first error.
    #[arg(
        long,
        env = "BATCHGATE_READINESS_TOLERANCE_MS",
        default_value_t = 10_000
    )]
    pub readiness_tolerance_ms: u64,
}

/// Flags of `batchgate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BATCHGATE_LISTEN", default_value = DEFAULT_SERVE_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub queue: QueueArgs,

    #[command(flatten)]
    pub batching: BatchingArgs,

    /// Concurrent batches of the built-in simulated worker (simulated GPUs).
    #[arg(long, env = "BATCHGATE_SIM_SLOTS", default_value_t = 32)]
    pub sim_slots: usize,

    /// Fixed cost of one call to the built-in simulated worker, in milliseconds.
    #[arg(long, env = "BATCHGATE_SIM_BASE_MS", default_value_t = 150.0)]
    pub sim_base_ms: f64,

    /// Added cost per input of the built-in simulated worker, in milliseconds.
    #[arg(long, env = "BATCHGATE_SIM_PER_ITEM_MS", default_value_t = 0.78)]
    pub sim_per_item_ms: f64,

    /// Largest accepted input, in bytes.
    #[arg(long, env = "BATCHGATE_MAX_INPUT_BYTES", default_value_t = 65_536)]
    pub max_input_bytes: usize,

    #[command(flatten)]
    pub api: ApiArgs,

    /// Longest the shutdown drain (after --shutdown-delay-ms) may take before the process
    /// exits anyway, in seconds.
    #[arg(long, env = "BATCHGATE_GRACE_PERIOD_SECS", default_value_t = DEFAULT_DRAIN_SECS)]
    pub grace_period_secs: u64,

    #[command(flatten)]
    pub orchestration: OrchestrationArgs,
}

/// Flags of `batchgate gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, env = "BATCHGATE_LISTEN", default_value = DEFAULT_SERVE_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub queue: QueueArgs,

    /// Largest accepted input, in bytes.
    #[arg(long, env = "BATCHGATE_MAX_INPUT_BYTES", default_value_t = 65_536)]
    pub max_input_bytes: usize,

    #[command(flatten)]
    pub api: ApiArgs,

    /// Longest the shutdown drain (after --shutdown-delay-ms) may take, in seconds.
    #[arg(long, env = "BATCHGATE_GRACE_PERIOD_SECS", default_value_t = DEFAULT_DRAIN_SECS)]
    pub grace_period_secs: u64,

    #[command(flatten)]
    pub orchestration: OrchestrationArgs,
}

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

    /// Longest the drain (finish the batches in hand, after --shutdown-delay-ms) may take,
    /// in seconds.
    #[arg(long, env = "BATCHGATE_GRACE_PERIOD_SECS", default_value_t = DEFAULT_DRAIN_SECS)]
    pub grace_period_secs: u64,

    #[command(flatten)]
    pub orchestration: OrchestrationArgs,
}

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
    pub client_ca: Option<PathBuf>,

    /// Require `Authorization: Bearer KEY` on every inference call (HTTP and gRPC; health
    /// checks stay open), KEY being this file's content without surrounding whitespace.
    #[arg(long, env = "BATCHGATE_WORKER_API_KEY_FILE", value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Batches that run at once (simulated GPUs); further calls queue.
    #[arg(long, env = "BATCHGATE_WORKER_SLOTS", default_value_t = 32)]
    pub slots: usize,

    /// Fixed cost of one call, in milliseconds.
    #[arg(long, env = "BATCHGATE_WORKER_BASE_MS", default_value_t = 150.0)]
    pub base_ms: f64,

    /// Added cost per input, in milliseconds.
    #[arg(long, env = "BATCHGATE_WORKER_PER_ITEM_MS", default_value_t = 0.78)]
    pub per_item_ms: f64,

    /// Most inputs accepted in one call; more is answered 413.
    #[arg(long, env = "BATCHGATE_WORKER_MAX_BATCH_SIZE", default_value_t = 64)]
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

/// Default in-flight batches with an in-process model: one in the forward pass, the next one
/// formed and waiting for it, so the model never waits for the batcher.
#[cfg(feature = "model")]
pub const MODEL_INFLIGHT_BATCHES: usize = 2;

/// Milliseconds as given on the command line, checked.
fn millis(name: &str, ms: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .map_err(|_| format!("--{name} must be a finite number ≥ 0, got {ms}"))
}

impl RedisArgs {
    /// The Redis backend, or `None` without --redis.
    fn backend(&self) -> Result<Option<RedisBackend>, String> {
        if self.redis.is_empty() {
            if self.redis_cluster {
                return Err("--redis-cluster needs --redis URLs".into());
            }
            return Ok(None);
        }
        let redis = RedisConfig {
            urls: self.redis.clone(),
            cluster: self.redis_cluster,
            key_prefix: self.key_prefix.clone(),
            op_timeout: Duration::from_millis(self.redis_timeout_ms.max(1)),
            tls: crate::managed::redis_tls(
                self.redis_ca.as_deref(),
                self.redis_client_cert.as_deref(),
                self.redis_client_key.as_deref(),
            )?,
        };
        redis.validate()?;
        Ok(Some(RedisBackend {
            redis,
            visibility_timeout: Duration::from_millis(self.visibility_timeout_ms.max(100)),
            max_deliveries: self.max_deliveries.max(1),
        }))
    }

    fn required_backend(&self, command: &str) -> Result<RedisBackend, String> {
        self.backend()?
            .ok_or_else(|| format!("`batchgate {command}` needs --redis (its queue is shared)"))
    }
}

impl QueueArgs {
    /// The --zone, checked.
    fn zone(&self) -> Result<Option<batchgate_protocol::zone::Zone>, String> {
        batchgate_protocol::zone::Zone::optional(&self.zone).map_err(|e| format!("--zone: {e}"))
    }

    fn store(&self, redis: Option<RedisBackend>) -> Result<StoreConfig, String> {
        if self.partitions.is_some_and(|p| p == 0 || p > 1024) {
            return Err("--partitions must be between 1 and 1024".into());
        }
        if self.queue_capacity == 0 || self.max_results == 0 {
            return Err("--queue-capacity and --max-results must be at least 1".into());
        }
        Ok(StoreConfig {
            zone: self.zone()?,
            partitions: self.partitions,
            queue_capacity: self.queue_capacity,
            max_results: self.max_results,
            result_ttl: Duration::from_secs(self.result_ttl_secs.max(1)),
            dedupe_ttl: (self.dedupe_ttl_secs > 0)
                .then(|| Duration::from_secs(self.dedupe_ttl_secs)),
            redis,
        })
    }
}

impl BatchingArgs {
    /// The batcher part; `sim` is the built-in worker to use when no --worker-url is given.
    fn part(
        &self,
        sim: Option<batchgate_sim::SimConfig>,
        zone: Option<batchgate_protocol::zone::Zone>,
    ) -> Result<BatcherPart, String> {
        if self.max_batch_size == 0 {
            return Err("--max-batch-size must be at least 1".into());
        }
        if self.worker_timeout_ms == 0 || self.worker_health_interval_ms == 0 {
            return Err(
                "--worker-timeout-ms and --worker-health-interval-ms must be at least 1".into(),
            );
        }
        #[cfg(feature = "model")]
        if let Some(dir) = &self.model_dir {
            batchgate_model::check_dir(dir).map_err(|e| format!("--model-dir: {e}"))?;
        }
        #[cfg(feature = "model")]
        let sim = if self.model_dir.is_some() { None } else { sim };
        let worker = match (self.worker_url.is_empty(), sim) {
            (false, _) => {
                let workers = self
                    .worker_url
                    .iter()
                    .map(|url| url.parse::<batchgate_worker::WorkerSpec>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("--worker-url: {e}"))?;
                let tls = self.worker_tls(&workers)?;
                WorkerChoice::Remote {
                    tls,
                    workers,
                    pool: batchgate_worker::PoolConfig {
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
            (true, None) => return Err("--worker-url is required".into()),
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
                max_inflight_batches: max_inflight_batches.max(1),
                max_queue_age: self.max_queue_age,
                rule: self.rule()?,
                retry: batchgate_worker::RetryPolicy {
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
        workers: &[batchgate_worker::WorkerSpec],
    ) -> Result<batchgate_net::ClientTlsFiles, String> {
        let tls = batchgate_net::ClientTlsFiles {
            ca: self.worker_ca.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
        };
        if let Some(spec) = workers.iter().find(|w| w.uses_tls()) {
            if tls.ca.is_none() {
                return Err(format!(
                    "--worker-url {spec} is reached over TLS: give --worker-ca (the CA that signed the worker's certificate)"
                ));
            }
        } else if !tls.is_empty() {
            return Err(
                "--worker-ca, --client-cert and --client-key need an https:// --worker-url".into(),
            );
        }
        Ok(tls)
    }

    /// The batching rule the flags ask for.
    fn rule(&self) -> Result<batchgate_policy::Rule, String> {
        Ok(match self.policy.parse::<batchgate_policy::Rule>()? {
            batchgate_policy::Rule::Adaptive(adaptive) => {
                batchgate_policy::Rule::Adaptive(batchgate_policy::Adaptive {
                    max_hold: Duration::from_millis(self.max_hold_ms),
                    ..adaptive
                })
            }
            fixed => fixed,
        })
    }
}

impl ServeArgs {
    /// Checks the flags and turns them into the plain config `serve::run` takes.
    pub fn into_config(self) -> Result<ServeConfig, String> {
        let sim = batchgate_sim::SimConfig {
            slots: self.sim_slots.max(1),
            base: millis("sim-base-ms", self.sim_base_ms)?,
            per_item: millis("sim-per-item-ms", self.sim_per_item_ms)?,
            max_batch_size: self.batching.max_batch_size,
        };
        Ok(ServeConfig {
            batcher: Some(self.batching.part(Some(sim), self.queue.zone()?)?),
            store: self.queue.store(self.redis.backend()?)?,
            gateway: Some(api_limits(
                self.max_input_bytes,
                &self.api,
                self.queue.zone()?,
            )?),
            connections: self.api.connections()?,
            edge: self.edge.into_config(self.auth.into_config(self.listen)?)?,
            grace_period: Duration::from_secs(self.grace_period_secs),
            shutdown_delay: Duration::from_millis(self.orchestration.shutdown_delay_ms),
            queue_error_tolerance: Duration::from_millis(self.orchestration.readiness_tolerance_ms),
            tls: self.tls.files(None)?,
        })
    }
}

/// The gateway's limits from its flags.
fn api_limits(
    max_input_bytes: usize,
    api: &ApiArgs,
    zone: Option<batchgate_protocol::zone::Zone>,
) -> Result<batchgate_gateway::GatewayConfig, String> {
    if api.max_concurrent_requests == 0 || api.max_requests_per_caller == 0 {
        return Err(
            "--max-concurrent-requests and --max-requests-per-caller must be at least 1".into(),
        );
    }
    if api.body_read_timeout_ms == 0 {
        return Err("--body-read-timeout-ms must be at least 1".into());
    }
    Ok(batchgate_gateway::GatewayConfig {
        max_input_bytes,
        max_concurrent_requests: api.max_concurrent_requests,
        max_requests_per_caller: api.max_requests_per_caller,
        body_read_timeout: Duration::from_millis(api.body_read_timeout_ms),
        dedupe_scope: api.dedupe_scope.parse().map_err(|e| format!("{e}"))?,
        zone,
        ..Default::default()
    })
}

impl GatewayArgs {
    /// Checks the flags; a gateway needs Redis.
    pub fn into_config(self) -> Result<ServeConfig, String> {
        let redis = self.redis.required_backend("gateway")?;
        Ok(ServeConfig {
            store: self.queue.store(Some(redis))?,
            gateway: Some(api_limits(
                self.max_input_bytes,
                &self.api,
                self.queue.zone()?,
            )?),
            connections: self.api.connections()?,
            edge: self.edge.into_config(self.auth.into_config(self.listen)?)?,
            batcher: None,
            grace_period: Duration::from_secs(self.grace_period_secs),
            shutdown_delay: Duration::from_millis(self.orchestration.shutdown_delay_ms),
            queue_error_tolerance: Duration::from_millis(self.orchestration.readiness_tolerance_ms),
            tls: self.tls.files(None)?,
        })
    }
}

impl BatcherArgs {
    /// Checks the flags; a batcher needs Redis and a worker.
    pub fn into_config(self) -> Result<ServeConfig, String> {
        let redis = self.redis.required_backend("batcher")?;
        Ok(ServeConfig {
            store: self.queue.store(Some(redis))?,
            gateway: None,
            connections: batchgate_net::ConnectionLimits::default(),
            edge: crate::serve::EdgeConfig::default(),
            batcher: Some(self.batching.part(None, self.queue.zone()?)?),
            grace_period: Duration::from_secs(self.grace_period_secs),
            shutdown_delay: Duration::from_millis(self.orchestration.shutdown_delay_ms),
            queue_error_tolerance: Duration::from_millis(self.orchestration.readiness_tolerance_ms),
            tls: None,
        })
    }
}

impl WorkerArgs {
    /// Checks the flags and turns them into the worker's config.
    pub fn into_config(self) -> Result<WorkerConfig, String> {
        if self.max_batch_size == 0 {
            return Err("--max-batch-size must be at least 1".into());
        }
        /// A probability flag, checked.
        fn fraction(flag: &str, value: f64) -> Result<f64, String> {
            if (0.0..=1.0).contains(&value) {
                Ok(value)
            } else {
                Err(format!("--{flag} must be in [0, 1], got {value}"))
            }
        }
        if !(self.slow_factor.is_finite() && self.slow_factor >= 1.0) {
            return Err(format!(
                "--slow-factor must be a finite number ≥ 1, got {}",
                self.slow_factor
            ));
        }
        if self.crash_after == Some(0) {
            return Err("--crash-after must be at least 1".into());
        }
        #[cfg(feature = "model")]
        if let Some(dir) = &self.model_dir {
            batchgate_model::check_dir(dir).map_err(|e| format!("--model-dir: {e}"))?;
        }
        Ok(WorkerConfig {
            #[cfg(feature = "model")]
            model_dir: self.model_dir,
            tls: self.tls.files(self.client_ca.clone())?,
            api_key_file: self.api_key_file,
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
                slots: self.slots.max(1),
                base: millis("base-ms", self.base_ms)?,
                per_item: millis("per-item-ms", self.per_item_ms)?,
                max_batch_size: self.max_batch_size,
            },
        })
    }
}

/// Parses everything (file, environment, flags), then runs the subcommand.
pub fn main() -> ExitCode {
    batchgate_net::install_crypto_provider();
    let argv = match config_file::merge_into_args(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(error) => {
            eprintln!("batchgate: {error}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("batchgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Only the servers export traces; the exporter's channel lives on the runtime.
    let otlp = cli.command.service_name().map(|name| OtlpConfig {
        endpoint: cli.otlp_endpoint.clone(),
        service_name: name.to_owned(),
        ca: cli.otlp_ca.clone(),
    });
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::init(cli.log_format, &cli.log_filter, otlp.as_ref())
    };
    let code = match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("batchgate: {error:#}");
            ExitCode::FAILURE
        }
    };
    let _runtime = runtime.enter();
    telemetry.shutdown();
    code
}

impl Command {
    /// The `service.name` of this subcommand's traces; `None` for the client tools.
    fn service_name(&self) -> Option<&'static str> {
        match self {
            Command::Serve(_) => Some("batchgate"),
            Command::Gateway(_) => Some("batchgate-gateway"),
            Command::Batcher(_) => Some("batchgate-batcher"),
            Command::Worker(_) => Some("batchgate-worker"),
            Command::Bench(_)
            | Command::Simulate(_)
            | Command::Plan(_)
            | Command::Dlq(_)
            | Command::Token(_)
            | Command::Certs(_)
            | Command::Probe(_) => None,
        }
    }
}

/// Pending connections the kernel may hold for us. Thousands of clients connecting at once
/// (a load balancer's pool warming up, or `bench` at 10,000 requests/s) overflow the usual
/// 1,024 and wait out SYN retransmits of 1 s and more; the kernel caps this at `somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        // Configuration is validated before any port is bound.
        Command::Serve(args) => {
            let listen = args.listen;
            run_parts(args_to_config(args.into_config())?, listen).await
        }
        Command::Gateway(args) => {
            let listen = args.listen;
            run_parts(args_to_config(args.into_config())?, listen).await
        }
        Command::Batcher(args) => {
            let listen = args.listen;
            run_parts(args_to_config(args.into_config())?, listen).await
        }
        Command::Worker(args) => {
            let listen = args.listen;
            let config = args_to_config(args.into_config())?;
            let listener = bind(listen)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
            crate::worker::run(config, listener, shutdown).await?;
            Ok(())
        }
        Command::Dlq(args) => crate::dlq::run(args).await,
        Command::Probe(args) => crate::probe::run(&args).await,
        Command::Certs(args) => {
            println!("{}", crate::certs::run(&args)?);
            Ok(())
        }
        Command::Token(args) => {
            println!("{}", crate::token::mint(&args)?);
            Ok(())
        }
        Command::Simulate(args) => crate::simulate::simulate(&args),
        Command::Plan(args) => crate::simulate::plan(&args),
        Command::Bench(args) => {
            let json = args.json;
            let report = batchgate_bench::run(args).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            Ok(())
        }
    }
}

async fn run_parts(config: ServeConfig, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = bind(listen)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
    let outcome = crate::serve::run(config, listener, shutdown).await?;
    if outcome.drained {
        Ok(())
    } else {
        anyhow::bail!("shutdown did not drain within the grace period")
    }
}

fn args_to_config<T>(parsed: Result<T, String>) -> anyhow::Result<T> {
    parsed.map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_config(flags: &[&str]) -> Result<ServeConfig, String> {
        let argv = ["batchgate", "serve", "--insecure-no-auth"]
            .iter()
            .chain(flags);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        args.into_config()
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let cli = Cli::try_parse_from([
            "batchgate",
            "gateway",
            "--redis",
            "redis://:secretpw-redis@127.0.0.1:6379",
            "--jwt-secret",
            "jwt-secret-value-of-32-bytes-or-more",
            "--admin-token",
            "admin-token-value-16+",
        ])
        .expect("parse");
        let shown = format!("{cli:?}");
        for secret in ["secretpw-redis", "jwt-secret-value", "admin-token-value"] {
            assert!(!shown.contains(secret), "Debug shows {secret}: {shown}");
        }
        assert!(shown.contains("redis://:***@127.0.0.1:6379"), "{shown}");
    }

    #[test]
    fn repeated_worker_urls_make_one_pool_whose_limits_add_up() {
        let config = serve_config(&[
            "--worker-url",
            "grpc://127.0.0.1:1?max_inflight_batches=2",
            "--worker-url=openai+http://127.0.0.1:2/v1?max_inflight_batches=3,http://127.0.0.1:3?max_inflight_batches=4",
        ])
        .expect("valid");
        let part = config.batcher.expect("a batcher");
        let WorkerChoice::Remote { workers, pool, .. } = part.worker else {
            panic!("remote workers expected")
        };
        let names: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "grpc://127.0.0.1:1",
                "openai+http://127.0.0.1:2/v1",
                "http://127.0.0.1:3"
            ]
        );
        assert_eq!(part.config.max_inflight_batches, 9);
        assert_eq!(pool.max_batch_size, 64);

        // One worker without a limit: the batcher's default.
        let part = serve_config(&["--worker-url", "grpc://127.0.0.1:1"])
            .expect("valid")
            .batcher
            .expect("a batcher");
        assert_eq!(
            part.config.max_inflight_batches,
            batchgate_batcher::driver::DEFAULT_MAX_INFLIGHT_BATCHES
        );
    }
}
