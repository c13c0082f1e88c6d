//! Load shedding at the edge: refuse work the system cannot do in time, so the work it accepts
//! still meets its latency objective.
//!
//! - System-wide ([`Shedder`]): the queue wait of a task admitted now is estimated as the tasks
//!   queued ahead of it ÷ the rate at which batchers take tasks while a backlog stands (their
//!   capacity). Past `max_wait`, new tasks get `503 overloaded` with `Retry-After`; a task
//!   whose client deadline (`timeout_ms`) is shorter than the estimate gets
//!   `503 deadline_unmeetable` at once instead of expiring in the queue.
//!
//! Per-user rate limits live in `batchgate_queue::rate_limit` (GCRA, in memory or in Redis).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgate_queue::Queue;
use tokio_util::sync::CancellationToken;

/// Suggested longest estimated queue wait before new tasks are shed: with up to 50 ms of
/// batching and ≈ 200 ms for a full batch on the GPU, accepted tasks stay under the article's
/// 500 ms p99 (BENCHMARKS.md, "Overload"). Shedding is off unless configured.
pub const SUGGESTED_SHED_WAIT: Duration = Duration::from_millis(100);
/// How often the estimate is refreshed.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Below this many queued tasks nothing is shed, and the batchers' rate is not measured: less
/// than one batch is no backlog.
const MIN_BACKLOG: u64 = 64;

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

/// The batchers' capacity: the rate at which they take tasks while a backlog stands, driven
/// by the caller's clock.
///
/// Only intervals that began with at least a batch queued count: then the batchers take as
/// fast as they can, and the rate measures what they can do, not what clients asked. It is
/// smoothed over samples (EWMA, weight 0.2) and kept through idle periods. Until a first take
/// under backlog has been seen, nothing is estimated, so a cold start is never shed on a guess.
#[derive(Debug, Default)]
pub struct WaitEstimator {
    /// Tasks taken a second under backlog, once measured.
    capacity: Option<f64>,
    /// The previous sample: when, taken so far, queued.
    last: Option<(Instant, u64, u64)>,
}

/// Weight of a new capacity measurement.
const CAPACITY_WEIGHT: f64 = 0.2;

impl WaitEstimator {
    /// Takes a sample (`taken`: tasks handed to batchers so far; `queued`: tasks waiting) and
    /// returns the batchers' capacity, in tasks a second, once known.
    pub fn sample(&mut self, now: Instant, taken: u64, queued: u64) -> Option<f64> {
        if let Some((then, last_taken, last_queued)) = self.last {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            let done = taken.saturating_sub(last_taken);
            // Batchers take in batches, so most short intervals take nothing and some take a
            // whole batch: every interval under backlog counts, the empty ones too, once the
            // first take has been seen (before it, an empty interval is a cold start, not a
            // measurement).
            if last_queued >= MIN_BACKLOG && dt > 0.0 && (done > 0 || self.capacity.is_some()) {
                let measured = done as f64 / dt;
                self.capacity = Some(match self.capacity {
                    Some(c) => c + CAPACITY_WEIGHT * (measured - c),
                    None => measured,
                });
            }
        }
        self.last = Some((now, taken, queued));
        self.capacity
    }
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

/// The gateway's shedding decision. The capacity and the queued count are refreshed every
/// 100 ms by [`Shedder::run`]; between samples the tasks this gateway admits are added as they
/// come, so an open window does not let 100 ms of overload through before the next sample
/// sees it.
#[derive(Debug)]
pub struct Shedder {
    /// Estimated queue waits above this are shed; `None`: shedding off.
    max_wait: Option<Duration>,
    /// The batchers' capacity, tasks a second, as `f64` bits; 0: not measured yet.
    capacity_bits: AtomicU64,
    /// Tasks queued at the last sample.
    queued: AtomicU64,
    /// Tasks this gateway admitted since the last sample.
    admitted: AtomicU64,
}

impl Shedder {
    /// A shedder with the given bound (`None`: never shed on the estimate).
    pub fn new(max_wait: Option<Duration>) -> Self {
        Shedder {
            max_wait,
            capacity_bits: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
        }
    }

    /// The estimated queue wait of a task admitted now, once the capacity is known.
    pub fn estimate(&self) -> Option<Duration> {
        let per_sec = f64::from_bits(self.capacity_bits.load(Ordering::Relaxed));
        (per_sec > 0.0).then(|| wait(self.queued_now(), per_sec))
    }

    fn queued_now(&self) -> u64 {
        self.queued.load(Ordering::Relaxed) + self.admitted.load(Ordering::Relaxed)
    }

    /// Records a sample: the capacity and the queued count (the sampler does; tests may too).
    pub fn set(&self, per_sec: f64, queued: u64) {
        self.capacity_bits
            .store(per_sec.max(0.0).to_bits(), Ordering::Relaxed);
        self.queued.store(queued, Ordering::Relaxed);
        self.admitted.store(0, Ordering::Relaxed);
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
        if self.max_wait.is_some_and(|max| estimate > max) {
            return Err(Shed::Overloaded);
        }
        if timeout.is_some_and(|t| estimate >= t) {
            return Err(Shed::DeadlineUnmeetable {
                estimate_ms: u64::try_from(estimate.as_millis()).unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }

    /// Samples the queue every 100 ms until `stop`. A sample the backend cannot give (or a
    /// failed one) is skipped, leaving the last figures in force.
    pub async fn run(self: Arc<Self>, queue: Arc<dyn Queue>, stop: CancellationToken) {
        let mut estimator = WaitEstimator::default();
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let Ok(Some(backlog)) = queue.backlog().await else {
                continue;
            };
            let now = Instant::now();
            if let Some(per_sec) = estimator.sample(now, backlog.taken, backlog.queued) {
                self.set(per_sec, backlog.queued);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_rate_is_measured_only_under_backlog_and_kept_through_lulls() {
        let t0 = Instant::now();
        let at = |i: u32| t0 + 100 * MS * i;
        let mut e = WaitEstimator::default();
        // Idle and lightly loaded: no backlog, so the rate stays unknown.
        assert_eq!(e.sample(at(0), 0, 0), None);
        assert_eq!(e.sample(at(1), 10, 5), None);
        // A cold burst: nothing taken in the first interval; still no guess.
        assert_eq!(e.sample(at(2), 10, 600), None);
        // Then batchers take 1,000 tasks a second while 500 are queued.
        let mut last = None;
        for i in 3..=30u32 {
            last = e.sample(at(i), 10 + u64::from(i - 2) * 100, 500);
        }
        let rate = last.expect("rate measured");
        assert!((rate - 1000.0).abs() < 1.0, "{rate}");
        // 500 queued at 1,000/s: 0.5 s.
        assert_eq!(wait(500, rate).as_millis(), 500);
        // Idle again: the rate is kept.
        assert_eq!(e.sample(at(31), 2910, 0), Some(rate));
        assert_eq!(e.sample(at(40), 2910, 0), Some(rate));
    }

    #[test]
    fn takes_in_whole_batches_average_out_to_the_true_rate() {
        let t0 = Instant::now();
        let mut e = WaitEstimator::default();
        // 64 tasks taken every 500 ms (128/s) while 300 wait: one interval in five takes a batch.
        let mut taken = 0;
        let mut rate = None;
        for i in 0..200u32 {
            if i % 5 == 1 {
                taken += 64;
            }
            rate = e.sample(t0 + 100 * MS * i, taken, 300);
        }
        let rate = rate.expect("measured");
        assert!((80.0..180.0).contains(&rate), "{rate}");
    }

    #[test]
    fn sheds_past_the_bound_and_for_short_deadlines_only_with_a_backlog() {
        let s = Shedder::new(Some(200 * MS));
        assert_eq!(s.check(None), Ok(()), "rate unknown: no shedding");
        s.set(1000.0, 10);
        assert_eq!(s.check(None), Ok(()), "no backlog, no shedding");
        s.set(1000.0, 300);
        assert_eq!(s.check(None), Err(Shed::Overloaded));
        s.set(1000.0, 100);
        assert_eq!(s.check(None), Ok(()));
        assert_eq!(s.check(Some(500 * MS)), Ok(()));
        assert_eq!(
            s.check(Some(50 * MS)),
            Err(Shed::DeadlineUnmeetable { estimate_ms: 100 })
        );
        let off = Shedder::new(None);
        off.set(1.0, 1000);
        assert_eq!(off.check(None), Ok(()));
    }

    #[test]
    fn admissions_between_samples_count_at_once() {
        let s = Shedder::new(Some(200 * MS));
        s.set(1000.0, 150);
        assert_eq!(s.check(None), Ok(()));
        // 51 more admitted before the next sample: 201 queued, 201 ms.
        for _ in 0..51 {
            s.admitted();
        }
        assert_eq!(s.check(None), Err(Shed::Overloaded));
        // The next sample includes them (and whatever completed meanwhile).
        s.set(1000.0, 120);
        assert_eq!(s.check(None), Ok(()));
    }
}
