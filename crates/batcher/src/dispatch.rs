//! One batch's trip: drop tasks too old to be worth running, call the worker with the rest,
//! store every task's result, then ack.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    /// A task older than this when its batch leaves is failed as `expired`, not run.
    pub(crate) max_queue_age: Duration,
}

/// One input's result: its output, or why it has none.
type ItemResult = Result<String, WorkerError>;

/// Who a task's result goes to.
struct Addressee {
    task_id: String,
    reply_to: Option<String>,
}

impl Dispatcher {
    pub(crate) async fn run(&self, batch: Batch<Delivery>) {
        let size = batch.items.len();
        let reason = batch.reason.as_str();
        let waited = Instant::now()
            .into_std()
            .saturating_duration_since(batch.opened_at);
        self.metrics
            .batches
            .get_or_create(&ReasonLabel { reason })
            .inc();
        self.metrics.batch_wait.observe(waited.as_secs_f64());

        // Inputs move into the call; ids and receipts stay for the write and the ack.
        let now = SystemTime::now();
        let mut receipts = Vec::with_capacity(size);
        let mut addressees = Vec::with_capacity(size);
        let mut inputs = Vec::with_capacity(size);
        let mut completions = Vec::with_capacity(size);
        for delivery in batch.items {
            receipts.push(delivery.receipt);
            let task = delivery.task;
            let age = now.duration_since(task.enqueued_at).unwrap_or_default();
            if age > self.max_queue_age {
                completions.push(Completion {
                    task_id: task.task_id,
                    outcome: Outcome::Failed(format!(
                        "expired: waited {} ms in the queue (limit {} ms)",
                        age.as_millis(),
                        self.max_queue_age.as_millis()
                    )),
                    completed_at: unix_ms(now),
                    reply_to: task.reply_to,
                });
                continue;
            }
            addressees.push(Addressee {
                task_id: task.task_id,
                reply_to: task.reply_to,
            });
            inputs.push(task.input);
        }
        let expired = completions.len();
        if !inputs.is_empty() {
            completions.extend(self.call_worker(inputs, addressees).await);
        }
        debug!(
            size,
            reason,
            expired,
            waited_ms = waited.as_millis() as u64,
            "batch done"
        );
        self.store_then_ack(completions, &receipts).await;
    }

    /// The batch's worker calls; every task gets a completion either way. Identical inputs
    /// in the batch go to the worker once and share the output (request collapsing, for the
    /// "hot key" case that the dedupe cache does not catch, e.g. with dedupe off).
    async fn call_worker(&self, inputs: Vec<String>, to: Vec<Addressee>) -> Vec<Completion> {
        let (inputs, slot_of) = collapse(inputs);
        let collapsed = to.len() - inputs.len();
        if collapsed > 0 {
            self.metrics.collapsed_inputs.inc_by(collapsed as u64);
        }
        let results = self.infer_isolating(&inputs).await;
        let completed_at = unix_ms(SystemTime::now());
        to.into_iter()
            .zip(slot_of)
            .map(|(a, slot)| Completion {
                task_id: a.task_id,
                outcome: match &results[slot] {
                    Ok(output) => Outcome::Success(output.clone()),
                    Err(error) => {
                        Outcome::Failed(format!("worker error: {}", error.public_reason()))
                    }
                },
                completed_at,
                reply_to: a.reply_to,
            })
            .collect()
    }

    /// Calls the worker with `inputs`; if the worker rejects the batch as such (it answered,
    /// with an error), splits it in halves and tries each, down to single inputs, so that one
    /// poisoned input fails alone and the others still succeed: at most `2n − 1` calls, all
    /// within the batch's one worker slot. A worker that does not answer (timeout, refused
    /// connection) is down, not poisoned: splitting would only multiply the calls, so the
    /// batch fails whole.
    fn infer_isolating<'a>(
        &'a self,
        inputs: &'a [String],
    ) -> Pin<Box<dyn Future<Output = Vec<ItemResult>> + Send + 'a>> {
        Box::pin(async move {
            match self.call_once(inputs).await {
                Ok(outputs) => outputs.into_iter().map(Ok).collect(),
                Err(error) if inputs.len() > 1 && names_the_batch(&error) => {
                    debug!(%error, size = inputs.len(), "batch rejected; bisecting to isolate the bad input");
                    self.metrics.bisections.inc();
                    let (left, right) = inputs.split_at(inputs.len() / 2);
                    let mut results = self.infer_isolating(left).await;
                    results.extend(self.infer_isolating(right).await);
                    results
                }
                Err(error) => {
                    warn!(%error, size = inputs.len(), "worker call failed; failing its tasks");
                    vec![Err(error); inputs.len()]
                }
            }
        })
    }

    /// One worker call (its retries included), measured.
    async fn call_once(&self, inputs: &[String]) -> Result<Vec<String>, WorkerError> {
        let n = inputs.len();
        self.metrics.batch_size.observe(n as f64);
        self.metrics.inflight_batches.inc();
        let started = Instant::now();
        let result = self.worker.infer(inputs).await.and_then(|outputs| {
            // Every adapter checks this; checking again here keeps a faulty one from leaving
            // tasks without a result.
            if outputs.len() == n {
                Ok(outputs)
            } else {
                Err(WorkerError::InvalidResponse(format!(
                    "{} outputs for {n} inputs",
                    outputs.len()
                )))
            }
        });
        self.metrics.inflight_batches.dec();
        self.metrics
            .worker_latency
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.worker_errors.inc();
        }
        result
    }

    /// A task is acknowledged only after its result is stored: if the write fails, the tasks
    /// stay unacknowledged and a queue that survives us delivers them again.
    async fn store_then_ack(&self, completions: Vec<Completion>, receipts: &[Receipt]) {
        let n = completions.len();
        let mut counts = [0u64; 3];
        for c in &completions {
            counts[match &c.outcome {
                Outcome::Success(_) => 0,
                Outcome::Failed(e) if e.starts_with("expired") => 2,
                Outcome::Failed(_) => 1,
            }] += 1;
        }
        if let Err(error) = self.results.complete(completions).await {
            error!(%error, tasks = n, "storing results failed; tasks given back for redelivery");
            self.queue.abandon(receipts).await;
            return;
        }
        for (outcome, count) in ["success", "failed", "expired"].into_iter().zip(counts) {
            if count > 0 {
                self.metrics
                    .tasks_completed
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc_by(count);
            }
        }
        if let Err(error) = self.queue.ack(receipts).await {
            warn!(%error, tasks = n, "ack failed; tasks may be delivered again");
        }
    }
}

/// Whether the worker answered with a judgement on this batch (worth splitting), rather than
/// not answering at all.
fn names_the_batch(error: &WorkerError) -> bool {
    matches!(
        error,
        WorkerError::Status { .. } | WorkerError::InvalidResponse(_)
    )
}

/// The distinct inputs, in first-seen order, and for each original input the index of its
/// distinct copy. Inputs are compared whole; the hash only narrows the candidates.
fn collapse(inputs: Vec<String>) -> (Vec<String>, Vec<usize>) {
    use std::collections::hash_map::RandomState;
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    let hasher = RandomState::new();
    let mut unique: Vec<String> = Vec::with_capacity(inputs.len());
    let mut slot_of = Vec::with_capacity(inputs.len());
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::with_capacity(inputs.len());
    for input in inputs {
        let candidates = by_hash.entry(hasher.hash_one(&input)).or_default();
        match candidates.iter().find(|&&i| unique[i] == input) {
            Some(&i) => slot_of.push(i),
            None => {
                candidates.push(unique.len());
                slot_of.push(unique.len());
                unique.push(input);
            }
        }
    }
    (unique, slot_of)
}

#[cfg(test)]
mod tests {
    use super::collapse;

    #[test]
    fn identical_inputs_collapse_to_one_in_first_seen_order() {
        let inputs = ["a", "b", "a", "c", "b", "a"].map(String::from).to_vec();
        let (unique, slot_of) = collapse(inputs);
        assert_eq!(unique, ["a", "b", "c"]);
        assert_eq!(slot_of, [0, 1, 0, 2, 1, 0]);
        let (unique, slot_of) = collapse(vec!["x".into()]);
        assert_eq!((unique.len(), slot_of), (1, vec![0]));
    }
}
