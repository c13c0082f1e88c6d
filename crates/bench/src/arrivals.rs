//! The open-loop schedule: when each request is meant to be sent.
//!
//! Times are offsets from the start of the run, computed up front from the rate (and the seed),
//! never from when earlier requests were actually sent: that is what keeps the load open and the
//! latency free of coordinated omission.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::args::ArrivalKind;

/// An endless sequence of intended send offsets, non-decreasing.
#[derive(Debug)]
pub(crate) struct Schedule {
    kind: ArrivalKind,
    /// Requests per second; positive and finite (checked by `BenchArgs::validate`).
    rate: f64,
    /// Draws the exponential gaps of `Poisson`; seeded so a run can be repeated.
    rng: StdRng,
    /// How many offsets were handed out; `Fixed` computes the n-th directly from it, so there is
    /// no accumulated rounding drift over millions of requests.
    issued: u64,
    /// The last offset handed out, in seconds (`Poisson` adds its gaps to it).
    last_secs: f64,
}

impl Schedule {
    /// A schedule of `rate` requests per second.
    pub(crate) fn new(kind: ArrivalKind, rate: f64, seed: u64) -> Self {
        Schedule {
            kind,
            rate,
            rng: StdRng::seed_from_u64(seed),
            issued: 0,
            last_secs: 0.0,
        }
    }

    /// The intended send time of the next request, as an offset from the start. The first
    /// request is due at once.
    pub(crate) fn next_offset(&mut self) -> Duration {
        let secs = match self.kind {
            ArrivalKind::Fixed => self.issued as f64 / self.rate,
            ArrivalKind::Poisson if self.issued == 0 => 0.0,
            ArrivalKind::Poisson => {
                // Inverse-CDF sampling; `1 - u` is in (0, 1] so the logarithm is finite.
                let u: f64 = self.rng.random();
                self.last_secs - (1.0 - u).ln() / self.rate
            }
        };
        self.issued += 1;
        self.last_secs = secs;
        // Rounded to whole nanoseconds so that e.g. the 30th request at 100/s is due at exactly
        // 300 ms, not a nanosecond before.
        Duration::from_nanos((secs * 1e9).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many requests a schedule intends to send in `[0, window)`.
    fn count_in(mut schedule: Schedule, window: Duration) -> u64 {
        let mut count = 0;
        while schedule.next_offset() < window {
            count += 1;
        }
        count
    }

    #[test]
    fn fixed_sends_exactly_rate_times_window() {
        for (rate, window_ms, expected) in [
            (100.0, 1000, 100),
            (100.0, 300, 30),
            (10_000.0, 2500, 25_000),
            (3.0, 1000, 3),
            (7.0, 1000, 7),
            (0.5, 10_000, 5),
        ] {
            let schedule = Schedule::new(ArrivalKind::Fixed, rate, 1);
            assert_eq!(
                count_in(schedule, Duration::from_millis(window_ms)),
                expected,
                "rate {rate} over {window_ms} ms"
            );
        }
    }

    #[test]
    fn fixed_is_evenly_spaced() {
        let mut schedule = Schedule::new(ArrivalKind::Fixed, 4.0, 1);
        let offsets: Vec<_> = (0..4).map(|_| schedule.next_offset()).collect();
        assert_eq!(
            offsets,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn poisson_mean_rate_is_close() {
        // 100,000 arrivals: the count over the window has a relative sd of ~0.3%; 2% is ~6 sd.
        // The seed is fixed, so this is deterministic; the tolerance only guards the math.
        let rate = 1000.0;
        let schedule = Schedule::new(ArrivalKind::Poisson, rate, 42);
        let count = count_in(schedule, Duration::from_secs(100)) as f64;
        assert!((count / 100_000.0 - 1.0).abs() < 0.02, "count {count}");
    }

    #[test]
    fn poisson_gaps_look_exponential() {
        // For exponential gaps the standard deviation equals the mean.
        let mut schedule = Schedule::new(ArrivalKind::Poisson, 200.0, 7);
        let offsets: Vec<f64> = (0..50_001)
            .map(|_| schedule.next_offset().as_secs_f64())
            .collect();
        let gaps: Vec<f64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|gap| *gap >= 0.0));
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
        assert!((mean / 0.005 - 1.0).abs() < 0.03, "mean {mean}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "sd/mean {}",
            var.sqrt() / mean
        );
    }

    #[test]
    fn same_seed_same_schedule() {
        let mut a = Schedule::new(ArrivalKind::Poisson, 50.0, 9);
        let mut b = Schedule::new(ArrivalKind::Poisson, 50.0, 9);
        let mut c = Schedule::new(ArrivalKind::Poisson, 50.0, 10);
        let draw = |schedule: &mut Schedule| -> Vec<Duration> {
            (0..100).map(|_| schedule.next_offset()).collect()
        };
        let (xs, ys, zs) = (draw(&mut a), draw(&mut b), draw(&mut c));
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }
}
