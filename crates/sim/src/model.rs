//! The simulated GPU: a cost model with a fixed number of slots.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::sim_output;
use batchgate_worker::{Worker, WorkerError};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Default fixed cost of one call, whatever its size.
pub const DEFAULT_BASE: Duration = Duration::from_millis(150);
/// Default cost per input (0.78 ms: a batch of 64 costs ≈ 200 ms, as in the article).
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

/// Why the simulated worker refused a call.
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
}

/// Faults injected on purpose, to test and benchmark what batchgate does with them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Fraction of calls, in [0, 1], that fail at random with 503.
    pub error_rate: f64,
    /// Any batch with an input containing this fails whole with 500.
    pub poison_pattern: Option<String>,
}

impl SimError {
    /// The HTTP status the worker API answers this with.
    pub fn status(&self) -> u16 {
        match self {
            SimError::TooLarge { .. } => 413,
            SimError::Empty => 422,
            SimError::Poisoned => 500,
            SimError::Injected => 503,
        }
    }
}

/// What the worker has seen, so tests and operators can check the batcher from the outside.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Calls that ran (refused ones excluded).
    pub calls: u64,
    /// Inputs over all calls that ran.
    pub items: u64,
    /// The largest batch that ran.
    pub max_batch_seen: u64,
    /// Calls refused for carrying more than `max_batch_size` inputs.
    pub oversized_calls: u64,
    /// Calls running right now.
    pub in_flight: u64,
}

/// The simulated worker. Share it behind an `Arc`.
#[derive(Debug)]
pub struct SimWorker {
    /// The cost model.
    config: SimConfig,
    /// One permit per simulated GPU.
    slots: Semaphore,
    /// Counters behind [`SimStats`].
    calls: AtomicU64,
    items: AtomicU64,
    max_batch_seen: AtomicU64,
    oversized_calls: AtomicU64,
    in_flight: AtomicUsize,
    /// Failures to inject.
    faults: Faults,
}

impl SimWorker {
    /// A worker with the given cost model (at least one slot).
    pub fn new(config: SimConfig) -> Self {
        SimWorker {
            slots: Semaphore::new(config.slots.max(1)),
            config,
            calls: AtomicU64::new(0),
            items: AtomicU64::new(0),
            max_batch_seen: AtomicU64::new(0),
            oversized_calls: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            faults: Faults::default(),
        }
    }

    /// The same worker, failing on purpose as `faults` says.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The cost model in force.
    pub fn config(&self) -> SimConfig {
        self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        SimStats {
            calls: self.calls.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
            max_batch_seen: self.max_batch_seen.load(Ordering::Relaxed),
            oversized_calls: self.oversized_calls.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed) as u64,
        }
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
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the slot semaphore is never closed. This is a bug.");
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.config.cost(n)).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(pattern) = &self.faults.poison_pattern {
            if inputs.iter().any(|i| i.contains(pattern.as_str())) {
                return Err(SimError::Poisoned);
            }
        }
        if self.faults.error_rate > 0.0 && rand::rng().random::<f64>() < self.faults.error_rate {
            return Err(SimError::Injected);
        }
        let outputs = inputs.iter().map(|i| sim_output(i)).collect();
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(n as u64, Ordering::Relaxed);
        self.max_batch_seen.fetch_max(n as u64, Ordering::Relaxed);
        Ok(outputs)
    }
}

#[async_trait]
impl Worker for SimWorker {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<String>, WorkerError> {
        self.run_batch(inputs)
            .await
            .map_err(|e| WorkerError::Status {
                status: e.status(),
                message: e.to_string(),
            })
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
