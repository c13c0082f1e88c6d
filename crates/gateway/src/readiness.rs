//! What `GET /readyz` answers, for orchestrators and load balancers:
//!
//! - **draining**: set at the first step of shutdown, before admission closes, so a load
//!   balancer stops sending new requests while the process still serves them;
//! - **queue errors**: a failing queue (Redis unreachable) turns readiness 503 only once it
//!   has failed for longer than a tolerance, so a short Redis blip does not take every
//!   gateway out of its load balancer at once (requests during the blip get 503 `unavailable`
//!   from the gateway itself);
//! - **workers**: a process that runs a batcher is ready only while at least one of its
//!   workers passes its health check. With several models, each model is ready only while
//!   one of its own workers is (`/v2/models/{name}/ready`), and the process while some
//!   model's is: one model's broken workers do not take the others out of service.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default of how long queue errors are tolerated before readiness fails.
pub const DEFAULT_QUEUE_ERROR_TOLERANCE: Duration = Duration::from_secs(10);

/// Whether any worker of this process's batcher is healthy; `None` for a process without one.
pub type WorkersHealthy = Arc<dyn Fn() -> bool + Send + Sync>;

/// The state behind `/readyz`.
pub struct Readiness {
    draining: AtomicBool,
    tolerance: Duration,
    /// When the queue started failing readiness checks, if it is failing now.
    failing_since: Mutex<Option<Instant>>,
    /// Each model's workers, by its position among the served models, if this process
    /// runs its batcher.
    workers: Vec<Option<WorkersHealthy>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new(DEFAULT_QUEUE_ERROR_TOLERANCE, None)
    }
}

/// What the queue check means for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueVerdict {
    /// The queue answered.
    Up,
    /// The queue failed, for `failing_for` so far, within the tolerance: still ready.
    Tolerated {
        /// How long the queue has been failing.
        failing_for: Duration,
    },
    /// The queue has failed for longer than the tolerance: not ready.
    Down {
        /// How long the queue has been failing.
        failing_for: Duration,
    },
}

impl Readiness {
    /// Readiness that tolerates queue errors for `tolerance` (zero: none, the first error
    /// fails readiness), and, if `workers` is given,
    /// requires it to say that a worker of the first model is healthy.
    pub fn new(tolerance: Duration, workers: Option<WorkersHealthy>) -> Self {
        Readiness {
            draining: AtomicBool::new(false),
            tolerance,
            failing_since: Mutex::new(None),
            workers: vec![workers],
        }
    }

    /// The same, knowing the workers of the models after the first too, in order.
    pub fn with_further_models(
        mut self,
        workers: impl IntoIterator<Item = Option<WorkersHealthy>>,
    ) -> Self {
        self.workers.extend(workers);
        self
    }

    /// From now on `/readyz` answers 503 `draining`; requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// `Some(false)` when this process runs batchers and no worker of any model is
    /// healthy; `None` when it runs none.
    pub fn workers_healthy(&self) -> Option<bool> {
        let mut known = self.workers.iter().flatten().peekable();
        known.peek()?;
        Some(known.any(|healthy| healthy()))
    }

    /// `Some(false)` when this process runs the batcher of model `index` (its position
    /// among the served models) and none of that model's workers is healthy.
    pub fn model_workers_healthy(&self, index: usize) -> Option<bool> {
        self.workers
            .get(index)
            .and_then(Option::as_ref)
            .map(|healthy| healthy())
    }

    /// How long queue errors are tolerated.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Records the outcome of one queue check at `now` and says what it means.
    pub fn queue_checked(&self, ok: bool, now: Instant) -> QueueVerdict {
        let mut since = self
            .failing_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if ok {
            *since = None;
            return QueueVerdict::Up;
        }
        let failing_for = now.saturating_duration_since(*since.get_or_insert(now));
        if self.tolerance.is_zero() || failing_for > self.tolerance {
            QueueVerdict::Down { failing_for }
        } else {
            QueueVerdict::Tolerated { failing_for }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_errors_fail_readiness_only_past_the_tolerance() {
        let r = Readiness::new(Duration::from_secs(10), None);
        let t0 = Instant::now();
        assert_eq!(r.queue_checked(true, t0), QueueVerdict::Up);
        assert_eq!(
            r.queue_checked(false, t0),
            QueueVerdict::Tolerated {
                failing_for: Duration::ZERO
            }
        );
        let t9 = t0 + Duration::from_secs(9);
        assert!(matches!(
            r.queue_checked(false, t9),
            QueueVerdict::Tolerated { .. }
        ));
        let t11 = t0 + Duration::from_secs(11);
        assert_eq!(
            r.queue_checked(false, t11),
            QueueVerdict::Down {
                failing_for: Duration::from_secs(11)
            }
        );
        // One success resets the clock.
        assert_eq!(r.queue_checked(true, t11), QueueVerdict::Up);
        let t12 = t0 + Duration::from_secs(12);
        assert!(matches!(
            r.queue_checked(false, t12),
            QueueVerdict::Tolerated { .. }
        ));
    }

    #[test]
    fn zero_tolerance_fails_at_the_first_error() {
        let r = Readiness::new(Duration::ZERO, None);
        let t0 = Instant::now();
        assert!(matches!(
            r.queue_checked(false, t0),
            QueueVerdict::Down { .. }
        ));
        assert_eq!(r.queue_checked(true, t0), QueueVerdict::Up);
    }

    #[test]
    fn workers_and_draining() {
        let r = Readiness::new(Duration::ZERO, Some(Arc::new(|| false)));
        assert_eq!(r.workers_healthy(), Some(false));
        // A second model with a healthy worker: the process is ready, the first model not.
        let r = r.with_further_models([Some(Arc::new(|| true) as WorkersHealthy), None]);
        assert_eq!(r.workers_healthy(), Some(true));
        assert_eq!(r.model_workers_healthy(0), Some(false));
        assert_eq!(r.model_workers_healthy(1), Some(true));
        assert_eq!(r.model_workers_healthy(2), None);
        assert!(!r.is_draining());
        r.start_draining();
        assert!(r.is_draining());
        assert_eq!(Readiness::default().workers_healthy(), None);
    }
}
