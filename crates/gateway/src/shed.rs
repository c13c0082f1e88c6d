//! Load shedding at the edge: refuse work the system cannot do in time, so the work it accepts
//! still meets its latency objective.
//!
//! - System-wide ([`Shedder`]): the batchers report their workers' load (`WorkerLoad`: how
//!   much of the time every worker slot is taken, and what the slots get through when they
//!   are); a task admitted now would wait the tasks queued ahead of it ÷ that capacity, then a
//!   worker call. New tasks get `503 overloaded` with `Retry-After` only when the workers are
//!   the bottleneck (their slots taken most of the time) *and* that estimate breaks the
//!   objective; a machine that is merely busy leaves slots free and sheds nothing. A task
//!   whose client deadline (`timeout_ms`) is shorter than its estimated queue wait gets
//!   `503 deadline_unmeetable` at once instead of expiring in the queue.
//!
//! Per-user rate limits live in [`crate::rate_limit`] (GCRA in this gateway's memory) or, on
//! Redis, in the backend's script.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use batchgate_queue::{LoadBoard, Queue, WorkerLoad};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The default latency objective: the p99 that accepted tasks should stay under.
pub const DEFAULT_OBJECTIVE: Duration = Duration::from_millis(500);
/// Share of the objective that the estimate (queue wait + one call) may take: the estimate is
/// a mean, and the rest is the tail's headroom. With the reference worker (≈ 200 ms for a
/// full batch) it allows ≈ 100 ms of queue wait, the bound measured to keep the p99 of
/// accepted tasks under 500 ms at 3× capacity (BENCHMARKS.md, "Overload").
pub const OBJECTIVE_SHARE: f64 = 0.6;
/// Share of the recent past with every slot taken from which the workers count as the
/// bottleneck.
pub const BUSY_THRESHOLD: f64 = 0.8;
/// How often the queue and the load board are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Below this many queued tasks nothing is shed: less than one batch is no backlog.
const MIN_BACKLOG: u64 = 64;

/// What bounds the estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShedBound {
    /// Shed when the queue wait plus a worker call would pass this share
    /// ([`OBJECTIVE_SHARE`]) of the objective (the default, with [`DEFAULT_OBJECTIVE`]).
    Objective(Duration),
    /// Shed when the queue wait alone would pass this (`--shed-wait-ms`).
    QueueWait(Duration),
    /// Never shed on the estimate (client deadlines are still checked).
    Off,
}

impl Default for ShedBound {
    fn default() -> Self {
        ShedBound::Objective(DEFAULT_OBJECTIVE)
    }
}

/// Why a task was refused at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The estimated wait exceeds what the objective allows.
    Overloaded,
    /// The estimated wait exceeds the client's own deadline.
    DeadlineUnmeetable {
        /// The estimated wait, in milliseconds.
        estimate_ms: u64,
    },
}

/// The time `queued` tasks take to be taken at `per_sec`.
pub fn wait(queued: u64, per_sec: f64) -> Duration {
    if queued == 0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(queued as f64 / per_sec).unwrap_or(UNBOUNDED)
}

/// The estimate when it does not fit a `Duration`.
const UNBOUNDED: Duration = Duration::from_secs(3600);

/// The gateway's shedding decision. The workers' load and the queued count are refreshed every
/// 100 ms by [`Shedder::run`]; between samples the tasks this gateway admits are added as they
/// come, so an open window does not let 100 ms of overload through before the next sample
/// sees it.
#[derive(Debug)]
pub struct Shedder {
    bound: ShedBound,
    /// The workers' capacity, tasks a second, as `f64` bits; 0: not known.
    capacity_bits: AtomicU64,
    /// Share of time the workers' slots were all taken, as `f64` bits.
    busy_bits: AtomicU64,
    /// Mean worker call, in microseconds.
    call_us: AtomicU64,
    /// Tasks queued at the last sample.
    queued: AtomicU64,
    /// Tasks this gateway admitted since the last sample.
    admitted: AtomicU64,
    /// The load signal as last sampled, on `/metrics` (with its model's label when there
    /// are several): `batchgate_workers_busy_ratio` and
    /// `batchgate_workers_capacity_tasks_per_second`.
    busy_gauge: Gauge<f64, AtomicU64>,
    capacity_gauge: Gauge<f64, AtomicU64>,
}

impl Shedder {
    /// A shedder with the given bound.
    pub fn new(bound: ShedBound) -> Self {
        Shedder {
            bound,
            capacity_bits: AtomicU64::new(0),
            busy_bits: AtomicU64::new(0),
            call_us: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            busy_gauge: Gauge::default(),
            capacity_gauge: Gauge::default(),
        }
    }

    /// Shows the load signal this shedder samples in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "batchgate_workers_busy_ratio",
            "Share of the recent past in which every worker slot was in a call, as the batchers report it (what shedding watches)",
            self.busy_gauge.clone(),
        );
        registry.register(
            "batchgate_workers_capacity_tasks_per_second",
            "Tasks a second the workers get through while all their slots are taken, as the batchers report it",
            self.capacity_gauge.clone(),
        );
    }

    /// The estimated queue wait of a task admitted now, while the workers are the bottleneck
    /// and their capacity is known; `None` otherwise (then nothing is shed).
    pub fn estimate(&self) -> Option<Duration> {
        let per_sec = f64::from_bits(self.capacity_bits.load(Ordering::Relaxed));
        let busy = f64::from_bits(self.busy_bits.load(Ordering::Relaxed));
        (per_sec > 0.0 && busy >= BUSY_THRESHOLD).then(|| wait(self.queued_now(), per_sec))
    }

    fn queued_now(&self) -> u64 {
        self.queued.load(Ordering::Relaxed) + self.admitted.load(Ordering::Relaxed)
    }

    /// Records a sample: the workers' load and the queued count (the sampler does; tests may
    /// too).
    pub fn set(&self, load: WorkerLoad, queued: u64) {
        self.capacity_bits
            .store(load.capacity.max(0.0).to_bits(), Ordering::Relaxed);
        self.busy_bits
            .store(load.busy.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
        self.call_us
            .store((load.call_ms.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
        self.queued.store(queued, Ordering::Relaxed);
        self.admitted.store(0, Ordering::Relaxed);
        self.busy_gauge.set(load.busy.clamp(0.0, 1.0));
        self.capacity_gauge.set(load.capacity.max(0.0));
    }

    /// Counts a task this gateway admitted, until the next sample includes it.
    pub fn admitted(&self) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a task with the client's `timeout` should be refused now.
    pub fn check(&self, timeout: Option<Duration>) -> Result<(), Shed> {
        if self.queued_now() < MIN_BACKLOG {
            return Ok(());
        }
        let Some(estimate) = self.estimate() else {
            return Ok(());
        };
        let call = Duration::from_micros(self.call_us.load(Ordering::Relaxed));
        let over = match self.bound {
            ShedBound::Objective(objective) => estimate + call > objective.mul_f64(OBJECTIVE_SHARE),
            ShedBound::QueueWait(max) => estimate > max,
            ShedBound::Off => false,
        };
        if over {
            return Err(Shed::Overloaded);
        }
        if timeout.is_some_and(|t| estimate >= t) {
            return Err(Shed::DeadlineUnmeetable {
                estimate_ms: u64::try_from(estimate.as_millis()).unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }

    /// Reads the queue and the load board every 100 ms until `stop`. A sample the backends
    /// cannot give (or a failed one) is skipped, leaving the last figures in force; with no
    /// report from any batcher, the workers count as idle.
    pub async fn run(
        self: Arc<Self>,
        queue: Arc<dyn Queue>,
        board: Arc<dyn LoadBoard>,
        stop: CancellationToken,
    ) {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let (backlog, load) = tokio::join!(queue.backlog(), board.read());
            let (Ok(Some(backlog)), Ok(load)) = (backlog, load) else {
                continue;
            };
            self.set(load.unwrap_or_default(), backlog.queued);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn load(busy: f64, capacity: f64, call_ms: f64) -> WorkerLoad {
        WorkerLoad {
            busy,
            capacity,
            call_ms,
        }
    }

    #[test]
    fn sheds_only_when_the_workers_are_the_bottleneck_and_the_objective_breaks() {
        let s = Shedder::new(ShedBound::default());
        assert_eq!(s.check(None), Ok(()), "nothing known: no shedding");
        // 640/s, 200 ms calls: the objective's 300 ms leave 100 ms of queue wait, 64 tasks.
        s.set(load(1.0, 640.0, 200.0), 10);
        assert_eq!(s.check(None), Ok(()), "less than a batch queued");
        s.set(load(1.0, 640.0, 200.0), 64);
        assert_eq!(
            s.check(None),
            Ok(()),
            "100 ms of wait is within the objective"
        );
        s.set(load(1.0, 640.0, 200.0), 100);
        assert_eq!(s.check(None), Err(Shed::Overloaded));
        // The same queue behind workers with free slots (a busy machine): not the workers'
        // doing, nothing shed.
        s.set(load(0.5, 640.0, 200.0), 100_000);
        assert_eq!(s.check(None), Ok(()));
        // Workers busy but nothing completed yet: no capacity, no guess.
        s.set(load(1.0, 0.0, 0.0), 100_000);
        assert_eq!(s.check(None), Ok(()));
    }

    #[test]
    fn an_explicit_queue_wait_bound_and_client_deadlines() {
        let s = Shedder::new(ShedBound::QueueWait(200 * MS));
        s.set(load(1.0, 1000.0, 500.0), 150);
        assert_eq!(
            s.check(None),
            Ok(()),
            "150 ms of wait, the call not counted"
        );
        s.set(load(1.0, 1000.0, 500.0), 300);
        assert_eq!(s.check(None), Err(Shed::Overloaded));
        s.set(load(1.0, 1000.0, 500.0), 100);
        assert_eq!(s.check(Some(500 * MS)), Ok(()));
        assert_eq!(
            s.check(Some(50 * MS)),
            Err(Shed::DeadlineUnmeetable { estimate_ms: 100 })
        );
        let off = Shedder::new(ShedBound::Off);
        off.set(load(1.0, 1.0, 1.0), 1000);
        assert_eq!(off.check(None), Ok(()));
        assert!(off.check(Some(MS)).is_err(), "deadlines are still checked");
    }

    #[test]
    fn admissions_between_samples_count_at_once() {
        let s = Shedder::new(ShedBound::QueueWait(200 * MS));
        s.set(load(1.0, 1000.0, 0.0), 150);
        assert_eq!(s.check(None), Ok(()));
        // 51 more admitted before the next sample: 201 queued, 201 ms.
        for _ in 0..51 {
            s.admitted();
        }
        assert_eq!(s.check(None), Err(Shed::Overloaded));
        // The next sample includes them (and whatever completed meanwhile).
        s.set(load(1.0, 1000.0, 0.0), 120);
        assert_eq!(s.check(None), Ok(()));
    }
}
