//! One batch's trip: call the worker, store every task's result, then ack.

use std::sync::Arc;
use std::time::SystemTime;

use batchgate_policy::Batch;
use batchgate_protocol::task::unix_ms;
use batchgate_queue::{Completion, Delivery, Outcome, Queue, Receipt, ResultStore};
use batchgate_worker::{Worker, WorkerError};
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::metrics::{BatcherMetrics, OutcomeLabel, ReasonLabel};

/// Everything a dispatch needs; shared by all dispatch tasks.
pub(crate) struct Dispatcher {
    /// To ack tasks once stored.
    pub(crate) queue: Arc<dyn Queue>,
    /// Where results go.
    pub(crate) results: Arc<dyn ResultStore>,
    /// The fixed batch API.
    pub(crate) worker: Arc<dyn Worker>,
    /// Batch and worker metrics.
    pub(crate) metrics: BatcherMetrics,
}

impl Dispatcher {
    pub(crate) async fn run(&self, batch: Batch<Delivery>) {
        let size = batch.items.len();
        let reason = batch.reason.as_str();
        let waited = Instant::now()
            .into_std()
            .saturating_duration_since(batch.opened_at);
        self.metrics.batch_size.observe(size as f64);
        self.metrics
            .batches
            .get_or_create(&ReasonLabel { reason })
            .inc();
        self.metrics.batch_wait.observe(waited.as_secs_f64());

        // Inputs move into the call; ids and receipts stay for the write and the ack.
        let mut task_ids = Vec::with_capacity(size);
        let mut receipts = Vec::with_capacity(size);
        let mut inputs = Vec::with_capacity(size);
        for delivery in batch.items {
            task_ids.push(delivery.task.task_id);
            inputs.push(delivery.task.input);
            receipts.push(delivery.receipt);
        }

        self.metrics.inflight_batches.inc();
        let started = Instant::now();
        let result = self.worker.infer(&inputs).await.and_then(|outputs| {
            // Every adapter checks this; checking again here keeps a faulty one from leaving
            // tasks without a result.
            if outputs.len() == size {
                Ok(outputs)
            } else {
                Err(WorkerError::InvalidResponse(format!(
                    "{} outputs for {size} inputs",
                    outputs.len()
                )))
            }
        });
        let took = started.elapsed();
        self.metrics.inflight_batches.dec();
        self.metrics.worker_latency.observe(took.as_secs_f64());

        let completed_at = unix_ms(SystemTime::now());
        let (completions, outcome): (Vec<_>, _) = match result {
            Ok(outputs) => (
                task_ids
                    .into_iter()
                    .zip(outputs)
                    .map(|(task_id, output)| Completion {
                        task_id,
                        outcome: Outcome::Success(output),
                        completed_at,
                    })
                    .collect(),
                "success",
            ),
            Err(error) => {
                warn!(%error, size, "worker call failed; failing the batch");
                self.metrics.worker_errors.inc();
                let reason = format!("worker error: {}", error.public_reason());
                (
                    task_ids
                        .into_iter()
                        .map(|task_id| Completion {
                            task_id,
                            outcome: Outcome::Failed(reason.clone()),
                            completed_at,
                        })
                        .collect(),
                    "failed",
                )
            }
        };
        debug!(
            size,
            reason,
            waited_ms = waited.as_millis() as u64,
            worker_ms = took.as_millis() as u64,
            outcome,
            "batch done"
        );
        self.store_then_ack(completions, &receipts, outcome).await;
    }

    /// A task is acknowledged only after its result is stored: if the write fails, the tasks
    /// stay unacknowledged and a queue that survives us delivers them again.
    async fn store_then_ack(
        &self,
        completions: Vec<Completion>,
        receipts: &[Receipt],
        outcome: &'static str,
    ) {
        let n = completions.len() as u64;
        if let Err(error) = self.results.complete(completions).await {
            error!(%error, tasks = n, "storing results failed; tasks left unacknowledged");
            return;
        }
        self.metrics
            .tasks_completed
            .get_or_create(&OutcomeLabel { outcome })
            .inc_by(n);
        if let Err(error) = self.queue.ack(receipts).await {
            warn!(%error, tasks = n, "ack failed; tasks may be delivered again");
        }
    }
}
