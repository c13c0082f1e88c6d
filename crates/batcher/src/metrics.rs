//! The batcher's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label for why a batch was flushed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `full`, `timer`, `early` (the adaptive policy's early flush) or `drain`.
    pub reason: &'static str,
}

/// Label for how a task ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `success` or `failed`.
    pub outcome: &'static str,
}

/// Handles to the batcher's metrics (cloning is shallow: clones update the same series).
#[derive(Debug, Clone)]
pub struct BatcherMetrics {
    /// `batchgate_batch_size`: inputs per worker call (bisection calls included).
    pub batch_size: Histogram,
    /// `batchgate_batches_total{reason}`: batches flushed, by trigger.
    pub batches: Family<ReasonLabel, Counter>,
    /// `batchgate_batch_wait_seconds`: time from a batch's first task entering the buffer to
    /// the flush, counting what it waited for company on its way (on Redis, its admission's
    /// gathering: `Delivery::waited`).
    pub batch_wait: Histogram,
    /// `batchgate_task_wait_seconds`: per task, from its acceptance by a gateway to its batch
    /// leaving for the worker — the queue and the batcher's buffer together.
    pub task_wait: Histogram,
    /// `batchgate_task_latency_seconds`: per task, from acceptance to its result stored —
    /// the end-to-end latency a client polling for the result sees, less the HTTP hops.
    pub task_latency: Histogram,
    /// `batchgate_inflight_batches_max`: worker calls this batcher may have under way at most
    /// (`--max-inflight-batches`). `rate(batchgate_worker_call_duration_seconds_sum)` over
    /// this is the fraction of the worker's slots kept busy.
    pub inflight_max: Gauge,
    /// `batchgate_worker_call_duration_seconds`: one worker call, success or not.
    pub worker_latency: Histogram,
    /// `batchgate_worker_errors_total`: worker calls that failed (after their retries).
    pub worker_errors: Counter,
    /// `batchgate_worker_retries_total`: worker calls tried again after a transient failure.
    pub worker_retries: Counter,
    /// `batchgate_collapsed_inputs_total`: inputs not sent because an identical one was in
    /// the same batch.
    pub collapsed_inputs: Counter,
    /// `batchgate_bisections_total`: rejected batches split in two to isolate a bad input.
    pub bisections: Counter,
    /// `batchgate_retry_budget_exhausted_total`: failed worker calls not retried, and rejected
    /// batches not bisected, because the retry budget was used up.
    pub retry_budget_exhausted: Counter,
    /// `batchgate_tasks_completed_total{outcome}`: results written.
    pub tasks_completed: Family<OutcomeLabel, Counter>,
    /// `batchgate_inflight_batches`: worker calls under way.
    pub inflight_batches: Gauge,
    /// `batchgate_inflight_limit`: worker calls allowed at once now (lowered by backpressure).
    pub concurrency_limit: Gauge,
    /// `batchgate_worker_overloads_total`: worker answers of 429/503 (each attempt).
    pub worker_overloads: Counter,
    /// `batchgate_dead_letters_total`: failed tasks written to the dead-letter queue.
    pub dead_letters: Counter,
    /// `batchgate_requeued_tasks_total`: tasks put back in the queue because the worker was
    /// overloaded.
    pub requeued: Counter,
}

/// Buckets of the batch-size histogram: fine near the top, where "are we filling batches" is
/// decided.
const BATCH_SIZE_BUCKETS: [f64; 14] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 40.0, 48.0, 56.0, 60.0, 62.0, 63.0, 64.0,
];

fn seconds_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3,
        0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl BatcherMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = BatcherMetrics {
            batch_size: Histogram::new(BATCH_SIZE_BUCKETS),
            batches: Family::default(),
            batch_wait: Histogram::new(seconds_buckets()),
            task_wait: Histogram::new(seconds_buckets()),
            task_latency: Histogram::new(seconds_buckets()),
            inflight_max: Gauge::default(),
            worker_latency: Histogram::new(seconds_buckets()),
            worker_errors: Counter::default(),
            worker_retries: Counter::default(),
            collapsed_inputs: Counter::default(),
            bisections: Counter::default(),
            retry_budget_exhausted: Counter::default(),
            tasks_completed: Family::default(),
            inflight_batches: Gauge::default(),
            concurrency_limit: Gauge::default(),
            worker_overloads: Counter::default(),
            dead_letters: Counter::default(),
            requeued: Counter::default(),
        };
        registry.register(
            "batchgate_batch_size",
            "Inputs per worker call",
            m.batch_size.clone(),
        );
        registry.register(
            "batchgate_batches",
            "Batches flushed, by reason (full, timer, early, drain)",
            m.batches.clone(),
        );
        registry.register(
            "batchgate_batch_wait_seconds",
            "Time from a batch's first task beginning to wait for company (entering the buffer, or its admission's gathering on Redis) to its flush",
            m.batch_wait.clone(),
        );
        registry.register(
            "batchgate_task_wait_seconds",
            "Time from a task's acceptance to its batch leaving for the worker (queue + buffer)",
            m.task_wait.clone(),
        );
        registry.register(
            "batchgate_task_latency_seconds",
            "Time from a task's acceptance to its result stored (end to end)",
            m.task_latency.clone(),
        );
        registry.register(
            "batchgate_inflight_batches_max",
            "Worker calls this batcher may have under way at most (its worker slots)",
            m.inflight_max.clone(),
        );
        registry.register(
            "batchgate_worker_call_duration_seconds",
            "Duration of one worker call",
            m.worker_latency.clone(),
        );
        registry.register(
            "batchgate_worker_errors",
            "Worker calls that failed",
            m.worker_errors.clone(),
        );
        registry.register(
            "batchgate_worker_retries",
            "Worker calls tried again after a transient failure",
            m.worker_retries.clone(),
        );
        registry.register(
            "batchgate_collapsed_inputs",
            "Inputs not sent because an identical one was in the same batch",
            m.collapsed_inputs.clone(),
        );
        registry.register(
            "batchgate_bisections",
            "Rejected batches split in two to isolate a bad input",
            m.bisections.clone(),
        );
        registry.register(
            "batchgate_retry_budget_exhausted",
            "Failed worker calls not retried, and rejected batches not bisected, because the retry budget was used up",
            m.retry_budget_exhausted.clone(),
        );
        registry.register(
            "batchgate_tasks_completed",
            "Task results written, by outcome",
            m.tasks_completed.clone(),
        );
        registry.register(
            "batchgate_inflight_batches",
            "Worker calls under way",
            m.inflight_batches.clone(),
        );
        registry.register(
            "batchgate_inflight_limit",
            "Worker calls allowed at once now (backpressure lowers it)",
            m.concurrency_limit.clone(),
        );
        registry.register(
            "batchgate_worker_overloads",
            "Worker answers of 429 or 503, each attempt counted",
            m.worker_overloads.clone(),
        );
        registry.register(
            "batchgate_dead_letters",
            "Failed tasks written to the dead-letter queue",
            m.dead_letters.clone(),
        );
        registry.register(
            "batchgate_requeued_tasks",
            "Tasks put back in the queue because the worker answered 429/503",
            m.requeued.clone(),
        );
        m
    }
}
