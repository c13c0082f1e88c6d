//! An exponentially weighted estimate of the arrival rate, driven by the caller's clock.

use std::time::{Duration, Instant};

/// Arrivals per second, smoothed over a time constant `window`.
///
/// Each arrival adds `1 / window` to the estimate, and the estimate decays by `e^(−Δt/window)`
/// as time passes. Under a steady rate λ it settles at λ; after a change it follows within a
/// few `window`s; with no arrivals it decays towards 0. Being a function of the times handed
/// in, it is exact under a fake clock.
#[derive(Debug, Clone, Copy)]
pub struct ArrivalRate {
    /// The smoothing time constant, in seconds (positive).
    window_secs: f64,
    /// The estimate as of `at`, in arrivals per second.
    per_sec: f64,
    /// When `per_sec` was last brought up to date.
    at: Option<Instant>,
}

impl ArrivalRate {
    /// An estimate smoothed over `window` (at least 1 ms), starting at 0.
    pub fn new(window: Duration) -> Self {
        ArrivalRate {
            window_secs: window.as_secs_f64().max(0.001),
            per_sec: 0.0,
            at: None,
        }
    }

    /// Records `count` arrivals at `now`.
    pub fn record(&mut self, count: usize, now: Instant) {
        self.per_sec = self.at(now) + count as f64 / self.window_secs;
        self.at = Some(now);
    }

    /// The estimate at `now`, in arrivals per second.
    pub fn at(&self, now: Instant) -> f64 {
        match self.at {
            None => 0.0,
            Some(then) => {
                let dt = now.saturating_duration_since(then).as_secs_f64();
                self.per_sec * (-dt / self.window_secs).exp()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_at_a_steady_rate_and_decays_in_silence() {
        let t0 = Instant::now();
        let mut rate = ArrivalRate::new(Duration::from_secs(1));
        assert_eq!(rate.at(t0), 0.0);
        // 1,000 arrivals a second, one per millisecond, for 10 s.
        for ms in 0..10_000u64 {
            rate.record(1, t0 + Duration::from_millis(ms));
        }
        let end = t0 + Duration::from_millis(9_999);
        let settled = rate.at(end);
        assert!((settled - 1000.0).abs() < 5.0, "settled at {settled}");
        // One window of silence leaves e^-1 of it.
        let later = rate.at(end + Duration::from_secs(1));
        assert!((later - settled / std::f64::consts::E).abs() < 1e-6);
    }

    #[test]
    fn counts_many_arrivals_at_one_instant() {
        let t0 = Instant::now();
        let mut rate = ArrivalRate::new(Duration::from_millis(500));
        rate.record(100, t0);
        assert!((rate.at(t0) - 200.0).abs() < 1e-9);
    }
}
