//! Builds the queue, result store and dedupe cache a process runs on: in-process (embedded
//! `serve`) or Redis (everything else), with the background tasks each needs.

use std::sync::Arc;
use std::time::Duration;

use batchgate_queue::dead_letters::DEFAULT_DEAD_LETTER_CAPACITY;
use batchgate_queue::memory::{MemoryDeadLetters, MemoryDedupe, MemoryQueue, MemoryResultStore};
use batchgate_queue::{
    DeadLetters, Dedupe, Intake, LoadBoard, MemoryLoadBoard, MemoryRateLimiter, Queue, RateLimiter,
    ResultStore, Steps,
};
use batchgate_redis::{
    Keys, Notifier, RedisConfig, RedisDeadLetters, RedisIntake, RedisLoadBoard, RedisQueue,
    RedisQueueConfig, RedisRateLimiter, RedisResultStore,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often expired results are swept from memory.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Partitions of the in-process queue: enough that handlers rarely meet on one lock.
const MEMORY_PARTITIONS: usize = 16;
/// Most dedupe entries kept in memory (~140–250 B each, BENCHMARKS.md), whatever the TTL; never
/// more than the result store's bound, since an entry is of use only while its task's result
/// is held. Past it the oldest entries go.
const MEMORY_DEDUPE_CAPACITY: usize = 1_000_000;

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

/// The backends of one process and what keeps them running.
pub struct Backends {
    /// The task queue.
    pub queue: Arc<dyn Queue>,
    /// The result store.
    pub results: Arc<dyn ResultStore>,
    /// Admits tasks (record, dedupe, enqueue).
    pub intake: Arc<dyn Intake>,
    /// Tasks that failed for good, to inspect and replay.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Per-user request counts (in Redis, shared by every gateway).
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// The batchers' reports of their workers' load, which the gateways shed by.
    pub load_board: Arc<dyn LoadBoard>,
    /// This process's name on the load board.
    pub name: String,
    /// Whether dedupe is on.
    pub dedupe: bool,
    /// This process's name on the notification bus (Redis only).
    pub gateway_id: Option<String>,
    /// The in-process stores' eviction counts, for `/metrics` (in-process only).
    pub evictions: Option<crate::store_metrics::EvictionCollector>,
    /// Background tasks (sweeper, subscription), stopped by `stop`.
    pub tasks: Vec<JoinHandle<()>>,
    /// Stops the background tasks.
    pub stop: CancellationToken,
}

impl Backends {
    /// Stops the background tasks and waits for them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A unique name for this process: gateway id on the notification bus, consumer name in the
/// stream group.
pub fn process_name(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let unique = uuid::Uuid::new_v4().simple().to_string();
    // Safe in a record and a channel name whatever the host is called.
    batchgate_redis::safe_gateway_id(&format!(
        "{role}-{host}-{}-{}",
        std::process::id(),
        &unique[..8]
    ))
}

/// Builds the backends. `waits` says whether this process serves long polls (a gateway):
/// only then does it subscribe to completion notifications.
pub async fn build(config: &StoreConfig, waits: bool) -> anyhow::Result<Backends> {
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let Some(redis) = &config.redis else {
        let results = Arc::new(MemoryResultStore::new(
            config.max_results,
            config.result_ttl,
        ));
        tasks.push(tokio::spawn(sweep_results(results.clone(), stop.clone())));
        let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(
            config.partitions.unwrap_or(MEMORY_PARTITIONS),
            config.queue_capacity,
        ));
        let dedupe_capacity = MEMORY_DEDUPE_CAPACITY.min(config.max_results);
        let memory_dedupe = config
            .dedupe_ttl
            .map(|ttl| Arc::new(MemoryDedupe::new(ttl, dedupe_capacity)));
        let evictions = crate::store_metrics::EvictionCollector {
            results: results.clone(),
            dedupe: memory_dedupe.clone(),
        };
        return Ok(Backends {
            intake: Arc::new(Steps {
                queue: queue.clone(),
                results: results.clone(),
                dedupe: memory_dedupe.map(|d| d as Arc<dyn Dedupe>),
            }),
            evictions: Some(evictions),
            dedupe: config.dedupe_ttl.is_some(),
            queue,
            results,
            dead_letters: Arc::new(MemoryDeadLetters::new(DEFAULT_DEAD_LETTER_CAPACITY)),
            rate_limiter: Arc::new(MemoryRateLimiter::default()),
            load_board: Arc::new(MemoryLoadBoard::default()),
            name: "batcher".into(),
            gateway_id: None,
            tasks,
            stop,
        });
    };
    let rc = &redis.redis;
    let conn = rc
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))?;
    let partitions = batchgate_redis::conn::check_layout(
        &mut conn.clone(),
        &Keys::new(&rc.key_prefix, 1).layout(),
        config.partitions,
        batchgate_redis::keys::default_partitions(rc.cluster),
        rc.op_timeout,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    let keys = Keys::new(&rc.key_prefix, partitions).in_zone(config.zone.clone());
    let name = process_name(if waits { "gateway" } else { "batcher" });
    let notifier = if waits {
        let notifier = Arc::new(Notifier::default());
        tasks.push(tokio::spawn(notifier.clone().run(
            rc.clone(),
            keys.clone(),
            name.clone(),
            stop.clone(),
        )));
        Some((notifier, name.clone()))
    } else {
        None
    };
    let queue = RedisQueue::new(
        conn.clone(),
        rc.clone(),
        keys.clone(),
        RedisQueueConfig {
            capacity: config.queue_capacity,
            visibility_timeout: redis.visibility_timeout,
            max_deliveries: redis.max_deliveries,
            read_partitions: Vec::new(),
            result_ttl: config.result_ttl,
            ..RedisQueueConfig::default()
        },
        name.clone(),
    );
    Ok(Backends {
        queue: Arc::new(queue),
        results: Arc::new(RedisResultStore::new(
            conn.clone(),
            keys.clone(),
            config.result_ttl,
            rc.op_timeout,
            notifier,
            rc.cluster,
        )),
        load_board: Arc::new(RedisLoadBoard::new(conn.clone(), &keys, rc.op_timeout)),
        rate_limiter: Arc::new(RedisRateLimiter::new(
            conn.clone(),
            &rc.key_prefix,
            rc.op_timeout,
        )),
        dead_letters: Arc::new(RedisDeadLetters::new(
            conn.clone(),
            keys.clone(),
            rc.op_timeout,
        )),
        intake: Arc::new(RedisIntake::new(
            conn,
            keys,
            config.queue_capacity,
            config.result_ttl,
            config.dedupe_ttl.unwrap_or_default(),
            rc.op_timeout,
            rc.cluster,
        )),
        dedupe: config.dedupe_ttl.is_some(),
        evictions: None,
        gateway_id: waits.then(|| name.clone()),
        name,
        tasks,
        stop,
    })
}

async fn sweep_results(results: Arc<MemoryResultStore>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {
                results.sweep(tokio::time::Instant::now());
            }
        }
    }
}
