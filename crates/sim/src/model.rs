//! The simulated GPU: a cost model with a fixed number of slots, and the faults of
//! [`crate::faults`] applied to it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::sim_output;
use batchgate_worker::{Output, Worker, WorkerError};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::faults::{Dice, Faults};

/// Default fixed cost of one call, whatever its size.
pub const DEFAULT_BASE: Duration = Duration::from_millis(150);
/// Default cost per input (0.78 ms: a batch of 64 costs ≈ 200 ms, as in the reference deployment).
pub const DEFAULT_PER_ITEM: Duration = Duration::from_micros(780);
/// Default simulated GPUs for `batchgate worker --sim`.
pub const DEFAULT_SLOTS: usize = 32;
/// The fixed API's batch limit.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 64;

/// The cost model and its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// Batches that run at once; more calls wait for a slot.
    pub slots: usize,
    /// Fixed cost of a call.
    pub base: Duration,
    /// Added cost per input.
    pub per_item: Duration,
    /// Most inputs accepted in one call; more is refused.
    pub max_batch_size: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            slots: DEFAULT_SLOTS,
            base: DEFAULT_BASE,
            per_item: DEFAULT_PER_ITEM,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
        }
    }
}

impl SimConfig {
    /// How long a call with `n` inputs occupies its slot.
    pub fn cost(&self, n: usize) -> Duration {
        self.base + self.per_item * u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// Why the simulated worker refused or failed a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// More inputs than the API allows.
    #[error("batch of {got} inputs exceeds the limit of {max}")]
    TooLarge {
        /// Inputs in the call.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A call with no inputs.
    #[error("batch has no inputs")]
    Empty,
    /// An input matched the poison pattern: the whole call fails, as a model that crashes on
    /// one bad input would.
    #[error("the model failed on an input of this batch")]
    Poisoned,
    /// An injected random failure.
    #[error("injected failure")]
    Injected,
    /// Every slot is busy and the wait queue is full ([`Faults::max_queued_calls`]).
    #[error("worker overloaded: all {slots} slots busy and {queued} calls waiting")]
    Overloaded {
        /// The worker's slots.
        slots: usize,
        /// Calls already waiting for a slot.
        queued: usize,
    },
    /// A hung call ended because the worker is stopping.
    #[error("worker stopping")]
    Stopping,
}

impl SimError {
    /// The HTTP status the worker API answers this with.
    pub fn status(&self) -> u16 {
        match self {
            SimError::TooLarge { .. } => 413,
            SimError::Empty => 422,
            SimError::Poisoned => 500,
            SimError::Injected => 500,
            SimError::Overloaded { .. } => 429,
            SimError::Stopping => 503,
        }
    }
}

/// What the worker has seen, so tests and operators can check the batcher from the outside.
///
/// Counters only grow, except `in_flight`. Refused calls (413, 422, 429) take no slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimStats {
    /// Calls that ran and succeeded (refused and failed ones excluded).
    pub calls: u64,
    /// Inputs over all calls that ran and succeeded.
    pub items: u64,
    /// The largest batch that ran and succeeded.
    pub max_batch_seen: u64,
    /// Calls refused for carrying more than `max_batch_size` inputs.
    pub oversized_calls: u64,
    /// Calls running right now (holding a slot).
    pub in_flight: u64,
    /// Calls failed on purpose with 500 ([`Faults::error_rate`]).
    pub calls_failed_injected: u64,
    /// Calls slowed down on purpose ([`Faults::slow_rate`]), counted when they start running.
    pub calls_slow: u64,
    /// Calls that hung on purpose ([`Faults::hang_rate`]), counted when they arrive.
    pub calls_hung: u64,
    /// Calls refused with 429 because the wait queue was full ([`Faults::max_queued_calls`]).
    pub calls_rejected_overload: u64,
    /// Total time slots were held, in seconds, added as each call releases its slot. Over a
    /// window, `Δbusy_seconds / (slots × Δwall_seconds)` is the GPU busy fraction.
    pub busy_seconds: f64,
}

/// The simulated worker. Share it behind an `Arc`.
#[derive(Debug)]
pub struct SimWorker {
    /// The cost model (with at least one slot).
    config: SimConfig,
    /// One permit per simulated GPU.
    slots: Semaphore,
    /// One permit per place in the wait queue for a slot; `None` when the queue is unbounded.
    queue_places: Option<Semaphore>,
    /// Counters behind [`SimStats`].
    calls: AtomicU64,
    items: AtomicU64,
    max_batch_seen: AtomicU64,
    oversized_calls: AtomicU64,
    in_flight: AtomicUsize,
    /// Set once a call had to wait for a slot: more calls are sent than there are slots, and
    /// a call's time includes that wait.
    oversubscribed: AtomicBool,
    calls_failed_injected: AtomicU64,
    calls_slow: AtomicU64,
    calls_hung: AtomicU64,
    calls_rejected_overload: AtomicU64,
    /// Slot time in nanoseconds (u64 holds 584 years of it).
    busy_nanos: AtomicU64,
    /// Calls that ran to the end of their modelled time, counted for `crash_after`.
    completed: AtomicU64,
    /// Failures to inject.
    faults: Faults,
    /// Deals each call its random faults.
    dice: Dice,
    /// Cancelled when the worker has "crashed" (`crash_after` reached).
    crashed: CancellationToken,
    /// Cancelled when the server stops: hung calls then end instead of holding the drain.
    stopping: CancellationToken,
}

impl SimWorker {
    /// A worker with the given cost model (at least one slot).
    pub fn new(mut config: SimConfig) -> Self {
        config.slots = config.slots.max(1);
        SimWorker {
            slots: Semaphore::new(config.slots),
            queue_places: None,
            config,
            calls: AtomicU64::new(0),
            items: AtomicU64::new(0),
            max_batch_seen: AtomicU64::new(0),
            oversized_calls: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            oversubscribed: AtomicBool::new(false),
            calls_failed_injected: AtomicU64::new(0),
            calls_slow: AtomicU64::new(0),
            calls_hung: AtomicU64::new(0),
            calls_rejected_overload: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            dice: Dice::new(&Faults::default()),
            faults: Faults::default(),
            crashed: CancellationToken::new(),
            stopping: CancellationToken::new(),
        }
    }

    /// The same worker, failing on purpose as `faults` says.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.queue_places = faults
            .max_queued_calls
            .map(|n| Semaphore::new(n.min(Semaphore::MAX_PERMITS)));
        if faults.crash_after == Some(0) {
            self.crashed.cancel();
        }
        self.dice = Dice::new(&faults);
        self.faults = faults;
        self
    }

    /// The cost model in force.
    pub fn config(&self) -> SimConfig {
        self.config
    }

    /// Calls holding a slot right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SimStats {
            calls: load(&self.calls),
            items: load(&self.items),
            max_batch_seen: load(&self.max_batch_seen),
            oversized_calls: load(&self.oversized_calls),
            in_flight: self.in_flight() as u64,
            calls_failed_injected: load(&self.calls_failed_injected),
            calls_slow: load(&self.calls_slow),
            calls_hung: load(&self.calls_hung),
            calls_rejected_overload: load(&self.calls_rejected_overload),
            busy_seconds: Duration::from_nanos(load(&self.busy_nanos)).as_secs_f64(),
        }
    }

    /// Resolves once the worker has "crashed" ([`Faults::crash_after`] calls ran). The caller
    /// decides what a crash is: `batchgate worker` exits the process.
    pub async fn crashed(&self) {
        self.crashed.cancelled().await;
    }

    /// Ends every hung call now, and every later one at once, with [`SimError::Stopping`]: a
    /// graceful shutdown waits for calls under way, and hung ones would never finish.
    pub fn stop_hanging(&self) {
        self.stopping.cancel();
    }

    /// Runs one batch: waits for a slot, spends the modelled time, returns the outputs.
    pub async fn run_batch(&self, inputs: &[String]) -> Result<Vec<String>, SimError> {
        let n = inputs.len();
        if n > self.config.max_batch_size {
            self.oversized_calls.fetch_add(1, Ordering::Relaxed);
            return Err(SimError::TooLarge {
                got: n,
                max: self.config.max_batch_size,
            });
        }
        if n == 0 {
            return Err(SimError::Empty);
        }
        if self.crashed.is_cancelled() {
            return self.hang().await;
        }
        let fate = self.dice.roll();
        if fate.hang {
            self.calls_hung.fetch_add(1, Ordering::Relaxed);
            return self.hang().await;
        }
        let slot = self.occupy_slot().await?;
        let mut cost = self.config.cost(n);
        if fate.slow {
            self.calls_slow.fetch_add(1, Ordering::Relaxed);
            cost = Duration::try_from_secs_f64(cost.as_secs_f64() * self.faults.slow_factor)
                .unwrap_or(Duration::MAX);
        }
        tokio::time::sleep(cost).await;
        drop(slot);
        if !self.complete_one() {
            // A crashed host answers nothing, not even the calls it was running.
            return self.hang().await;
        }
        if let Some(pattern) = &self.faults.poison_pattern {
            if inputs.iter().any(|i| i.contains(pattern.as_str())) {
                return Err(SimError::Poisoned);
            }
        }
        if fate.fail {
            self.calls_failed_injected.fetch_add(1, Ordering::Relaxed);
            return Err(SimError::Injected);
        }
        let outputs = inputs.iter().map(|i| sim_output(i)).collect();
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(n as u64, Ordering::Relaxed);
        self.max_batch_seen.fetch_max(n as u64, Ordering::Relaxed);
        Ok(outputs)
    }

    /// Waits for a slot, or refuses at once when the wait queue is bounded and full.
    async fn occupy_slot(&self) -> Result<Occupied<'_>, SimError> {
        let permit = match &self.queue_places {
            None => self.acquire_slot().await,
            Some(places) => match self.slots.try_acquire() {
                Ok(permit) => permit,
                Err(_) => {
                    // The queue place is held while waiting, and given back even if the
                    // caller goes away.
                    let Ok(_place) = places.try_acquire() else {
                        self.calls_rejected_overload.fetch_add(1, Ordering::Relaxed);
                        return Err(SimError::Overloaded {
                            slots: self.config.slots,
                            queued: self.faults.max_queued_calls.unwrap_or_default(),
                        });
                    };
                    self.acquire_slot().await
                }
            },
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Occupied {
            worker: self,
            since: Instant::now(),
            _permit: permit,
        })
    }

    async fn acquire_slot(&self) -> SemaphorePermit<'_> {
        if let Ok(permit) = self.slots.try_acquire() {
            return permit;
        }
        self.oversubscribed.store(true, Ordering::Relaxed);
        self.slots
            .acquire()
            .await
            .expect("the slot semaphore is never closed. This is a bug.")
    }

    /// Counts a call that ran to its end; false once the worker has crashed (this call is
    /// past `crash_after`).
    fn complete_one(&self) -> bool {
        let done = self.completed.fetch_add(1, Ordering::Relaxed) + 1;
        match self.faults.crash_after {
            Some(limit) if done > limit => false,
            Some(limit) if done == limit => {
                self.crashed.cancel();
                true
            }
            _ => true,
        }
    }

    /// Never answers, until the worker stops.
    async fn hang(&self) -> Result<Vec<String>, SimError> {
        self.stopping.cancelled().await;
        Err(SimError::Stopping)
    }
}

/// A slot held by a running call. Dropping it (even when the call is cancelled because its
/// client went away) frees the slot and accounts the time it was held.
struct Occupied<'a> {
    /// The worker whose counters to update.
    worker: &'a SimWorker,
    /// When the slot was taken.
    since: Instant,
    /// The slot itself, released after `drop` has updated the counters.
    _permit: SemaphorePermit<'a>,
}

impl Drop for Occupied<'_> {
    fn drop(&mut self) {
        let held = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.worker.busy_nanos.fetch_add(held, Ordering::Relaxed);
        self.worker.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Worker for SimWorker {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        self.run_batch(inputs)
            .await
            .map(|outputs| outputs.into_iter().map(Output::Text).collect())
            .map_err(|e| WorkerError::Status {
                status: e.status(),
                message: e.to_string(),
            })
    }

    /// The modelled cost of a call: what it takes here when nothing else holds up the
    /// process. Not known when calls are slowed on purpose ([`Faults::slow_rate`]) or once
    /// calls have waited for a slot (more are sent than there are slots): those waits are the
    /// worker's own.
    fn expected_call(&self, inputs: usize) -> Option<Duration> {
        let own_waits = self.faults.slow_rate > 0.0 || self.oversubscribed.load(Ordering::Relaxed);
        (!own_waits).then(|| self.config.cost(inputs))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn default_cost_of_64_is_about_200_ms() {
        assert_eq!(
            SimConfig::default().cost(64),
            Duration::from_micros(199_920)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_bound_concurrency_and_calls_take_modelled_time() {
        let w = Arc::new(SimWorker::new(SimConfig {
            slots: 2,
            base: Duration::from_millis(100),
            per_item: Duration::from_millis(1),
            max_batch_size: 64,
        }));
        let start = tokio::time::Instant::now();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let w = w.clone();
                tokio::spawn(async move {
                    w.run_batch(&["x".into()]).await.expect("runs");
                    start.elapsed()
                })
            })
            .collect();
        let mut took = Vec::new();
        for c in calls {
            took.push(c.await.expect("join"));
        }
        took.sort();
        // Two run at once (101 ms); the third waits for a slot (202 ms).
        assert_eq!(
            took,
            vec![
                Duration::from_millis(101),
                Duration::from_millis(101),
                Duration::from_millis(202)
            ]
        );
        assert_eq!(w.stats().calls, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn outputs_are_sha256_in_order_and_oversize_is_refused() {
        let w = SimWorker::new(SimConfig::default());
        let out = w.run_batch(&["a".into(), "b".into()]).await.expect("runs");
        assert_eq!(out, vec![sim_output("a"), sim_output("b")]);
        let big: Vec<String> = (0..65).map(|i| i.to_string()).collect();
        assert_eq!(
            w.run_batch(&big).await,
            Err(SimError::TooLarge { got: 65, max: 64 })
        );
        assert_eq!(w.stats().oversized_calls, 1);
        assert_eq!(w.stats().max_batch_seen, 2);
    }
}
