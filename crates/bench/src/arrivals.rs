//! The open-loop schedule: when each request is meant to be sent.
//!
//! Times are offsets from the start of the run, computed up front from the rate curve (and the
//! seed), never from when earlier requests were actually sent: that is what keeps the load open
//! and the latency free of coordinated omission.
//!
//! The rate varies over the run (a warmup ramp, then optional bursts), so a schedule is built
//! in two steps. First, arrivals of a process of rate 1 in "work" units: `Fixed` puts the n-th
//! at exactly `n`, `Poisson` spaces them by exponential gaps of mean 1. Then [`RateCurve`] maps
//! work `n` to the time at which the curve's expected count reaches `n` (the inverse of the
//! integral of the rate). A constant rate `R` makes that `n / R`; a Poisson process stretched
//! by the curve is a Poisson process of the curve's rate at every instant.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::args::ArrivalKind;

/// Bursts of the measured window: `rate` requests/s for `length`, at the start of every
/// `period` (at 0, `period`, 2 `period`, … after the warmup); the base rate in between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Requests per second during a burst; positive and finite.
    pub rate: f64,
    /// How long each burst lasts; more than zero and less than `period`.
    pub length: Duration,
    /// From the start of one burst to the start of the next.
    pub period: Duration,
}

impl Burst {
    /// Requests expected in one period: the burst, then the base rate for the rest.
    fn per_period(&self, base_rate: f64) -> f64 {
        self.in_burst() + base_rate * (self.period - self.length).as_secs_f64()
    }

    /// Requests expected in one burst.
    fn in_burst(&self) -> f64 {
        self.rate * self.length.as_secs_f64()
    }

    /// Mean rate over a whole period, for the report.
    pub fn mean_rate(&self, base_rate: f64) -> f64 {
        self.per_period(base_rate) / self.period.as_secs_f64()
    }
}

/// Intended requests per second over the run: a linear ramp from 0 to `rate` over the warmup,
/// then `rate`, raised to the burst rate during bursts.
///
/// The ramp exists because starting at full rate makes the client open hundreds of connections
/// within milliseconds (HTTP/1.1 needs one per request in flight); the server's accept queue
/// overflows and the dropped handshakes wait out 1 s SYN retransmits, so the run measures the
/// kernel. A ramp lets the pool grow as it would in service. It ramps to the base rate: bursts
/// belong to the measured window, the first one starting with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateCurve {
    /// The base rate; positive and finite (checked by `BenchArgs::validate`).
    rate: f64,
    /// Bursts over the base rate, if any.
    burst: Option<Burst>,
    /// Length of the ramp; the measured window starts at its end.
    warmup: Duration,
}

impl RateCurve {
    /// `rate` must be positive and finite.
    pub fn new(rate: f64, burst: Option<Burst>, warmup: Duration) -> Self {
        RateCurve {
            rate,
            burst,
            warmup,
        }
    }

    /// When, as an offset from the start, the expected count of requests reaches `work`.
    ///
    /// Continuous and non-decreasing in `work`, so a rounding error that puts `work` on the
    /// wrong side of a piece's boundary moves the result by a rounding error only. It is
    /// computed in seconds and rounded to whole nanoseconds once, at the end, so that e.g. the
    /// 30th request at 100/s is due at exactly 300 ms, not a nanosecond before.
    fn offset_of(&self, work: f64) -> Duration {
        let warmup = self.warmup.as_secs_f64();
        // The ramp's rate is `R t / w`; its integral `R t² / 2w` reaches `R w / 2` at its end.
        let in_ramp = self.rate * warmup / 2.0;
        let secs = if work < in_ramp {
            (2.0 * warmup * work / self.rate).sqrt()
        } else {
            let work = work - in_ramp;
            warmup
                + match self.burst {
                    None => work / self.rate,
                    Some(burst) => {
                        let per_period = burst.per_period(self.rate);
                        let periods = (work / per_period).floor();
                        let rest = (work - periods * per_period).max(0.0);
                        let within = if rest < burst.in_burst() {
                            rest / burst.rate
                        } else {
                            burst.length.as_secs_f64() + (rest - burst.in_burst()) / self.rate
                        };
                        periods * burst.period.as_secs_f64() + within
                    }
                }
        };
        // `as` saturates: a schedule a few centuries long ends there.
        Duration::from_nanos((secs * 1e9).round() as u64)
    }
}

/// An endless sequence of intended send offsets, non-decreasing.
#[derive(Debug)]
pub struct Schedule {
    kind: ArrivalKind,
    curve: RateCurve,
    /// Draws the exponential gaps of `Poisson`; seeded so a run can be repeated.
    rng: StdRng,
    /// How many offsets were handed out; `Fixed` takes the n-th's work directly from it, so
    /// there is no accumulated rounding drift over millions of requests.
    issued: u64,
    /// Work of the last offset handed out (`Poisson` adds its gaps to it).
    last_work: f64,
}

impl Schedule {
    /// A schedule following `curve`.
    pub fn new(kind: ArrivalKind, curve: RateCurve, seed: u64) -> Self {
        Schedule {
            kind,
            curve,
            rng: StdRng::seed_from_u64(seed),
            issued: 0,
            last_work: 0.0,
        }
    }

    /// The intended send time of the next request, as an offset from the start. The first
    /// request is due at once.
    pub fn next_offset(&mut self) -> Duration {
        let work = match self.kind {
            ArrivalKind::Fixed => self.issued as f64,
            ArrivalKind::Poisson if self.issued == 0 => 0.0,
            ArrivalKind::Poisson => {
                // Inverse-CDF sampling; `1 - u` is in (0, 1] so the logarithm is finite.
                let u: f64 = self.rng.random();
                self.last_work - (1.0 - u).ln()
            }
        };
        self.issued += 1;
        self.last_work = work;
        self.curve.offset_of(work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schedule of `rate` requests per second from the start: no warmup, no bursts.
    fn constant(kind: ArrivalKind, rate: f64, seed: u64) -> Schedule {
        Schedule::new(kind, RateCurve::new(rate, None, Duration::ZERO), seed)
    }

    /// "2 s at 15,000/s every 10 s, 500/s otherwise".
    fn issue_burst() -> Burst {
        Burst {
            rate: 15_000.0,
            length: Duration::from_secs(2),
            period: Duration::from_secs(10),
        }
    }

    /// How many requests a schedule intends to send in `[0, window)`.
    fn count_in(mut schedule: Schedule, window: Duration) -> u64 {
        let mut count = 0;
        while schedule.next_offset() < window {
            count += 1;
        }
        count
    }

    /// Every offset of a schedule before `end`, checked to be non-decreasing.
    fn offsets_until(mut schedule: Schedule, end: Duration) -> Vec<Duration> {
        let mut offsets = Vec::new();
        loop {
            let offset = schedule.next_offset();
            if offset >= end {
                return offsets;
            }
            if let Some(last) = offsets.last() {
                assert!(offset >= *last, "{offset:?} after {last:?}");
            }
            offsets.push(offset);
        }
    }

    /// How many of `offsets` fall in `[from, to)`, in milliseconds.
    fn between(offsets: &[Duration], from_ms: u64, to_ms: u64) -> usize {
        let (from, to) = (Duration::from_millis(from_ms), Duration::from_millis(to_ms));
        offsets
            .iter()
            .filter(|offset| (from..to).contains(*offset))
            .count()
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
            let schedule = constant(ArrivalKind::Fixed, rate, 1);
            assert_eq!(
                count_in(schedule, Duration::from_millis(window_ms)),
                expected,
                "rate {rate} over {window_ms} ms"
            );
        }
    }

    #[test]
    fn fixed_is_evenly_spaced() {
        let mut schedule = constant(ArrivalKind::Fixed, 4.0, 1);
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
        let schedule = constant(ArrivalKind::Poisson, rate, 42);
        let count = count_in(schedule, Duration::from_secs(100)) as f64;
        assert!((count / 100_000.0 - 1.0).abs() < 0.02, "count {count}");
    }

    #[test]
    fn poisson_gaps_look_exponential() {
        // For exponential gaps the standard deviation equals the mean.
        let mut schedule = constant(ArrivalKind::Poisson, 200.0, 7);
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
        let mut a = constant(ArrivalKind::Poisson, 50.0, 9);
        let mut b = constant(ArrivalKind::Poisson, 50.0, 9);
        let mut c = constant(ArrivalKind::Poisson, 50.0, 10);
        let draw = |schedule: &mut Schedule| -> Vec<Duration> {
            (0..100).map(|_| schedule.next_offset()).collect()
        };
        let (xs, ys, zs) = (draw(&mut a), draw(&mut b), draw(&mut c));
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn ramp_is_continuous_and_full_rate_after_warmup() {
        // At 1 request/s, work n is the n-th second of the constant-rate schedule.
        let curve = RateCurve::new(1.0, None, Duration::from_secs(2));
        let at = |work: f64| curve.offset_of(work);
        assert_eq!(at(0.0), Duration::ZERO);
        // Half the warmup's constant-rate requests fit in the ramp; the curve meets the line.
        assert_eq!(at(1.0), Duration::from_secs(2));
        let just_before = at(0.999);
        assert!(just_before < Duration::from_secs(2) && just_before > Duration::from_millis(1990));
        assert_eq!(at(5.0), Duration::from_secs(6));
        // A quarter of the way through the ramp's requests is half way through its time.
        assert_eq!(at(0.25), Duration::from_secs(1));
        let no_ramp = RateCurve::new(1.0, None, Duration::ZERO);
        assert_eq!(no_ramp.offset_of(3.0), Duration::from_secs(3));
    }

    #[test]
    fn fixed_bursts_send_exactly_their_rate_inside_and_the_base_rate_outside() {
        let curve = RateCurve::new(500.0, Some(issue_burst()), Duration::ZERO);
        let offsets = offsets_until(Schedule::new(ArrivalKind::Fixed, curve, 1), secs(30));
        for period in 0..3 {
            let start = period * 10_000;
            assert_eq!(
                between(&offsets, start, start + 2000),
                30_000,
                "burst {period}"
            );
            assert_eq!(
                between(&offsets, start + 2000, start + 10_000),
                4000,
                "gap {period}"
            );
            // Evenly spaced within each piece: 1/15,000 s apart, then 1/500 s.
            assert_eq!(between(&offsets, start, start + 1), 15, "burst {period}");
            assert_eq!(
                between(&offsets, start + 2000, start + 2010),
                5,
                "gap {period}"
            );
        }
        assert_eq!(offsets.len(), 3 * 34_000);
        // The first request of a period is due at its very start, and is part of the burst.
        assert!(offsets.contains(&secs(10)) && offsets.contains(&secs(12)));
    }

    #[test]
    fn bursts_start_when_the_warmup_ramp_ends() {
        let warmup = Duration::from_secs(4);
        let curve = RateCurve::new(500.0, Some(issue_burst()), warmup);
        let offsets = offsets_until(Schedule::new(ArrivalKind::Fixed, curve, 1), secs(24));
        // The ramp to 500/s carries half of 4 s at full rate, and ends below it.
        assert_eq!(between(&offsets, 0, 4000), 1000);
        // Work 500 t² / (2 · 4) passes 562.5 at 3 s: requests 563 to 999 fall in the last second.
        assert_eq!(between(&offsets, 3000, 4000), 437);
        assert_eq!(between(&offsets, 4000, 6000), 30_000);
        assert_eq!(between(&offsets, 6000, 14_000), 4000);
        assert_eq!(between(&offsets, 14_000, 16_000), 30_000);
        assert_eq!(between(&offsets, 16_000, 24_000), 4000);
    }

    #[test]
    fn poisson_bursts_average_their_rate_inside_and_the_base_rate_outside() {
        // 10 periods: 300,000 arrivals in bursts (relative sd ~0.2%), 40,000 between them
        // (~0.5%); 3% is over 6 sd. The seed is fixed, so this is deterministic.
        let curve = RateCurve::new(500.0, Some(issue_burst()), Duration::from_secs(1));
        let offsets = offsets_until(Schedule::new(ArrivalKind::Poisson, curve, 3), secs(101));
        let (mut inside, mut outside) = (0, 0);
        for period in 0..10 {
            let start = 1000 + period * 10_000;
            inside += between(&offsets, start, start + 2000);
            outside += between(&offsets, start + 2000, start + 10_000);
        }
        assert!(
            (inside as f64 / 300_000.0 - 1.0).abs() < 0.03,
            "inside {inside}"
        );
        assert!(
            (outside as f64 / 40_000.0 - 1.0).abs() < 0.03,
            "outside {outside}"
        );
        let ramp = between(&offsets, 0, 1000) as f64;
        assert!((ramp - 250.0).abs() < 60.0, "ramp {ramp}"); // mean 250, sd ~16
    }

    #[test]
    fn uneven_pieces_stay_monotonic_and_count_their_integral() {
        // Rates and lengths that are not round in binary: pieces end between two requests.
        let burst = Burst {
            rate: 33.3,
            length: Duration::from_millis(700),
            period: Duration::from_millis(1300),
        };
        let curve = RateCurve::new(7.0, Some(burst), Duration::from_millis(900));
        for kind in [ArrivalKind::Fixed, ArrivalKind::Poisson] {
            let offsets = offsets_until(Schedule::new(kind, curve, 5), secs(200));
            assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{kind:?}");
            // Expected: the ramp's 7 · 0.9 / 2, then per period 33.3 · 0.7 + 7 · 0.6 = 27.51,
            // over (200 - 0.9) / 1.3 periods.
            let expected = 3.15 + 27.51 * (199.1 / 1.3);
            let count = offsets.len() as f64;
            let tolerance = match kind {
                ArrivalKind::Fixed => 28.0, // at most one partial period off
                ArrivalKind::Poisson => 0.05 * expected,
            };
            assert!((count - expected).abs() < tolerance, "{kind:?}: {count}");
        }
    }

    #[test]
    fn mean_rate_of_a_burst_profile() {
        assert_eq!(issue_burst().mean_rate(500.0), 3400.0);
    }

    fn secs(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }
}
