//! The batcher's main loop: wait for a worker slot, gather a batch by policy, dispatch it.

use std::sync::Arc;
use std::time::Duration;

use batchgate_policy::{Batch, Limits, Policy, Rule};
use batchgate_queue::{DeadLetters, Delivery, LoadBoard, Queue};
use batchgate_store::ResultStore;
use batchgate_worker::{budget, RetryBudget, RetryPolicy, Retrying, Worker};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::dispatch::Dispatcher;
use crate::gather::{self, Step};
use crate::load::{LoadMeter, REPORT_EVERY};
use crate::metrics::BatcherMetrics;
use crate::slots::{Aimd, Slot, Slots, INITIAL_ROUND_TRIP};

/// How long an idle batcher blocks on the queue per read. Short enough to notice shutdown
/// promptly through the token anyway; long enough not to spin.
const IDLE_BLOCK: Duration = Duration::from_secs(1);
/// Pause after a failed queue read, so a broken backend is not hammered.
const READ_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Default `max_queue_age`.
pub const DEFAULT_MAX_QUEUE_AGE: Duration = Duration::from_secs(30);
/// Default worker calls under way at once (the 32 GPU workers of the reference deployment).
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
    /// When a batch goes: fixed wait-or-full, or adaptive.
    pub rule: Rule,
    /// How failed worker calls are retried.
    pub retry: RetryPolicy,
    /// Whether overload answers from the worker (`429`/`503`) lower the in-flight limit
    /// (halved, then raised by one per limit's worth of successes, up to
    /// `max_inflight_batches`).
    pub backpressure: bool,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            limits: Limits::default(),
            max_inflight_batches: DEFAULT_MAX_INFLIGHT_BATCHES,
            max_queue_age: DEFAULT_MAX_QUEUE_AGE,
            rule: Rule::Fixed,
            retry: RetryPolicy::default(),
            backpressure: true,
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
    /// Worker calls allowed at once, moved by backpressure.
    slots: Arc<Slots>,
    /// Dispatches under way; waited for when draining.
    in_flight: TaskTracker,
    /// Batch sizes and call times, shared with the dispatches.
    load: Arc<LoadMeter>,
    /// Where the workers' load is reported, and this batcher's name there.
    board: Option<(Arc<dyn LoadBoard>, String)>,
}

impl Batcher {
    /// A batcher over the given queue, store and worker. The worker is called through
    /// `config.retry`, and every attempt's outcome feeds the backpressure.
    pub fn new(
        queue: Arc<dyn Queue>,
        results: Arc<dyn ResultStore>,
        dead_letters: Arc<dyn DeadLetters>,
        worker: Arc<dyn Worker>,
        config: BatcherConfig,
        metrics: BatcherMetrics,
    ) -> Self {
        let slots = Slots::new(Aimd::new(
            config.max_inflight_batches,
            config.backpressure,
            INITIAL_ROUND_TRIP,
        ));
        metrics.concurrency_limit.set(slots.limit() as i64);
        metrics
            .inflight_max
            .set(i64::try_from(config.max_inflight_batches).unwrap_or(i64::MAX));
        let retries = metrics.worker_retries.clone();
        let observed = (slots.clone(), metrics.clone());
        // With backpressure, an overloaded worker's batch goes back to the queue at once
        // (dispatch requeues it) rather than retrying against the lowered limit.
        let retry = RetryPolicy {
            retry_overload: config.retry.retry_overload && !config.backpressure,
            ..config.retry
        };
        let budget = retry.budget_percent.map(|percent| {
            Arc::new(RetryBudget::new(
                percent,
                budget::MIN_EXTRA_CALLS_PER_WINDOW,
            ))
        });
        let worker = Retrying::new(worker, retry, move |_| {
            retries.inc();
        })
        .observe_attempts(move |error, took| {
            let (slots, metrics) = &observed;
            let overloaded = error.is_some_and(|e| e.is_overload());
            if overloaded {
                metrics.worker_overloads.inc();
            }
            let before = metrics.concurrency_limit.get();
            let after = slots.observe(overloaded, took, Instant::now().into_std()) as i64;
            metrics.concurrency_limit.set(after);
            if after < before {
                warn!(
                    limit = after,
                    "worker overloaded; in-flight batch limit lowered"
                );
            }
        });
        let worker = match budget {
            Some(budget) => worker.with_budget(budget),
            None => worker,
        };
        let load = Arc::new(LoadMeter::default());
        Batcher {
            dispatcher: Arc::new(Dispatcher {
                load: load.clone(),
                slots: slots.clone(),
                settling: Arc::new(Semaphore::new(config.max_inflight_batches.max(1))),
                queue: queue.clone(),
                results,
                dead_letters,
                worker: Arc::new(worker),
                metrics,
                max_queue_age: config.max_queue_age,
            }),
            queue,
            slots,
            config,
            in_flight: TaskTracker::new(),
            load,
            board: None,
        }
    }

    /// Reports the workers' load to `board` as `name` every quarter second while running, so
    /// that gateways shed only when the workers are the bottleneck.
    pub fn with_load_board(mut self, board: Arc<dyn LoadBoard>, name: String) -> Self {
        self.board = Some((board, name));
        self
    }

    /// Reports the load until `stop`.
    async fn report_load(
        slots: Arc<Slots>,
        load: Arc<LoadMeter>,
        board: Arc<dyn LoadBoard>,
        name: String,
        stop: CancellationToken,
    ) {
        let mut every = tokio::time::interval(REPORT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let now = tokio::time::Instant::now().into_std();
            let report = load.sample(now, slots.limit());
            match tokio::time::timeout(REPORT_EVERY, board.publish(&name, report)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => debug!(%error, "load report not published"),
                Err(_) => debug!("load report timed out"),
            }
        }
    }

    /// Runs until `shutdown` is cancelled, then drains: every task already in the queue or the
    /// buffer is batched and dispatched, and every dispatch finishes (results stored, tasks
    /// acked) before this returns.
    ///
    /// The caller stops new tasks from entering the queue before cancelling, and bounds the
    /// drain with its grace period.
    pub async fn run(self, shutdown: CancellationToken) -> DrainReport {
        let mut policy = Policy::new(self.config.limits, self.config.rule);
        info!(
            policy = self.config.rule.name(),
            backpressure = self.config.backpressure,
            max_batch_size = self.config.limits.max_batch_size,
            max_wait_ms = self.config.limits.max_wait.as_millis() as u64,
            max_inflight_batches = self.config.max_inflight_batches,
            "batcher started"
        );
        // Reports go on through the drain, and stop when the batcher does: awaited below, or,
        // if this future is dropped first, stopped by the guard.
        let reporting = CancellationToken::new();
        let stop_reporting = reporting.clone().drop_guard();
        let reporter = self.board.as_ref().map(|(board, name)| {
            tokio::spawn(Self::report_load(
                self.slots.clone(),
                self.load.clone(),
                board.clone(),
                name.clone(),
                reporting,
            ))
        });
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
        let report = self.drain(policy).await;
        // Nothing of this batcher outlives it: the reporter stops after its current report.
        drop(stop_reporting);
        if let Some(reporter) = reporter {
            if let Err(error) = reporter.await {
                warn!(%error, "the load reporter failed");
            }
        }
        report
    }

    async fn free_slot(&self, shutdown: &CancellationToken) -> Option<Slot> {
        if self.slots.load().idle_slots == 0 {
            // Every slot busy: tasks read ahead now would only wait unseen by the gateways'
            // estimate of the queue's wait. A quarter batch starts the next one at once; the
            // rest is read when a slot frees (`gather`).
            self.queue
                .read_ahead(self.config.limits.max_batch_size.div_ceil(4));
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            slot = self.slots.acquire() => Some(slot),
        }
    }

    /// Reads until the policy releases a batch; `None` when shutdown interrupts.
    async fn gather(
        &self,
        policy: &mut Policy<Delivery>,
        shutdown: &CancellationToken,
    ) -> Option<Batch<Delivery>> {
        loop {
            let now = Instant::now();
            let load = self.slots.load();
            let (max, until) = match gather::step(policy, now.into_std(), load) {
                Step::Dispatch(batch) => return Some(batch),
                Step::Read { max, until } => (max, until),
            };
            // The batch being gathered, and one for each slot free besides its own.
            let batch = self.config.limits.max_batch_size;
            self.queue
                .read_ahead(batch.saturating_mul(load.idle_slots + 1));
            let block = until.map_or(IDLE_BLOCK, |deadline| {
                Instant::from_std(deadline).saturating_duration_since(now)
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                read = self.queue.read(max, block) => self.absorb(policy, read).await,
            }
        }
    }

    async fn absorb(
        &self,
        policy: &mut Policy<Delivery>,
        read: Result<Vec<Delivery>, batchgate_queue::QueueError>,
    ) {
        match read {
            Ok(deliveries) => gather::absorb_waited(
                policy,
                deliveries.into_iter().map(|d| {
                    let waited = d.waited;
                    (d, waited)
                }),
                Instant::now().into_std(),
            ),
            Err(error) => {
                warn!(%error, "queue read failed; retrying");
                tokio::time::sleep(READ_ERROR_PAUSE).await;
            }
        }
    }

    fn dispatch(&self, batch: Batch<Delivery>, slot: Slot) {
        let dispatcher = self.dispatcher.clone();
        // The slot frees once the worker has answered (`Dispatcher::run`); the task ends
        // once the results are stored and acked, which the drain waits for.
        self.in_flight
            .spawn(async move { dispatcher.run(batch, slot).await });
    }

    /// The drain, in order: (1) a shared queue stops handing us new tasks (others will take
    /// them); (2) reading continues without waiting, so what we hold — and, in-process, every
    /// task accepted before the gateway closed — still goes out, each batch as soon as a slot
    /// is free; (3) what is left in the buffer goes as a last batch; (4) every dispatch under
    /// way finishes — worker call, result write, ack.
    async fn drain(self, mut policy: Policy<Delivery>) -> DrainReport {
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
            let load = self.slots.load();
            let Some(batch) = policy.take_ready(now, load).or_else(|| policy.drain()) else {
                break;
            };
            let slot = self.slots.acquire().await;
            report.drained_batches += 1;
            self.dispatch(batch, slot);
        }
        self.in_flight.close();
        self.in_flight.wait().await;
        info!(drained_batches = report.drained_batches, "batcher drained");
        report
    }
}
