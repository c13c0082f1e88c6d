//! Where every finished request is counted: outcome counts and the latency histogram.
//!
//! One `Mutex` around plain counters and two histograms. A record holds the lock for a hash-map
//! increment and one or two histogram increments (well under a microsecond), so even 15,000
//! requests/s spend a few milliseconds per second in it
//! (`recorder_counts_exactly_under_contention` prints the cost per record). A channel to a
//! collector task would cost more per record than the lock does.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::outcome::Outcome;

/// Highest latency the histograms track: one hour in microseconds (higher values are clamped).
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Precision of the histograms: 3 significant figures.
const SIGNIFICANT_FIGURES: u8 = 3;

/// Counts every request of a run. Shared by all request tasks behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Recorder {
    tally: Mutex<Tally>,
    /// Requests that went on the wire, warmup included (for the progress line).
    sent_all: AtomicU64,
    /// Requests of the measured window that went on the wire.
    sent_measured: AtomicU64,
    /// When the measured window starts (for the per-second timeline of `--report`).
    window_start: OnceLock<Instant>,
}

/// One second of the measured window, by when its answers came.
#[derive(Debug, Clone)]
pub(crate) struct Second {
    /// `ok` answers.
    pub(crate) ok: u64,
    /// `503 overloaded` answers (shed).
    pub(crate) shed: u64,
    /// Latencies (µs) of the `ok` answers.
    pub(crate) latency_us: Histogram<u64>,
}

/// Seconds of timeline kept at most (an hour); later answers count in the totals only.
const MAX_SECONDS: usize = 3600;

#[derive(Debug)]
struct Tally {
    /// Outcomes of the measured window.
    outcomes: HashMap<Outcome, u64>,
    /// Latency of the measured window's `ok` requests, in microseconds.
    latency_us: Histogram<u64>,
    /// `ok` requests since the start, warmup included (for the progress line).
    ok_all: u64,
    /// Sent requests that ended otherwise since the start, warmup included.
    errors_all: u64,
    /// Requests never sent for lack of a free connection, warmup included.
    overloaded_all: u64,
    /// Latency of `ok` requests since the last progress line; gives its "current p99".
    interval_us: Histogram<u64>,
    /// Per second of the measured window.
    timeline: Vec<Second>,
}

/// What the progress line shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Live {
    pub(crate) sent: u64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    /// Due but never sent: all connections were busy (open loop).
    pub(crate) overloaded: u64,
    pub(crate) in_flight: u64,
    /// p99 of the `ok` latencies since the previous snapshot, if there were any.
    pub(crate) p99: Option<Duration>,
}

/// The measured window's counts, once the run is over.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Requests of the measured window that went on the wire.
    pub sent: u64,
    /// Count per outcome kind (`Outcome`'s display names).
    pub outcomes: BTreeMap<String, u64>,
    /// Latencies of the `ok` requests, in microseconds.
    pub latency_us: Histogram<u64>,
}

/// An empty latency histogram as the bench keeps them: microseconds, 1 µs to 1 h, 3 significant
/// figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_FIGURES)
        .expect("constant histogram bounds are valid. This is a bug.")
}

/// A histogram of one second's latencies: 2 significant figures are plenty for a chart.
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
        .expect("constant histogram bounds are valid. This is a bug.")
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            tally: Mutex::new(Tally {
                outcomes: HashMap::new(),
                latency_us: latency_histogram(),
                ok_all: 0,
                errors_all: 0,
                overloaded_all: 0,
                interval_us: latency_histogram(),
                timeline: Vec::new(),
            }),
            sent_all: AtomicU64::new(0),
            sent_measured: AtomicU64::new(0),
            window_start: OnceLock::new(),
        }
    }
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Tally> {
        // A panic while holding the lock leaves only counters behind: still worth reporting.
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that a request goes on the wire now.
    pub(crate) fn sent(&self, measured: bool) {
        self.sent_all.fetch_add(1, Ordering::Relaxed);
        if measured {
            self.sent_measured.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes how a request ended. `latency` counts only for `ok`; `measured` is false for
    /// warmup requests, which show in the progress line only.
    pub(crate) fn record(&self, outcome: Outcome, latency: Duration, measured: bool) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut tally = self.lock();
        let sent = !matches!(outcome, Outcome::ClientOverloaded);
        if outcome.is_ok() {
            tally.ok_all += 1;
            tally.interval_us.saturating_record(micros);
            if measured {
                tally.latency_us.saturating_record(micros);
            }
        } else if sent {
            tally.errors_all += 1;
        } else {
            tally.overloaded_all += 1;
        }
        if measured {
            if let Some(start) = self.window_start.get() {
                let second = usize::try_from(start.elapsed().as_secs()).unwrap_or(usize::MAX);
                if second < MAX_SECONDS {
                    let shed = matches!(&outcome, Outcome::Http { status: 503, code: Some(c) } if c == "overloaded");
                    let ok = outcome.is_ok();
                    if ok || shed {
                        while tally.timeline.len() <= second {
                            tally.timeline.push(Second {
                                ok: 0,
                                shed: 0,
                                latency_us: second_histogram(),
                            });
                        }
                        let entry = &mut tally.timeline[second];
                        if ok {
                            entry.ok += 1;
                            entry.latency_us.saturating_record(micros);
                        } else {
                            entry.shed += 1;
                        }
                    }
                }
            }
            *tally.outcomes.entry(outcome).or_insert(0) += 1;
        }
    }

    /// Sets when the measured window starts, for the timeline; once.
    pub(crate) fn window_starts_at(&self, at: Instant) {
        let _ = self.window_start.set(at);
    }

    /// The measured window second by second, by when the answers came.
    pub(crate) fn timeline(&self) -> Vec<Second> {
        self.lock().timeline.clone()
    }

    /// The progress line's numbers; starts a new interval for its p99.
    pub(crate) fn live(&self) -> Live {
        let sent = self.sent_all.load(Ordering::Relaxed);
        let mut tally = self.lock();
        let p99 = (!tally.interval_us.is_empty())
            .then(|| Duration::from_micros(tally.interval_us.value_at_quantile(0.99)));
        tally.interval_us.reset();
        let finished = tally.ok_all + tally.errors_all;
        Live {
            sent,
            ok: tally.ok_all,
            errors: tally.errors_all,
            overloaded: tally.overloaded_all,
            in_flight: sent.saturating_sub(finished),
            p99,
        }
    }

    /// A copy of the measured window's counts.
    pub(crate) fn totals(&self) -> Totals {
        let tally = self.lock();
        Totals {
            sent: self.sent_measured.load(Ordering::Relaxed),
            outcomes: tally
                .outcomes
                .iter()
                .map(|(outcome, count)| (outcome.to_string(), *count))
                .collect(),
            latency_us: tally.latency_us.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn counts_only_the_measured_window() {
        let recorder = Recorder::default();
        recorder.sent(false);
        recorder.record(Outcome::Ok, Duration::from_millis(5), false);
        for _ in 0..3 {
            recorder.sent(true);
            recorder.record(Outcome::Ok, Duration::from_millis(10), true);
        }
        recorder.sent(true);
        recorder.record(Outcome::Timeout, Duration::from_secs(60), true);
        recorder.record(Outcome::ClientOverloaded, Duration::ZERO, true);
        recorder.sent(true);

        let live = recorder.live();
        assert_eq!(
            (live.sent, live.ok, live.errors, live.in_flight),
            (6, 4, 1, 1)
        );
        assert_eq!(live.overloaded, 1);
        assert!(live.p99.is_some());
        assert_eq!(recorder.live().p99, None, "the interval restarts");

        let totals = recorder.totals();
        assert_eq!(totals.sent, 5);
        assert_eq!(totals.outcomes["ok"], 3);
        assert_eq!(totals.outcomes["timeout"], 1);
        assert_eq!(totals.outcomes["client_overloaded"], 1);
        assert_eq!(totals.latency_us.len(), 3);
        assert_eq!(totals.latency_us.max(), 10_007); // 10 ms at 3 significant figures
    }

    /// Records 300,000 results (20 s of 15,000 requests/s) from 4 threads at once: nothing is
    /// lost under contention. Prints the cost per record, which must stay a small fraction of a
    /// request's client-side cost; no assertion on time, so a loaded machine cannot fail it.
    #[test]
    fn recorder_counts_exactly_under_contention() {
        let recorder = Arc::new(Recorder::default());
        let started = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let recorder = Arc::clone(&recorder);
                std::thread::spawn(move || {
                    for i in 0..75_000_u64 {
                        recorder.sent(true);
                        let outcome = if i % 100 == 0 {
                            Outcome::Http {
                                status: 429,
                                code: Some("rate_limited".to_owned()),
                            }
                        } else {
                            Outcome::Ok
                        };
                        recorder.record(outcome, Duration::from_micros(thread * 1000 + i), true);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("recording thread");
        }
        let elapsed = started.elapsed();
        let totals = recorder.totals();
        assert_eq!(totals.outcomes.values().sum::<u64>(), 300_000);
        assert_eq!(totals.outcomes["http_429:rate_limited"], 3_000);
        eprintln!(
            "recorder: 300,000 records in {elapsed:?} ({:.0} ns each)",
            elapsed.as_nanos() as f64 / 300_000.0
        );
    }
}
