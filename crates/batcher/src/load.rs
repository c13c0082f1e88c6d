//! The batcher's report of its workers' load ([`WorkerLoad`]), for the gateways' shedding:
//! how much of the recent past every worker slot was taken, and what the slots get through
//! when they are (slots × mean batch size ÷ mean call time). Pure arithmetic on figures the
//! caller passes in, with the time as an argument, so it is tested with a fake clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use batchgate_queue::WorkerLoad;

/// How often a batcher reports.
pub(crate) const REPORT_EVERY: Duration = Duration::from_millis(250);
/// Weight of a new sample in the smoothed figures (≈ 1 s of reports at [`REPORT_EVERY`]).
const WEIGHT: f64 = 0.3;

/// Smoothed batch sizes, call times and busy share. Shared by the dispatches (which record
/// their batches) and the reporter (which samples).
#[derive(Debug, Default)]
pub(crate) struct LoadMeter {
    inner: Mutex<Meter>,
}

#[derive(Debug, Default)]
struct Meter {
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
    /// A batch of `size` inputs went to the worker and took `took`.
    pub(crate) fn batch_done(&self, size: usize, took: Duration) {
        let mut m = self.lock();
        let (size, ms) = (size as f64, took.as_secs_f64() * 1000.0);
        if m.batch_size == 0.0 {
            (m.batch_size, m.call_ms) = (size, ms);
        } else {
            m.batch_size += WEIGHT * (size - m.batch_size);
            m.call_ms += WEIGHT * (ms - m.call_ms);
        }
    }

    /// The load at `now`, given the slots' full time so far and their limit.
    pub(crate) fn sample(&self, now: Instant, full_time: Duration, slots: usize) -> WorkerLoad {
        let mut m = self.lock();
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
    fn capacity_comes_from_batches_and_busy_from_full_slots() {
        let meter = LoadMeter::default();
        let t0 = Instant::now();
        // Nothing completed: no capacity yet, and nothing busy.
        let first = meter.sample(t0, Duration::ZERO, 2);
        assert_eq!((first.capacity, first.busy), (0.0, 0.0));
        // Full batches of 64 in 200 ms on 2 slots: 640 tasks a second.
        meter.batch_done(64, 200 * MS);
        // Every slot taken for the whole of each interval: busy climbs towards 1.
        let mut load = first;
        for i in 1..=20u32 {
            load = meter.sample(t0 + 250 * MS * i, 250 * MS * i, 2);
        }
        assert!((load.capacity - 640.0).abs() < 1e-6, "{load:?}");
        assert!(load.busy > 0.99, "{load:?}");
        // Then idle slots: busy falls away.
        for i in 21..=40u32 {
            load = meter.sample(t0 + 250 * MS * i, 250 * MS * 20, 2);
        }
        assert!(load.busy < 0.01, "{load:?}");
        assert_eq!(load.call_ms, 200.0);
    }
}
