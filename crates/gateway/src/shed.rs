//! Load shedding at the edge: refuse work the system cannot do in time, so the work it accepts
//! still meets its latency objective.
//!
//! - System-wide ([`Shedder`]): by Little's law, the tasks outstanding (queued, batched or at
//!   the worker) divided by the rate at which tasks complete is the time a task admitted now
//!   should take. Past `max_latency`, new tasks get `503 overloaded` with `Retry-After`; a task
//!   whose client deadline (`timeout_ms`) is shorter than the estimate gets
//!   `503 deadline_unmeetable` at once instead of expiring in the queue.
//! - Per user ([`UserLimits`]): a token bucket per `client_id`; a user over its rate gets
//!   `429 rate_limited`, whatever the others do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batchgate_queue::Queue;
use tokio_util::sync::CancellationToken;

/// Default longest estimated latency before new tasks are shed: below the 500 ms p99 the
/// article aims at, with room for batching and the estimate's lag.
pub const DEFAULT_SHED_LATENCY: Duration = Duration::from_millis(400);
/// How often the estimate is refreshed.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Below this many outstanding tasks nothing is shed: less than one batch is no backlog,
/// whatever the rate.
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

/// The latency estimate: outstanding tasks ÷ completion rate (Little's law), driven by the
/// caller's clock.
///
/// The rate is measured between samples, only over intervals that completed something while a
/// backlog stood (so it reflects what the system does under load, not a lull), and smoothed
/// over samples (EWMA, weight 0.2); it is kept through idle periods. Until it has been
/// measured once, nothing is estimated, so a cold start is never shed on a guess.
#[derive(Debug, Default)]
pub struct WaitEstimator {
    /// Tasks completed a second under backlog, once measured.
    capacity: Option<f64>,
    /// The previous sample: when, completed so far, outstanding.
    last: Option<(Instant, u64, u64)>,
}

/// Weight of a new capacity measurement.
const CAPACITY_WEIGHT: f64 = 0.2;

impl WaitEstimator {
    /// Takes a sample (`completed`: tasks completed so far; `outstanding`: tasks not yet
    /// completed) and returns the estimated latency of a task admitted at `now`, once known.
    pub fn sample(&mut self, now: Instant, completed: u64, outstanding: u64) -> Option<Duration> {
        if let Some((then, last_completed, last_outstanding)) = self.last {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            let done = completed.saturating_sub(last_completed);
            if last_outstanding >= MIN_BACKLOG && dt > 0.0 && done > 0 {
                let measured = done as f64 / dt;
                self.capacity = Some(match self.capacity {
                    Some(c) => c + CAPACITY_WEIGHT * (measured - c),
                    None => measured,
                });
            }
        }
        self.last = Some((now, completed, outstanding));
        let capacity = self.capacity?;
        if outstanding == 0 {
            return Some(Duration::ZERO);
        }
        Some(Duration::try_from_secs_f64(outstanding as f64 / capacity).unwrap_or(UNBOUNDED))
    }
}

/// The estimate when it does not fit a `Duration`.
const UNBOUNDED: Duration = Duration::from_secs(3600);

/// The gateway's shedding decision, refreshed in the background by [`Shedder::run`].
#[derive(Debug)]
pub struct Shedder {
    /// Estimated latencies above this are shed; `None`: shedding off.
    max_latency: Option<Duration>,
    /// The latest estimate, in microseconds.
    estimate_us: AtomicU64,
    /// The latest count of outstanding tasks.
    outstanding: AtomicU64,
}

impl Shedder {
    /// A shedder with the given bound (`None`: never shed on the estimate).
    pub fn new(max_latency: Option<Duration>) -> Self {
        Shedder {
            max_latency,
            estimate_us: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
        }
    }

    /// The latest estimate of a new task's latency.
    pub fn estimate(&self) -> Duration {
        Duration::from_micros(self.estimate_us.load(Ordering::Relaxed))
    }

    /// Records an estimate (the sampler does; tests may too).
    pub fn set(&self, estimate: Duration, outstanding: u64) {
        let us = u64::try_from(estimate.as_micros()).unwrap_or(u64::MAX);
        self.estimate_us.store(us, Ordering::Relaxed);
        self.outstanding.store(outstanding, Ordering::Relaxed);
    }

    /// Whether a task with the client's `timeout` should be refused now.
    pub fn check(&self, timeout: Option<Duration>) -> Result<(), Shed> {
        if self.outstanding.load(Ordering::Relaxed) < MIN_BACKLOG {
            return Ok(());
        }
        let estimate = self.estimate();
        if self.max_latency.is_some_and(|max| estimate > max) {
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
    /// failed one) is skipped, leaving the last estimate in force.
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
            if let Some(estimate) = estimator.sample(now, backlog.completed, backlog.outstanding) {
                self.set(estimate, backlog.outstanding);
            }
        }
    }
}

/// A token bucket per user: `rate` requests a second, bursts of up to `burst`.
#[derive(Debug)]
pub struct UserLimits {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Users tracked at most; past it the table starts afresh (every user gets a full bucket),
/// which bounds memory whatever ids clients invent.
const MAX_USERS: usize = 100_000;

impl UserLimits {
    /// `rate` requests a second per user, bursts of `burst` (at least 1).
    pub fn new(rate: f64, burst: f64) -> Self {
        UserLimits {
            rate,
            burst: burst.max(1.0),
            buckets: Mutex::default(),
        }
    }

    /// Takes a token of `user` at `now`; `Err(seconds)` to wait when there is none.
    pub fn take(&self, user: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_USERS && !buckets.contains_key(user) {
            buckets.clear();
        }
        let (tokens, at) = buckets.entry(user.to_owned()).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.rate;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn estimate_is_outstanding_over_completion_rate_measured_under_backlog() {
        let t0 = Instant::now();
        let at = |i: u32| t0 + 100 * MS * i;
        let mut e = WaitEstimator::default();
        // Idle and lightly loaded: no backlog, so the rate stays unknown.
        assert_eq!(e.sample(at(0), 0, 0), None);
        assert_eq!(e.sample(at(1), 10, 5), None);
        // A cold burst: nothing completes in the first interval; still no guess.
        assert_eq!(e.sample(at(2), 10, 600), None);
        // Then 1,000 tasks a second complete while 500 are outstanding.
        let mut last = None;
        for i in 3..=30u32 {
            last = e.sample(at(i), 10 + u64::from(i - 2) * 100, 500);
        }
        // 500 outstanding at 1,000/s: 0.5 s.
        let last = last.expect("rate measured");
        assert!(last > 490 * MS && last < 510 * MS, "{last:?}");
        // Idle again: the rate is kept, the estimate follows the count.
        assert_eq!(e.sample(at(31), 2910, 0), Some(Duration::ZERO));
        assert_eq!(e.sample(at(40), 2910, 0), Some(Duration::ZERO));
        let back = e.sample(at(41), 2910, 100).expect("known");
        assert!(back > 90 * MS && back < 110 * MS, "{back:?}");
    }

    #[test]
    fn sheds_past_the_bound_and_for_short_deadlines_only_with_a_backlog() {
        let s = Shedder::new(Some(200 * MS));
        s.set(300 * MS, 10);
        assert_eq!(s.check(None), Ok(()), "no backlog, no shedding");
        s.set(300 * MS, 1000);
        assert_eq!(s.check(None), Err(Shed::Overloaded));
        s.set(100 * MS, 1000);
        assert_eq!(s.check(None), Ok(()));
        assert_eq!(s.check(Some(500 * MS)), Ok(()));
        assert_eq!(
            s.check(Some(50 * MS)),
            Err(Shed::DeadlineUnmeetable { estimate_ms: 100 })
        );
        let off = Shedder::new(None);
        off.set(Duration::from_secs(10), 1000);
        assert_eq!(off.check(None), Ok(()));
    }

    #[test]
    fn each_user_has_its_own_bucket() {
        let t0 = Instant::now();
        let limits = UserLimits::new(10.0, 2.0);
        assert!(limits.take("a", t0).is_ok());
        assert!(limits.take("a", t0).is_ok());
        assert_eq!(limits.take("a", t0), Err(1));
        assert!(limits.take("b", t0).is_ok(), "another user is unaffected");
        assert!(limits.take("a", t0 + 100 * MS).is_ok(), "refilled at 10/s");
    }
}
