//! The embedded deployment's backends, built from their config, with the result sweeper.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use batchgate_store::memory::{MemoryDedupe, MemoryResultStore};

use super::{MemoryDeadLetters, MemoryQueue};
use crate::backends::{Backends, MemoryStores};
use crate::dead_letters::DEFAULT_DEAD_LETTER_CAPACITY;
use crate::{MemoryLoadBoard, Steps};

/// How often expired results are swept from memory.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Default partitions of the in-process queue: enough that handlers rarely meet on one lock.
pub const DEFAULT_PARTITIONS: usize = 16;
/// Most dedupe entries kept in memory (~140–250 B each, BENCHMARKS.md), whatever the TTL; never
/// more than the result store's bound, since an entry is of use only while its task's result
/// is held. Past it the oldest entries go.
pub const MEMORY_DEDUPE_CAPACITY: usize = 1_000_000;

/// The in-process queue's and stores' limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Queue partitions; `None`: [`DEFAULT_PARTITIONS`].
    pub partitions: Option<usize>,
    /// Most queued tasks.
    pub queue_capacity: usize,
    /// Most result records.
    pub max_results: usize,
    /// Result lifetime after completion.
    pub result_ttl: Duration,
    /// How long identical inputs share a task; `None` turns dedupe off.
    pub dedupe_ttl: Option<Duration>,
}

/// Builds the in-process backends and starts the result sweeper (stopped by
/// [`Backends::shutdown`]).
pub fn build(config: &MemoryConfig) -> Backends {
    let stop = CancellationToken::new();
    let results = Arc::new(MemoryResultStore::new(
        config.max_results,
        config.result_ttl,
    ));
    let tasks = vec![tokio::spawn(sweep_results(results.clone(), stop.clone()))];
    let queue = Arc::new(MemoryQueue::new(
        config.partitions.unwrap_or(DEFAULT_PARTITIONS),
        config.queue_capacity,
    ));
    let dedupe_capacity = MEMORY_DEDUPE_CAPACITY.min(config.max_results);
    let dedupe = config
        .dedupe_ttl
        .map(|ttl| Arc::new(MemoryDedupe::new(ttl, dedupe_capacity)));
    Backends {
        intake: Arc::new(Steps {
            queue: queue.clone(),
            results: results.clone(),
            dedupe: dedupe.clone(),
        }),
        memory: Some(MemoryStores {
            results: results.clone(),
            dedupe,
        }),
        dedupe: config.dedupe_ttl.is_some(),
        queue,
        results,
        dead_letters: Arc::new(MemoryDeadLetters::new(DEFAULT_DEAD_LETTER_CAPACITY)),
        rate_limiter: None,
        load_board: Arc::new(MemoryLoadBoard::default()),
        name: "batcher".into(),
        gateway_id: None,
        tasks,
        stop,
    }
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
