//! What a simulation measured, in the bench's terms.

use std::collections::BTreeMap;
use std::time::Duration;

use batchgate_policy::FlushReason;
use hdrhistogram::Histogram;

/// One batch that went to a worker, for comparing batch boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// Which batcher sent it.
    pub batcher: usize,
    /// When it left the buffer, since the start.
    pub at: Duration,
    /// The indexes of its requests, in send order.
    pub requests: Vec<u64>,
    /// Why it left.
    pub reason: FlushReason,
}

/// One point of the time series.
#[derive(Debug, Clone)]
pub struct Point {
    /// Requests answered `ok` in this point's interval.
    pub ok: u64,
    /// Requests shed in it.
    pub shed: u64,
    /// Latencies (µs) of the `ok` answers in it.
    pub latency_us: Histogram<u64>,
}

/// What a simulation measured, in the bench's terms.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Requests of the measured window.
    pub sent: u64,
    /// Requests in all, warmup included.
    pub requests: u64,
    /// Count per outcome kind, named as the bench names them.
    pub outcomes: BTreeMap<String, u64>,
    /// Latencies (µs) of the measured window's `ok` requests.
    pub latency_us: Histogram<u64>,
    /// Batches sent, warmup included (as the bench's scrapes count them).
    pub batches: u64,
    /// Inputs over those batches.
    pub batched_items: u64,
    /// Batches by flush reason.
    pub flushes: BTreeMap<&'static str, u64>,
    /// Batches by size: `batch_sizes[n]` batches of `n` inputs.
    pub batch_sizes: Vec<u64>,
    /// Slot-seconds spent in worker calls within the measured window.
    pub worker_call_seconds: f64,
    /// Worker slots in all.
    pub total_slots: usize,
    /// The measured window.
    pub measured: Duration,
    /// Seconds per time-series point.
    pub point_secs: u64,
    /// The time series over the measured window.
    pub points: Vec<Point>,
    /// Events handled (arrivals, wake-ups of batchers, call completions, samples).
    pub events: u64,
    /// Every batch, when asked for.
    pub batch_log: Option<Vec<BatchRecord>>,
}
