//! Flags of the queue and the stores: in-process, or on Redis (`RedisArgs`), and their
//! bounds (`QueueArgs`).

use std::path::PathBuf;
use std::time::Duration;

use batchgate_redis::RedisConfig;
use clap::Args;

use super::error::{at_least, count_at_least, ConfigError};
use crate::backend::{RedisBackend, StoreConfig};

/// Most queue partitions a deployment may have.
const MAX_PARTITIONS: u64 = 1024;
/// Shortest visibility timeout, in milliseconds: a batcher must be able to finish a call
/// before its tasks are claimed by another.
const MIN_VISIBILITY_TIMEOUT_MS: u64 = 100;

/// Where Redis is (for the distributed deployment). `Debug` shows the URLs without their
/// passwords.
#[derive(Clone, Args)]
pub struct RedisArgs {
    /// Redis URL, `redis://host:port`, or `rediss://user:password@host:port` for TLS (and an
    /// ACL user and password), or `unix:///path/redis.sock?user=…&pass=…` for a standalone
    /// Redis on the same host; repeat it (or separate with commas) for the seed nodes of a
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

    /// Prefix of every Redis key, so that several deployments can share one Redis (a further
    /// model's keys are under PREFIX:NAME).
    #[arg(long, env = "BATCHGATE_KEY_PREFIX", default_value = batchgate_redis::conn::DEFAULT_KEY_PREFIX)]
    pub key_prefix: String,

    /// Bound on one Redis command, in milliseconds; past it the gateway answers 503.
    #[arg(long, env = "BATCHGATE_REDIS_TIMEOUT_MS", default_value_t = super::error::ms(batchgate_redis::conn::DEFAULT_OP_TIMEOUT))]
    pub redis_timeout_ms: u64,

    /// How long a task read by a batcher may stay unacknowledged before another batcher
    /// claims it (the dead batcher's tasks are redelivered after this), in milliseconds; at
    /// least 100.
    #[arg(long, env = "BATCHGATE_VISIBILITY_TIMEOUT_MS", default_value_t = super::error::ms(batchgate_redis::queue::DEFAULT_VISIBILITY_TIMEOUT))]
    pub visibility_timeout_ms: u64,

    /// Deliveries of one task before it goes to the dead-letter stream and becomes FAILED.
    #[arg(long, env = "BATCHGATE_MAX_DELIVERIES", default_value_t = batchgate_redis::queue::DEFAULT_MAX_DELIVERIES)]
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

impl RedisArgs {
    /// The Redis backend, or `None` without --redis.
    pub fn backend(&self) -> Result<Option<RedisBackend>, ConfigError> {
        if self.redis.is_empty() {
            if self.redis_cluster {
                return Err(ConfigError::ClusterWithoutUrls);
            }
            return Ok(None);
        }
        let redis = RedisConfig {
            urls: self.redis.clone(),
            cluster: self.redis_cluster,
            key_prefix: self.key_prefix.clone(),
            op_timeout: Duration::from_millis(at_least(
                "redis-timeout-ms",
                self.redis_timeout_ms,
                1,
            )?),
            tls: crate::managed::redis_tls(
                self.redis_ca.as_deref(),
                self.redis_client_cert.as_deref(),
                self.redis_client_key.as_deref(),
            )?,
        };
        redis.validate()?;
        Ok(Some(RedisBackend {
            redis,
            visibility_timeout: Duration::from_millis(at_least(
                "visibility-timeout-ms",
                self.visibility_timeout_ms,
                MIN_VISIBILITY_TIMEOUT_MS,
            )?),
            max_deliveries: count_at_least("max-deliveries", self.max_deliveries, 1)?,
        }))
    }

    /// The Redis backend of a subcommand that cannot run without one.
    pub fn required_backend(&self, command: &'static str) -> Result<RedisBackend, ConfigError> {
        self.backend()?.ok_or(ConfigError::NeedsRedis { command })
    }
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
    #[arg(long, env = "BATCHGATE_QUEUE_CAPACITY", default_value_t = batchgate_queue::DEFAULT_QUEUE_CAPACITY)]
    pub queue_capacity: usize,

    /// Most records (pending and finished) in the in-process result store; past it, the oldest
    /// are evicted (batchgate_result_store_evictions_total), so results may live less than
    /// --result-ttl-secs. Also bounds the in-process dedupe cache.
    #[arg(long, env = "BATCHGATE_MAX_RESULTS", default_value_t = batchgate_store::DEFAULT_MAX_RESULTS)]
    pub max_results: usize,

    /// How long a result is kept after it is stored, in seconds.
    #[arg(long, env = "BATCHGATE_RESULT_TTL_SECS", default_value_t = batchgate_store::DEFAULT_RESULT_TTL.as_secs())]
    pub result_ttl_secs: u64,

    /// How long identical inputs share one task (dedupe by SHA-256 of the input, per
    /// --dedupe-scope), in seconds; 0 turns dedupe off, for models whose outputs differ from
    /// one call to the next (sampling), where every request must run.
    #[arg(long, env = "BATCHGATE_DEDUPE_TTL_SECS", default_value_t = batchgate_store::DEFAULT_DEDUPE_TTL.as_secs())]
    pub dedupe_ttl_secs: u64,

    /// The zone this process runs in (an availability zone, e.g. the node's
    /// topology.kubernetes.io/zone label): a gateway stamps it on the tasks it accepts, which
    /// go to that zone's streams on Redis; a batcher reads its zone's streams and sends each
    /// batch to a worker of its zone (`zone=` on a --worker-url) unless they are all busy or
    /// down (docs/zones.md). Empty: no zone.
    #[arg(long, env = "BATCHGATE_ZONE", default_value = "")]
    pub zone: String,
}

impl QueueArgs {
    /// The --zone, checked.
    pub fn zone(&self) -> Result<Option<batchgate_protocol::zone::Zone>, ConfigError> {
        Ok(batchgate_protocol::zone::Zone::optional(&self.zone)?)
    }

    /// The queue and stores, on Redis when `redis` is given.
    pub fn store(&self, redis: Option<RedisBackend>) -> Result<StoreConfig, ConfigError> {
        if let Some(p) = self.partitions {
            if p == 0 || u64::try_from(p).map_or(true, |p| p > MAX_PARTITIONS) {
                return Err(ConfigError::Between {
                    flag: "partitions",
                    min: 1,
                    max: MAX_PARTITIONS,
                });
            }
        }
        Ok(StoreConfig {
            zone: self.zone()?,
            partitions: self.partitions,
            queue_capacity: count_at_least("queue-capacity", self.queue_capacity, 1)?,
            max_results: count_at_least("max-results", self.max_results, 1)?,
            result_ttl: Duration::from_secs(at_least("result-ttl-secs", self.result_ttl_secs, 1)?),
            dedupe_ttl: (self.dedupe_ttl_secs > 0)
                .then(|| Duration::from_secs(self.dedupe_ttl_secs)),
            redis,
        })
    }
}
