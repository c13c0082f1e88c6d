//! The distributed deployment's backends, built from their config: one connection, the
//! layout the deployment recorded, and the notification subscription of a gateway.

use std::sync::Arc;
use std::time::Duration;

use batchgate_queue::Backends;
use tokio_util::sync::CancellationToken;

use crate::conn::{check_layout, LayoutError, RedisConfig};
use crate::keys::{default_partitions, Keys};
use crate::{
    safe_gateway_id, Notifier, RedisDeadLetters, RedisIntake, RedisLoadBoard, RedisQueue,
    RedisQueueConfig, RedisRateLimiter, RedisResultStore,
};

/// The backends' settings on Redis.
#[derive(Debug, Clone)]
pub struct RedisBackendConfig {
    /// Where Redis is.
    pub redis: RedisConfig,
    /// Idle time after which another batcher claims an unacknowledged task.
    pub visibility_timeout: Duration,
    /// Deliveries of one task before it is dead-lettered.
    pub max_deliveries: usize,
    /// Queue partitions; `None`: what the deployment recorded, else what suits the topology.
    pub partitions: Option<usize>,
    /// Most queued tasks.
    pub queue_capacity: usize,
    /// Result lifetime after completion.
    pub result_ttl: Duration,
    /// How long identical inputs share a task; `None` turns dedupe off.
    pub dedupe_ttl: Option<Duration>,
    /// The zone this process runs in: its streams are that zone's.
    pub zone: Option<batchgate_protocol::zone::Zone>,
}

/// Why the Redis backends could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    /// Redis did not answer.
    #[error("cannot connect to Redis: {0}")]
    Connect(redis::RedisError),
    /// The partitions asked for do not match the deployment's, or Redis refused this process.
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// A unique name for this process: gateway id on the notification bus, consumer name in the
/// stream group.
pub fn process_name(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let unique = uuid::Uuid::new_v4().simple().to_string();
    // Safe in a record and a channel name whatever the host is called.
    safe_gateway_id(&format!(
        "{role}-{host}-{}-{}",
        std::process::id(),
        &unique[..8]
    ))
}

/// Builds the backends on Redis. `waits` says whether this process serves long polls (a
/// gateway): only then does it subscribe to completion notifications (stopped by
/// [`Backends::shutdown`]).
pub async fn build(config: &RedisBackendConfig, waits: bool) -> Result<Backends, WiringError> {
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let rc = &config.redis;
    let conn = rc.connect().await.map_err(WiringError::Connect)?;
    let partitions = check_layout(
        &mut conn.clone(),
        &Keys::new(&rc.key_prefix, 1).layout(),
        config.partitions,
        default_partitions(rc.cluster),
        rc.op_timeout,
    )
    .await?;
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
            visibility_timeout: config.visibility_timeout,
            max_deliveries: config.max_deliveries,
            read_partitions: Vec::new(),
            result_ttl: config.result_ttl,
            ..RedisQueueConfig::default()
        },
        name.clone(),
    );
    let queue = match &notifier {
        Some((notifier, name)) => queue.with_local_gateway(notifier.clone(), name.clone()),
        None => queue,
    };
    let intake = RedisIntake::new(
        conn.clone(),
        keys.clone(),
        config.queue_capacity,
        config.result_ttl,
        config.dedupe_ttl.unwrap_or_default(),
        rc.op_timeout,
        rc.cluster,
    );
    // Kept only once this process's queue reads (a gateway alone never does).
    let queue = queue.with_local_groups(intake.local_groups());
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
        rate_limiter: Some(Arc::new(RedisRateLimiter::new(
            conn.clone(),
            &rc.key_prefix,
            rc.op_timeout,
        ))),
        dead_letters: Arc::new(RedisDeadLetters::new(
            conn.clone(),
            keys.clone(),
            rc.op_timeout,
        )),
        intake: Arc::new(intake),
        dedupe: config.dedupe_ttl.is_some(),
        memory: None,
        gateway_id: waits.then(|| name.clone()),
        name,
        tasks,
        stop,
    })
}
