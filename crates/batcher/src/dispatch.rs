//! One batch's trip: drop tasks too old to be worth running, call the worker with the rest,
//! store every task's result, then ack.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use batchgate_policy::Batch;
use batchgate_protocol::task::{unix_ms, Task};
use batchgate_protocol::Output;
use batchgate_queue::{DeadLetters, Delivery, Failure, Queue, Receipt};
use batchgate_store::{Completion, Outcome, ResultStore};
use batchgate_worker::{CallKind, Retrying, Worker, WorkerError};
use opentelemetry::trace::SpanContext;
use opentelemetry::KeyValue;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, error, info_span, warn, Instrument};

use crate::load::LoadMeter;
use crate::metrics::{BatcherMetrics, OutcomeLabel, ReasonLabel};
use crate::slots::{Slot, Slots};
use collapse::collapse;

/// When each task of a batch was accepted, by its id: read back for the latency of each
/// result. Keyed with foldhash (seeded per batch), not SipHash: every id is a UUID the gateway
/// made, hashed twice a task.
type AcceptedAt = HashMap<String, SystemTime, foldhash::fast::RandomState>;

/// Everything a dispatch needs; shared by all dispatch tasks.
pub(crate) struct Dispatcher {
    /// To ack tasks once stored.
    pub(crate) queue: Arc<dyn Queue>,
    /// Where results go.
    pub(crate) results: Arc<dyn ResultStore>,
    /// The fixed batch API, with retries.
    pub(crate) worker: Arc<Retrying>,
    /// Where tasks the worker failed go, to be inspected and replayed.
    pub(crate) dead_letters: Arc<dyn DeadLetters>,
    /// Batch and worker metrics.
    pub(crate) metrics: BatcherMetrics,
    /// A task older than this when its batch leaves is failed as `expired`, not run.
    pub(crate) max_queue_age: Duration,
    /// Batch sizes, call times and calls under way, for the load report.
    pub(crate) load: Arc<LoadMeter>,
    /// The slots' limit, which the load report measures calls against.
    pub(crate) slots: Arc<Slots>,
    /// Batches storing their results and acknowledging, at most as many as there may be
    /// slots: a batch gives its slot back once it holds one of these (see
    /// [`Dispatcher::run`]).
    pub(crate) settling: Arc<Semaphore>,
}

/// How long a slot turned away by an overloaded worker waits before its tasks go back to the
/// queue and the slot frees (between half and all of it).
const OVERLOAD_PAUSE: Duration = Duration::from_millis(100);

/// One input's result (its output, or why it has none), and the worker calls it took part in.
type ItemResult = (Result<Output, WorkerError>, u32);

/// Who a task's result goes to, and what it takes to dead-letter or requeue it.
struct Addressee {
    task_id: String,
    reply_to: Option<String>,
    enqueued_at: SystemTime,
    /// When it first entered the queue, by the queue's clock.
    queued_at: SystemTime,
    receipt: Receipt,
    deadline: Option<SystemTime>,
    owner: Option<String>,
    trace_parent: Option<String>,
    zone: Option<batchgate_protocol::zone::Zone>,
}

/// What became of a batch's tasks at the worker.
#[derive(Default)]
struct Outcomes {
    /// Results to store.
    completions: Vec<Completion>,
    /// Failed tasks, for the dead-letter queue.
    failures: Vec<Failure>,
    /// Tasks the worker was too busy for, to run again later.
    requeue: Vec<(Delivery, String)>,
}

impl Dispatcher {
    /// Runs a batch in `slot`: the worker call, then the results' write and the
    /// acknowledgement. The slot is the worker's: it frees as soon as the worker has answered
    /// and the batch may settle, so that a result store that takes its time (Redis under
    /// load: a round trip, behind others) does not keep the worker idle. At most as many
    /// batches settle at once as there may be slots; past that, a batch keeps its slot until
    /// it may settle, and a store that falls behind still holds new batches back.
    pub(crate) async fn run(&self, batch: Batch<Delivery>, slot: Slot) {
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
        // One span per batch, in a trace of its own: it serves many requests, so it links to
        // each of them rather than belonging to one.
        let span = info_span!(
            "batch",
            otel.kind = "consumer",
            size,
            reason,
            waited_ms = waited.as_millis() as u64
        );
        let now = SystemTime::now();
        if batchgate_telemetry::enabled() {
            let requests = trace_the_wait(&batch.items, now);
            batchgate_telemetry::context::link_all(&span, requests);
        }
        self.run_batch(batch.items, now, slot)
            .instrument(span)
            .await;
    }

    async fn run_batch(&self, items: Vec<Delivery>, now: SystemTime, slot: Slot) {
        let size = items.len();
        // Inputs move into the call; ids and receipts stay for the write and the ack.
        let mut receipts = Vec::with_capacity(size);
        let mut addressees = Vec::with_capacity(size);
        let mut inputs = Vec::with_capacity(size);
        let mut completions = Vec::with_capacity(size);
        let mut accepted_at = AcceptedAt::with_capacity_and_hasher(size, Default::default());
        for delivery in items {
            receipts.push(delivery.receipt.clone());
            let task = delivery.task;
            let waited = now.duration_since(task.enqueued_at).unwrap_or_default();
            self.metrics.task_wait.observe(waited.as_secs_f64());
            accepted_at.insert(task.task_id.clone(), task.enqueued_at);
            if let Some(why) = self.too_late(&task, delivery.queued_at, now) {
                completions.push(Completion {
                    task_id: task.task_id,
                    outcome: Outcome::Failed(why),
                    completed_at: unix_ms(now),
                    reply_to: task.reply_to,
                });
                continue;
            }
            addressees.push(Addressee {
                task_id: task.task_id,
                reply_to: task.reply_to,
                enqueued_at: task.enqueued_at,
                queued_at: delivery.queued_at,
                receipt: delivery.receipt,
                deadline: task.deadline,
                owner: task.owner,
                trace_parent: task.trace_parent,
                zone: task.zone,
            });
            inputs.push(task.input);
        }
        let expired = completions.len();
        let mut failures = Vec::new();
        let worker_started = Instant::now();
        if !inputs.is_empty() {
            let sent = inputs.len();
            let slots = self.slots.limit();
            // Tokio's clock, which tests may pause, as the sampler's (`driver.rs`).
            self.load.call_started(Instant::now().into_std(), slots);
            let outcomes = self.call_worker(inputs, addressees).await;
            self.load
                .call_ended(Instant::now().into_std(), self.slots.limit().max(slots));
            self.load.batch_done(sent, worker_started.elapsed());
            completions.extend(outcomes.completions);
            failures = outcomes.failures;
            self.requeue(outcomes.requeue, &mut completions, &mut failures)
                .await;
        }
        let worker_ms = worker_started.elapsed().as_millis() as u64;
        let completed = completions.len();
        let failed = failures.len();
        // Never closed, so always a permit.
        let settling = self.settling.clone().acquire_owned().await.ok();
        drop(slot);
        let stored = self
            .store_then_ack(completions, failures, &receipts, &accepted_at)
            .await;
        drop(settling);
        debug!(completed, failed, expired, worker_ms, stored, "batch done");
    }

    /// Puts tasks the worker was too busy for (`429`/`503` after their retries) back in the
    /// queue, as new entries with their original acceptance time and deadline, so that the
    /// queue-age limit and the client's deadline still bound how long they may keep trying; the
    /// old entries are acknowledged with the rest of the batch. A task the queue will not take
    /// back fails with the worker's answer.
    async fn requeue(
        &self,
        tasks: Vec<(Delivery, String)>,
        completions: &mut Vec<Completion>,
        failures: &mut Vec<Failure>,
    ) {
        if tasks.is_empty() {
            return;
        }
        // Hold the slot a moment first: the worker just said it is full, and an immediate
        // requeue would come straight back to it. The pause is jittered so that slots turned
        // away together do not return together.
        let pause = OVERLOAD_PAUSE.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        tokio::time::sleep(pause).await;
        for (delivery, reason) in tasks {
            let task = delivery.task.clone();
            match self.queue.requeue(delivery).await {
                Ok(()) => {
                    self.metrics.requeued.inc();
                }
                Err(error) => {
                    warn!(%error, task_id = %task.task_id, "requeue refused; failing the task");
                    let completed_at = unix_ms(SystemTime::now());
                    completions.push(Completion {
                        task_id: task.task_id.clone(),
                        outcome: Outcome::Failed(reason.clone()),
                        completed_at,
                        reply_to: task.reply_to.clone(),
                    });
                    failures.push(Failure {
                        task,
                        error: reason,
                        attempts: 1,
                        failed_at: completed_at,
                    });
                }
            }
        }
    }

    /// Why a task is not worth running at `now`, if it is not: its client's deadline passed,
    /// or it waited longer than `max_queue_age` since it first entered the queue (by the
    /// queue's clock, not the admitting gateway's). Either way its client has given up, and
    /// the worker's time goes to tasks someone still waits for.
    fn too_late(&self, task: &Task, queued_at: SystemTime, now: SystemTime) -> Option<String> {
        let age = now.duration_since(queued_at).unwrap_or_default();
        if let Some(deadline) = task.deadline {
            if let Ok(late) = now.duration_since(deadline) {
                return Some(format!(
                    "expired: deadline passed {} ms before the batch left (waited {} ms)",
                    late.as_millis(),
                    age.as_millis()
                ));
            }
        }
        (age > self.max_queue_age).then(|| {
            format!(
                "expired: waited {} ms in the queue (limit {} ms)",
                age.as_millis(),
                self.max_queue_age.as_millis()
            )
        })
    }

    /// The batch's worker calls; every task gets a completion either way, and every failed
    /// one a dead letter. Identical inputs in the batch go to the worker once and share the
    /// output (request collapsing, for the "hot key" case that the dedupe cache does not catch,
    /// e.g. with dedupe off).
    async fn call_worker(&self, inputs: Vec<String>, to: Vec<Addressee>) -> Outcomes {
        let (inputs, slot_of) = collapse(inputs);
        let collapsed = to.len() - inputs.len();
        if collapsed > 0 {
            self.metrics.collapsed_inputs.inc_by(collapsed as u64);
        }
        let mut results = self.infer_isolating(&inputs, CallKind::FirstTry).await;
        let completed_at = unix_ms(SystemTime::now());
        // Each output moves to the last task that shares it (the only one, unless collapsed),
        // and is copied for the others.
        let mut shares = vec![0usize; results.len()];
        for &slot in &slot_of {
            shares[slot] += 1;
        }
        let mut out = Outcomes::default();
        for (a, slot) in to.into_iter().zip(slot_of) {
            shares[slot] -= 1;
            let last = shares[slot] == 0;
            let outcome = match &mut results[slot] {
                (Ok(output), _) if last => {
                    Outcome::Success(std::mem::replace(output, Output::Text(String::new())))
                }
                (Ok(output), _) => Outcome::Success(output.clone()),
                (Err(error), attempts) => {
                    let reason = format!("worker error: {}", error.public_reason());
                    let task = Task {
                        task_id: a.task_id.clone(),
                        input: inputs[slot].clone(),
                        enqueued_at: a.enqueued_at,
                        reply_to: a.reply_to.clone(),
                        deadline: a.deadline,
                        owner: a.owner.clone(),
                        trace_parent: a.trace_parent.clone(),
                        zone: a.zone.clone(),
                    };
                    if error.is_overload() {
                        let delivery = Delivery {
                            task,
                            receipt: a.receipt.clone(),
                            queued_at: a.queued_at,
                            // Requeued: it waited for this batch already.
                            waited: Duration::ZERO,
                        };
                        out.requeue.push((delivery, reason));
                        continue;
                    }
                    out.failures.push(Failure {
                        task: Task {
                            reply_to: None,
                            deadline: None,
                            ..task
                        },
                        error: reason.clone(),
                        attempts: *attempts,
                        failed_at: completed_at,
                    });
                    Outcome::Failed(reason)
                }
            };
            out.completions.push(Completion {
                task_id: a.task_id,
                outcome,
                completed_at,
                reply_to: a.reply_to,
            });
        }
        out
    }

    /// Calls the worker with `inputs`; if the worker rejects the batch as such (it answered,
    /// with an error), splits it in halves and tries each, down to single inputs, so that one
    /// poisoned input fails alone and the others still succeed: at most `2n − 1` calls, all
    /// within the batch's one worker slot. A worker that does not answer (timeout, refused
    /// connection) is down, not poisoned: splitting would only multiply the calls, so the
    /// batch fails whole. The calls of a bisection are extra calls, like retries: taken from
    /// the retry budget, two at a time; past it, the batch fails whole at once.
    fn infer_isolating<'a>(
        &'a self,
        inputs: &'a [String],
        kind: CallKind,
    ) -> Pin<Box<dyn Future<Output = Vec<ItemResult>> + Send + 'a>> {
        Box::pin(async move {
            let (result, attempts) = self.call_once(inputs, kind).await;
            match result {
                Ok(outputs) => outputs.into_iter().map(|o| (Ok(o), attempts)).collect(),
                Err(error)
                    if inputs.len() > 1 && names_the_batch(&error) && !self.worker.try_extra(2) =>
                {
                    warn!(%error, size = inputs.len(), "batch rejected; retry budget exhausted, not bisecting");
                    self.metrics.retry_budget_exhausted.inc();
                    let error = WorkerError::RetryBudgetExhausted(Box::new(error));
                    vec![(Err(error), attempts); inputs.len()]
                }
                Err(error) if inputs.len() > 1 && names_the_batch(&error) => {
                    debug!(%error, size = inputs.len(), "batch rejected; bisecting to isolate the bad input");
                    self.metrics.bisections.inc();
                    let (left, right) = inputs.split_at(inputs.len() / 2);
                    let mut results = self.infer_isolating(left, CallKind::Extra).await;
                    results.extend(self.infer_isolating(right, CallKind::Extra).await);
                    for (_, n) in &mut results {
                        *n += attempts;
                    }
                    results
                }
                Err(error) => {
                    warn!(%error, size = inputs.len(), "worker call failed; failing its tasks");
                    vec![(Err(error), attempts); inputs.len()]
                }
            }
        })
    }

    /// One worker call (its retries included), measured; with the attempts it took.
    async fn call_once(
        &self,
        inputs: &[String],
        kind: CallKind,
    ) -> (Result<Vec<Output>, WorkerError>, u32) {
        let n = inputs.len();
        self.metrics.batch_size.observe(n as f64);
        self.metrics.inflight_batches.inc();
        let started = Instant::now();
        let (result, attempts) = self
            .worker
            .infer_counting(inputs, kind)
            .instrument(info_span!("worker.call", otel.kind = "client", size = n))
            .await;
        let result = result.and_then(|outputs| {
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
        let took = started.elapsed();
        self.metrics.worker_latency.observe(took.as_secs_f64());
        if attempts == 1 && result.is_ok() {
            if let Some(expected) = self.worker.expected_call(n) {
                self.load.call_timed(took, expected);
            }
        }
        if let Err(error) = &result {
            self.metrics.worker_errors.inc();
            if matches!(error, WorkerError::RetryBudgetExhausted(_)) {
                self.metrics.retry_budget_exhausted.inc();
            }
        }
        (result, attempts)
    }

    /// A task is acknowledged only with or after its result is stored (and, if it failed, its
    /// dead letter): if the write fails, the tasks stay unacknowledged and a queue that
    /// survives us delivers them again.
    /// Returns whether the results were stored.
    async fn store_then_ack(
        &self,
        completions: Vec<Completion>,
        failures: Vec<Failure>,
        receipts: &[Receipt],
        accepted_at: &AcceptedAt,
    ) -> bool {
        let n = completions.len();
        let completed: Vec<SystemTime> = completions
            .iter()
            .filter_map(|c| accepted_at.get(&c.task_id).copied())
            .collect();
        let mut counts = [0u64; 3];
        for c in &completions {
            counts[match &c.outcome {
                Outcome::Success(_) => 0,
                Outcome::Failed(e) if e.starts_with("expired") => 2,
                Outcome::Failed(_) => 1,
            }] += 1;
        }
        // Dead letters first: the settle below acknowledges, after which a crash could no
        // longer bring these tasks back to be dead-lettered.
        if !failures.is_empty() {
            let n = failures.len() as u64;
            match self.dead_letters.add(failures).await {
                Ok(()) => {
                    self.metrics.dead_letters.inc_by(n);
                }
                // The results say FAILED with the reason either way; only the replay is lost.
                Err(error) => warn!(%error, tasks = n, "writing dead letters failed"),
            }
        }
        // Results, notices and the ack in one step where the queue can (the ack last).
        let write = self
            .queue
            .settle(self.results.as_ref(), completions, receipts);
        if let Err(error) = write
            .instrument(info_span!("results.write", tasks = n))
            .await
        {
            error!(%error, tasks = n, "storing results failed; tasks given back for redelivery");
            self.queue.abandon(receipts).await;
            return false;
        }
        let stored_at = SystemTime::now();
        for accepted in completed {
            let latency = stored_at.duration_since(accepted).unwrap_or_default();
            self.metrics.task_latency.observe(latency.as_secs_f64());
        }
        for (outcome, count) in ["success", "failed", "expired"].into_iter().zip(counts) {
            if count > 0 {
                self.metrics
                    .tasks_completed
                    .get_or_create(&OutcomeLabel { outcome })
                    .inc_by(count);
            }
        }
        true
    }
}

/// Records each traced task's wait (acceptance to `flushed`) as a span in its request's trace,
/// and returns the requests' contexts for the batch span to link to.
fn trace_the_wait(items: &[Delivery], flushed: SystemTime) -> Vec<SpanContext> {
    items
        .iter()
        .filter_map(|d| {
            let parent = batchgate_telemetry::remote_span_context(d.task.trace_parent.as_deref()?)?;
            batchgate_telemetry::context::record_interval(
                "batch.wait",
                &parent,
                d.task.enqueued_at,
                flushed,
                vec![KeyValue::new("task_id", d.task.task_id.clone())],
            );
            Some(parent)
        })
        .collect()
}

/// Whether the worker answered with a judgement on this batch (worth splitting), rather than
/// not answering at all, or saying it is overloaded (splitting would only add load).
fn names_the_batch(error: &WorkerError) -> bool {
    match error {
        WorkerError::Status { .. } => !error.is_overload(),
        WorkerError::InvalidResponse(_) => true,
        WorkerError::Timeout
        | WorkerError::Unreachable(_)
        | WorkerError::RetryBudgetExhausted(_) => false,
    }
}

mod collapse;
#[cfg(test)]
mod tests;
