//! The batcher's main loop: wait for a worker slot, gather a batch by policy, dispatch it.

use std::sync::Arc;
use std::time::Duration;

use batchgate_policy::{Batch, Limits, WaitOrFull};
use batchgate_queue::{Delivery, Queue, ResultStore};
use batchgate_worker::Worker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::dispatch::Dispatcher;
use crate::metrics::BatcherMetrics;

/// How long an idle batcher blocks on the queue per read. Short enough to notice shutdown
/// promptly through the token anyway; long enough not to spin.
const IDLE_BLOCK: Duration = Duration::from_secs(1);
/// Pause after a failed queue read, so a broken backend is not hammered.
const READ_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Default `max_queue_age`.
pub const DEFAULT_MAX_QUEUE_AGE: Duration = Duration::from_secs(30);
/// Default worker calls under way at once (the article's 32 GPU workers).
pub const DEFAULT_MAX_INFLIGHT_BATCHES: usize = 32;

/// What a batcher needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherConfig {
    /// When a batch is full, and how long its first task may wait.
    pub limits: Limits,
    /// Worker calls under way at once; a batch is formed only when one is free.
    pub max_inflight_batches: usize,
    /// A task older than this when its batch leaves is failed as `expired` instead of run:
    /// its client has most likely given up.
    pub max_queue_age: Duration,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            limits: Limits::default(),
            max_inflight_batches: DEFAULT_MAX_INFLIGHT_BATCHES,
            max_queue_age: DEFAULT_MAX_QUEUE_AGE,
        }
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Batches flushed during the drain (buffered and still-queued tasks).
    pub drained_batches: u64,
}

/// Reads tasks, batches them, and dispatches each batch to the worker.
pub struct Batcher {
    /// Where tasks come from.
    queue: Arc<dyn Queue>,
    /// Limits and concurrency.
    config: BatcherConfig,
    /// Everything a batch's trip needs, shared with the spawned dispatch tasks.
    dispatcher: Arc<Dispatcher>,
    /// One permit per worker call allowed at once.
    slots: Arc<Semaphore>,
    /// Dispatches under way; waited for when draining.
    in_flight: TaskTracker,
}

impl Batcher {
    /// A batcher over the given queue, store and worker.
    pub fn new(
        queue: Arc<dyn Queue>,
        results: Arc<dyn ResultStore>,
        worker: Arc<dyn Worker>,
        config: BatcherConfig,
        metrics: BatcherMetrics,
    ) -> Self {
        Batcher {
            dispatcher: Arc::new(Dispatcher {
                queue: queue.clone(),
                results,
                worker,
                metrics,
                max_queue_age: config.max_queue_age,
            }),
            queue,
            slots: Arc::new(Semaphore::new(config.max_inflight_batches.max(1))),
            config,
            in_flight: TaskTracker::new(),
        }
    }

    /// Runs until `shutdown` is cancelled, then drains: every task already in the queue or the
    /// buffer is batched and dispatched, and every dispatch finishes (results stored, tasks
    /// acked) before this returns.
    ///
    /// The caller stops new tasks from entering the queue before cancelling, and bounds the
    /// drain with its grace period.
    pub async fn run(self, shutdown: CancellationToken) -> DrainReport {
        let mut policy = WaitOrFull::new(self.config.limits);
        info!(
            max_batch_size = self.config.limits.max_batch_size,
            max_wait_ms = self.config.limits.max_wait.as_millis() as u64,
            max_inflight_batches = self.config.max_inflight_batches,
            "batcher started"
        );
        loop {
            // A batch is formed only once the worker can take it.
            let Some(slot) = self.free_slot(&shutdown).await else {
                break;
            };
            let Some(batch) = self.gather(&mut policy, &shutdown).await else {
                break;
            };
            self.dispatch(batch, slot);
        }
        self.drain(policy).await
    }

    async fn free_slot(&self, shutdown: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            permit = self.slots.clone().acquire_owned() => {
                Some(permit.expect("the slot semaphore is never closed. This is a bug."))
            }
        }
    }

    /// Reads until the policy releases a batch; `None` when shutdown interrupts.
    async fn gather(
        &self,
        policy: &mut WaitOrFull<Delivery>,
        shutdown: &CancellationToken,
    ) -> Option<Batch<Delivery>> {
        loop {
            let now = Instant::now();
            if let Some(batch) = policy.take_ready(now.into_std()) {
                return Some(batch);
            }
            let block = policy.next_deadline().map_or(IDLE_BLOCK, |deadline| {
                Instant::from_std(deadline).saturating_duration_since(now)
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                read = self.queue.read(policy.room(), block) => self.absorb(policy, read).await,
            }
        }
    }

    async fn absorb(
        &self,
        policy: &mut WaitOrFull<Delivery>,
        read: Result<Vec<Delivery>, batchgate_queue::QueueError>,
    ) {
        match read {
            Ok(deliveries) => {
                let now = Instant::now().into_std();
                for delivery in deliveries {
                    policy.push(delivery, now);
                }
            }
            Err(error) => {
                warn!(%error, "queue read failed; retrying");
                tokio::time::sleep(READ_ERROR_PAUSE).await;
            }
        }
    }

    fn dispatch(&self, batch: Batch<Delivery>, slot: OwnedSemaphorePermit) {
        let dispatcher = self.dispatcher.clone();
        self.in_flight.spawn(async move {
            dispatcher.run(batch).await;
            // The slot frees only once results are stored and acked.
            drop(slot);
        });
    }

    /// The drain, in order: (1) a shared queue stops handing us new tasks (others will take
    /// them); (2) reading continues without waiting, so what we hold — and, in-process, every
    /// task accepted before the gateway closed — still goes out, each batch as soon as a slot
    /// is free; (3) what is left in the buffer goes as a last batch; (4) every dispatch under
    /// way finishes — worker call, result write, ack.
    async fn drain(self, mut policy: WaitOrFull<Delivery>) -> DrainReport {
        let mut report = DrainReport::default();
        info!(buffered = policy.len(), "batcher draining");
        self.queue.close_reads().await;
        loop {
            if policy.room() > 0 {
                let read = self.queue.read(policy.room(), Duration::ZERO).await;
                self.absorb(&mut policy, read).await;
            }
            // A full batch if the queue still had one, else whatever is left.
            let now = Instant::now().into_std();
            let Some(batch) = policy.take_ready(now).or_else(|| policy.drain()) else {
                break;
            };
            let slot = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the slot semaphore is never closed. This is a bug.");
            report.drained_batches += 1;
            self.dispatch(batch, slot);
        }
        self.in_flight.close();
        self.in_flight.wait().await;
        info!(drained_batches = report.drained_batches, "batcher drained");
        report
    }
}
