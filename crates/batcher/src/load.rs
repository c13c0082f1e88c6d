//! The batcher's report of its workers' load ([`WorkerLoad`]), for the gateways' shedding:
//! how much of the recent past every worker slot was in a worker call, and what the slots get
//! through when they are (slots × mean batch size ÷ mean call time). Only calls count, not a
//! slot held while its batch gathers or its results are stored: on a machine short of CPU
//! those stretches grow while the worker idles. And when the worker knows what a call costs
//! it (an in-process model), calls that ran longer than that were slowed by the machine, not
//! the worker: the busy share is counted in the worker's own time, the measured share ÷ how
//! much longer the calls took than the worker says they take, so a starved process whose
//! slots fill only because every call runs late does not pass for saturated workers.
//! Arithmetic on figures the caller passes in, with the time as an argument, so it is tested
//! with a fake clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use batchgate_queue::WorkerLoad;

/// How often a batcher reports.
pub const REPORT_EVERY: Duration = Duration::from_millis(250);
/// Weight of a new sample in the smoothed figures (≈ 1 s of reports at [`REPORT_EVERY`]).
const WEIGHT: f64 = 0.3;

/// Smoothed batch sizes, call times and busy share. Shared by the dispatches (which record
/// their batches) and the reporter (which samples).
#[derive(Debug, Default)]
pub struct LoadMeter {
    inner: Mutex<Meter>,
}

#[derive(Debug, Default)]
struct Meter {
    /// Worker calls under way.
    calling: usize,
    /// Since when every slot has been in a call, while they are.
    full_since: Option<Instant>,
    /// Time every slot was in a call, over past stretches.
    full_before: Duration,
    /// Smoothed size of the batches sent to the worker; 0 before the first.
    batch_size: f64,
    /// Smoothed duration of a batch's worker call, in milliseconds.
    call_ms: f64,
    /// Smoothed share of time every slot was taken.
    busy: f64,
    /// The previous sample: when, and the slots' full time by then.
    last: Option<(Instant, Duration)>,
    /// Since the previous sample, calls whose worker gave its own time: their measured time
    /// and the worker's.
    measured: Duration,
    expected: Duration,
    /// Smoothed ratio of measured to expected call time (at least 1); 1 before any call
    /// with an expected time.
    stretch: f64,
}

impl LoadMeter {
    /// A worker call starts at `now`, with `slots` allowed at once.
    pub fn call_started(&self, now: Instant, slots: usize) {
        let mut m = self.lock();
        m.calling += 1;
        if m.calling >= slots && m.full_since.is_none() {
            m.full_since = Some(now);
        }
    }

    /// A worker call ends at `now`.
    pub fn call_ended(&self, now: Instant, slots: usize) {
        let mut m = self.lock();
        m.calling = m.calling.saturating_sub(1);
        if m.calling < slots {
            if let Some(since) = m.full_since.take() {
                m.full_before += now.saturating_duration_since(since);
            }
        }
    }

    /// One worker call took `took`, where the worker says such a call costs it `expected`
    /// ([`batchgate_worker::Worker::expected_call`]). Only calls that succeeded at once are
    /// told: a retry's wait or a failed call says nothing about the machine.
    pub fn call_timed(&self, took: Duration, expected: Duration) {
        if expected.is_zero() {
            return;
        }
        let mut m = self.lock();
        m.measured += took;
        m.expected += expected;
    }

    /// A batch of `size` inputs went to the worker and took `took`.
    pub fn batch_done(&self, size: usize, took: Duration) {
        let mut m = self.lock();
        let (size, ms) = (size as f64, took.as_secs_f64() * 1000.0);
        if m.batch_size == 0.0 {
            (m.batch_size, m.call_ms) = (size, ms);
        } else {
            m.batch_size += WEIGHT * (size - m.batch_size);
            m.call_ms += WEIGHT * (ms - m.call_ms);
        }
    }

    /// The load at `now`, with `slots` allowed at once.
    pub fn sample(&self, now: Instant, slots: usize) -> WorkerLoad {
        let mut m = self.lock();
        let full_time = m.full_before
            + m.full_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        if !m.expected.is_zero() {
            let ratio = (m.measured.as_secs_f64() / m.expected.as_secs_f64()).max(1.0);
            m.stretch = if m.stretch < 1.0 {
                ratio
            } else {
                m.stretch + WEIGHT * (ratio - m.stretch)
            };
            (m.measured, m.expected) = (Duration::ZERO, Duration::ZERO);
        }
        if let Some((then, full_then)) = m.last {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            if dt > 0.0 {
                let share = (full_time.saturating_sub(full_then).as_secs_f64() / dt).min(1.0);
                // In the worker's own time: the slots would have been full this much less
                // had the calls taken what the worker says they take.
                let share = share / m.stretch.max(1.0);
                m.busy += WEIGHT * (share - m.busy);
            }
        }
        m.last = Some((now, full_time));
        let capacity = if m.call_ms > 0.0 {
            slots as f64 * m.batch_size / (m.call_ms / 1000.0)
        } else {
            0.0
        };
        WorkerLoad {
            busy: m.busy,
            capacity,
            call_ms: m.call_ms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Meter> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn capacity_comes_from_batches_and_busy_from_calls_on_every_slot() {
        let meter = LoadMeter::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Nothing completed: no capacity yet, and nothing busy.
        let first = meter.sample(t0, 2);
        assert_eq!((first.capacity, first.busy), (0.0, 0.0));
        // One call of two slots: not full. Full batches of 64 in 200 ms: 640 tasks a second.
        meter.call_started(t0, 2);
        meter.batch_done(64, 200 * MS);
        let one = meter.sample(at(250), 2);
        assert!((one.capacity - 640.0).abs() < 1e-6, "{one:?}");
        assert_eq!(one.busy, 0.0, "a slot without a call");
        // Both slots in calls from 250 ms on: busy climbs towards 1.
        meter.call_started(at(250), 2);
        let mut load = one;
        for i in 2..=21u64 {
            load = meter.sample(at(250 * i), 2);
        }
        assert!(load.busy > 0.99, "{load:?}");
        // One call ends: busy falls away, though the other slot stays taken.
        meter.call_ended(at(250 * 21), 2);
        for i in 22..=41u64 {
            load = meter.sample(at(250 * i), 2);
        }
        assert!(load.busy < 0.01, "{load:?}");
        assert_eq!(load.call_ms, 200.0);
    }
}
