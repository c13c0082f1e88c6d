//! Which backends a process runs on, from its flags: in-process (embedded `serve`) or Redis
//! (everything else). The wiring itself lives beside the backends: [`batchgate_queue::memory::build`]
//! and [`batchgate_redis::build`].

use std::time::Duration;

use batchgate_queue::memory::MemoryConfig;
use batchgate_queue::Backends;
use batchgate_redis::{RedisBackendConfig, RedisConfig};

/// Redis and the settings only the Redis queue has.
#[derive(Debug, Clone)]
pub struct RedisBackend {
    /// Where Redis is.
    pub redis: RedisConfig,
    /// Idle time after which another batcher claims an unacknowledged task.
    pub visibility_timeout: Duration,
    /// Deliveries of one task before it is dead-lettered.
    pub max_deliveries: usize,
}

/// What the queue and stores are, and their limits.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The zone this process runs in: on Redis, its streams are that zone's.
    pub zone: Option<batchgate_protocol::zone::Zone>,
    /// Queue partitions; `None`: the default of the backend (on Redis, what the deployment
    /// recorded, else what suits the topology).
    pub partitions: Option<usize>,
    /// Most queued tasks.
    pub queue_capacity: usize,
    /// Most result records (in-process only; Redis is bounded by its `maxmemory`).
    pub max_results: usize,
    /// Result lifetime after completion.
    pub result_ttl: Duration,
    /// How long identical inputs share a task; `None` turns dedupe off.
    pub dedupe_ttl: Option<Duration>,
    /// Redis, or in-process when `None`.
    pub redis: Option<RedisBackend>,
}

/// Builds the backends. `waits` says whether this process serves long polls (a gateway):
/// only then does it subscribe to completion notifications.
pub async fn build(config: &StoreConfig, waits: bool) -> anyhow::Result<Backends> {
    Ok(match &config.redis {
        None => batchgate_queue::memory::build(&MemoryConfig {
            partitions: config.partitions,
            queue_capacity: config.queue_capacity,
            max_results: config.max_results,
            result_ttl: config.result_ttl,
            dedupe_ttl: config.dedupe_ttl,
        }),
        Some(redis) => {
            let redis = RedisBackendConfig {
                redis: redis.redis.clone(),
                visibility_timeout: redis.visibility_timeout,
                max_deliveries: redis.max_deliveries,
                partitions: config.partitions,
                queue_capacity: config.queue_capacity,
                result_ttl: config.result_ttl,
                dedupe_ttl: config.dedupe_ttl,
                zone: config.zone.clone(),
            };
            batchgate_redis::build(&redis, waits).await?
        }
    })
}
