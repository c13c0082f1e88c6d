//! The batcher's report of its workers' load ([`WorkerLoad`]), for the gateways' shedding:
//! how much of the recent past every worker slot was in a worker call, and what the slots get
//! through when they are (slots × mean batch size ÷ mean call time). Only calls count, not a
//! slot held while its batch gathers or its results are stored: on a machine short of CPU
//! those stretches grow while the worker idles. Arithmetic on figures the caller passes in,
//! with the time as an argument, so it is tested with a fake clock.

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
        if let Some((then, full_then)) = m.last {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            if dt > 0.0 {
                let share = (full_time.saturating_sub(full_then).as_secs_f64() / dt).min(1.0);
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
