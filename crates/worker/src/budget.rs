//! A retry budget: the calls a batcher makes beyond the first try of each batch — retries, and
//! the calls that bisect a rejected batch — may add at most a fraction of the first tries made
//! over a sliding window, plus a small fixed allowance, as Envoy's and Finagle's retry budgets
//! do. A worker that fails every call is then sent at most `(1 + fraction)` times its load
//! (and the allowance), instead of several times it: retries help with rare failures and only
//! add load when everything fails.
//!
//! The window is [`WINDOW`] long, kept as [`BUCKETS`] one-second counts, on tokio's clock.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Default share of first tries that retries and bisection calls may add, in percent.
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
/// Extra calls allowed per window whatever the first tries, so that a batcher with little
/// traffic still retries a rare failure and isolates a poisoned input: 10 per second, as
/// Finagle's default.
pub const MIN_EXTRA_CALLS_PER_WINDOW: u64 = 100;
/// How far back first tries and extra calls count.
pub const WINDOW: Duration = Duration::from_secs(10);
/// One-second counts in the window.
const BUCKETS: usize = 10;

/// Counts of one second.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which second since the budget's start these counts are of.
    second: u64,
    /// First tries made in that second.
    first: u64,
    /// Extra calls (retries, bisection calls) made in that second.
    extra: u64,
}

/// Allows extra calls while they stay within the budget. Shared by every dispatch of a
/// batcher (cheap: one short lock per call).
#[derive(Debug)]
pub struct RetryBudget {
    /// Extra calls allowed per first try.
    ratio: f64,
    /// Extra calls allowed per window whatever the first tries.
    min_per_window: u64,
    /// Second 0.
    start: Instant,
    /// The last [`BUCKETS`] seconds, by second modulo [`BUCKETS`].
    buckets: Mutex<[Bucket; BUCKETS]>,
}

impl RetryBudget {
    /// A budget of `percent`% of first tries plus `min_per_window` per [`WINDOW`].
    pub fn new(percent: u32, min_per_window: u64) -> Self {
        RetryBudget {
            ratio: f64::from(percent) / 100.0,
            min_per_window,
            start: Instant::now(),
            buckets: Mutex::new([Bucket::default(); BUCKETS]),
        }
    }

    /// The share of first tries allowed as extra calls, in percent.
    pub fn percent(&self) -> u32 {
        (self.ratio * 100.0).round() as u32
    }

    /// Counts a first try.
    pub fn first_try(&self) {
        self.with_current(|b| b.first += 1);
    }

    /// Takes `calls` extra calls from the budget if they fit in it; whether they did.
    pub fn try_extra(&self, calls: u64) -> bool {
        let second = self.second();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (mut first, mut extra) = (0u64, 0u64);
        for b in buckets
            .iter()
            .filter(|b| b.second + BUCKETS as u64 > second)
        {
            first += b.first;
            extra += b.extra;
        }
        let allowed = (self.ratio * first as f64).floor() as u64 + self.min_per_window;
        if extra + calls > allowed {
            return false;
        }
        current(&mut buckets, second).extra += calls;
        true
    }

    fn second(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.start)
            .as_secs()
    }

    fn with_current(&self, f: impl FnOnce(&mut Bucket)) {
        let second = self.second();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        f(current(&mut buckets, second));
    }
}

/// The bucket of `second`, emptied first if it still holds an older second's counts.
fn current(buckets: &mut [Bucket; BUCKETS], second: u64) -> &mut Bucket {
    let bucket = &mut buckets[(second % BUCKETS as u64) as usize];
    if bucket.second != second {
        *bucket = Bucket {
            second,
            ..Bucket::default()
        };
    }
    bucket
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn extra_calls_stay_within_the_share_of_first_tries_plus_the_allowance() {
        let budget = RetryBudget::new(20, 3);
        // The allowance alone: 3 extra calls with no first try.
        assert!(budget.try_extra(2));
        assert!(budget.try_extra(1));
        assert!(!budget.try_extra(1));
        // 10 first tries earn 2 more.
        for _ in 0..10 {
            budget.first_try();
        }
        assert!(budget.try_extra(2));
        assert!(!budget.try_extra(1));
        // 9 s later all of it still counts; at 10 s, none of it does.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!budget.try_extra(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(budget.try_extra(3));
        assert!(!budget.try_extra(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_slides_a_second_at_a_time() {
        let budget = RetryBudget::new(50, 0);
        for _ in 0..4 {
            budget.first_try();
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..4 {
            budget.first_try();
        }
        assert!(budget.try_extra(4));
        assert!(!budget.try_extra(1));
        // The first 4 first tries leave the window; their share (2) goes with them, but the 4
        // extra calls made since still count.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!budget.try_extra(1));
        assert_eq!(budget.percent(), 50);
    }
}
