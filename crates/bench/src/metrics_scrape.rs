//! The server's `/metrics`, scraped before and after the load, and what changed between.
//!
//! Parsed with `prometheus-parse`, a real text-format parser. Samples are matched by name and
//! summed over label sets (several batchers may each export a series), so the plain Prometheus
//! and the OpenMetrics spellings (`# TYPE batchgate_batches counter` + `_total`) both work.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use serde::Serialize;

use crate::error::{chain, BenchError};

/// Sum of the batch-size histogram.
/// The batch-size histogram, whose buckets the report's chart shows.
pub(crate) const BATCH_SIZE: &str = "batchgate_batch_size";
pub(crate) const BATCH_SIZE_SUM: &str = "batchgate_batch_size_sum";
/// Count of the batch-size histogram: how many batches were dispatched.
pub(crate) const BATCH_SIZE_COUNT: &str = "batchgate_batch_size_count";
/// Batches dispatched, by flush `reason` (`full`, `timer`, `drain`, and any added later).
pub(crate) const BATCHES_TOTAL: &str = "batchgate_batches_total";
/// The label of [`BATCHES_TOTAL`] that names the flush reason.
pub(crate) const REASON_LABEL: &str = "reason";
/// Resident memory of the server process, in bytes; optional.
pub(crate) const RESIDENT_MEMORY_BYTES: &str = "batchgate_process_resident_memory_bytes";
/// Sum of the worker-call histogram: seconds spent in worker calls that ended, each call
/// holding one worker slot.
pub(crate) const WORKER_CALL_SECONDS_SUM: &str = "batchgate_worker_call_duration_seconds_sum";

/// Longest wait for one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The values the report needs from one scrape. `None` where the server did not export it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerMetrics {
    /// `batchgate_batch_size_sum`.
    pub batch_size_sum: Option<f64>,
    /// `batchgate_batch_size_count`.
    pub batch_size_count: Option<f64>,
    /// `batchgate_batches_total` by `reason` label value.
    pub batches_by_reason: BTreeMap<String, f64>,
    /// `batchgate_process_resident_memory_bytes`.
    pub resident_memory_bytes: Option<f64>,
    /// `batchgate_worker_call_duration_seconds_sum`.
    pub worker_call_seconds_sum: Option<f64>,
    /// `batchgate_batch_size` buckets: upper bound → cumulative count (labels summed).
    pub batch_size_buckets: BTreeMap<u64, f64>,
}

/// What the server did between two scrapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerDelta {
    /// Batches dispatched (increase of the histogram's count); `None` without the histogram.
    pub batches: Option<u64>,
    /// Mean batch size over those batches; `None` without the histogram or without batches.
    pub mean_batch_size: Option<f64>,
    /// Batches dispatched per flush reason; reasons that did not increase are left out.
    pub flushes: BTreeMap<String, u64>,
    /// Resident memory at the second scrape, in bytes; `None` if not exported.
    pub resident_memory_bytes: Option<u64>,
}

/// How busy the worker was between two scrapes, from the time spent in worker calls.
///
/// A call is counted when it ends, so calls under way at a scrape count in the window where
/// they end; over a window of many calls that is noise. The time is as the batcher sees it
/// (network to the worker included) and includes failed calls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WorkerBusy {
    /// Length of the window, in seconds: from the start of the measured window (after the
    /// warmup) to the scrape after the load, which follows the drain.
    pub worker_busy_window_secs: f64,
    /// Seconds spent in worker calls that ended in the window (increase of the sum of
    /// `batchgate_worker_call_duration_seconds`).
    pub worker_call_seconds: f64,
    /// `worker_call_seconds` per second of the window: slot-seconds per second, i.e. the mean
    /// number of worker calls under way.
    pub worker_busy_slots: f64,
    /// `worker_busy_slots` over `--worker-slots`: 1 means every slot always busy.
    pub worker_busy_fraction: f64,
}

impl ServerMetrics {
    /// Adds another server's figures to these: counts, sums and buckets add up, and so does
    /// the resident memory (of all the servers together). What neither exported stays `None`.
    pub fn add(&mut self, other: &ServerMetrics) {
        fn sum(a: &mut Option<f64>, b: Option<f64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0.0) + b);
            }
        }
        sum(&mut self.batch_size_sum, other.batch_size_sum);
        sum(&mut self.batch_size_count, other.batch_size_count);
        sum(&mut self.resident_memory_bytes, other.resident_memory_bytes);
        sum(
            &mut self.worker_call_seconds_sum,
            other.worker_call_seconds_sum,
        );
        for (reason, n) in &other.batches_by_reason {
            *self.batches_by_reason.entry(reason.clone()).or_default() += n;
        }
        for (bound, n) in &other.batch_size_buckets {
            *self.batch_size_buckets.entry(*bound).or_default() += n;
        }
    }

    /// Reads the metrics the bench uses from a Prometheus text exposition; others are ignored.
    pub fn parse(text: &str) -> Result<Self, std::io::Error> {
        let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))?;
        let mut metrics = ServerMetrics::default();
        for sample in scrape.samples {
            let value = match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(buckets) => {
                    if sample.metric == BATCH_SIZE {
                        for b in buckets.iter().filter(|b| b.less_than.is_finite()) {
                            *metrics
                                .batch_size_buckets
                                .entry(b.less_than.max(0.0) as u64)
                                .or_insert(0.0) += b.count;
                        }
                    }
                    continue;
                }
                Value::Summary(_) => continue,
            };
            if !value.is_finite() {
                continue;
            }
            let add = |slot: &mut Option<f64>| *slot = Some(slot.unwrap_or(0.0) + value);
            match sample.metric.as_str() {
                BATCH_SIZE_SUM => add(&mut metrics.batch_size_sum),
                BATCH_SIZE_COUNT => add(&mut metrics.batch_size_count),
                RESIDENT_MEMORY_BYTES => add(&mut metrics.resident_memory_bytes),
                WORKER_CALL_SECONDS_SUM => add(&mut metrics.worker_call_seconds_sum),
                BATCHES_TOTAL => {
                    let reason = sample.labels.get(REASON_LABEL).unwrap_or("").to_owned();
                    *metrics.batches_by_reason.entry(reason).or_insert(0.0) += value;
                }
                _ => {}
            }
        }
        Ok(metrics)
    }

    /// Batches per size range from `self` (before) to `after`: (lowest, highest size, batches).
    pub fn batch_size_bars(&self, after: &ServerMetrics) -> Vec<(u32, u32, u64)> {
        let mut bars = Vec::new();
        let (mut lo, mut below) = (0u64, 0.0);
        for (le, count) in &after.batch_size_buckets {
            let increase = increase(
                self.batch_size_buckets.get(le).copied().unwrap_or(0.0),
                *count,
            );
            let n = (increase - below).max(0.0).round() as u64;
            below = increase;
            let to = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            bars.push((to(lo.max(1)), to((*le).max(1)), n));
            lo = le + 1;
        }
        bars
    }

    /// What changed from `self` (before) to `after`. A counter lower after than before was
    /// reset (the server restarted), so its increase is its value after, as in PromQL.
    pub fn delta(&self, after: &ServerMetrics) -> ServerDelta {
        let count = increase_of(self.batch_size_count, after.batch_size_count);
        let sum = increase_of(self.batch_size_sum, after.batch_size_sum);
        let mean_batch_size = match (sum, count) {
            (Some(sum), Some(count)) if count > 0.0 => Some(sum / count),
            _ => None,
        };
        let flushes = after
            .batches_by_reason
            .iter()
            .filter_map(|(reason, now)| {
                let before = self.batches_by_reason.get(reason).copied().unwrap_or(0.0);
                let delta = increase(before, *now);
                (delta > 0.0).then(|| (reason.clone(), delta.round() as u64))
            })
            .collect();
        ServerDelta {
            batches: count.map(|count| count.round() as u64),
            mean_batch_size,
            flushes,
            resident_memory_bytes: after.resident_memory_bytes.map(|bytes| bytes as u64),
        }
    }

    /// How busy the worker's `slots` were from `self` to `after`, `window` apart. `None` if
    /// the server does not export the worker-call histogram, or the window is empty.
    pub fn worker_busy(
        &self,
        after: &ServerMetrics,
        window: Duration,
        slots: usize,
    ) -> Option<WorkerBusy> {
        let call_seconds =
            increase_of(self.worker_call_seconds_sum, after.worker_call_seconds_sum)?;
        let window_secs = window.as_secs_f64();
        if window_secs <= 0.0 || slots == 0 {
            return None;
        }
        let busy_slots = call_seconds / window_secs;
        Some(WorkerBusy {
            worker_busy_window_secs: window_secs,
            worker_call_seconds: call_seconds,
            worker_busy_slots: busy_slots,
            worker_busy_fraction: busy_slots / slots as f64,
        })
    }
}

fn increase(before: f64, after: f64) -> f64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

fn increase_of(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(increase(before.unwrap_or(0.0), after?))
}

/// Scrapes `{url}/metrics` of every server and adds them up ([`ServerMetrics::add`]). Any
/// failure is an error.
pub(crate) async fn scrape_all(
    http: &reqwest::Client,
    urls: &[String],
) -> Result<ServerMetrics, BenchError> {
    let mut total = ServerMetrics::default();
    for url in urls {
        total.add(&scrape(http, url).await?);
    }
    Ok(total)
}

/// Scrapes `{url}/metrics`. Any failure is an error: the first scrape is how a run finds out
/// that the server is not there.
pub(crate) async fn scrape(http: &reqwest::Client, url: &str) -> Result<ServerMetrics, BenchError> {
    let url = format!("{url}/metrics");
    let unreachable = |error: reqwest::Error| BenchError::Unreachable {
        url: url.clone(),
        reason: chain(&error),
    };
    let response = http
        .get(&url)
        .timeout(SCRAPE_TIMEOUT)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if !status.is_success() {
        return Err(BenchError::MetricsStatus {
            url,
            status: status.as_u16(),
        });
    }
    let text = response.text().await.map_err(unreachable)?;
    ServerMetrics::parse(&text).map_err(|error| BenchError::MetricsParse {
        url,
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# HELP batchgate_batch_size Tasks per dispatched batch.
# TYPE batchgate_batch_size histogram
batchgate_batch_size_bucket{le=\"1\"} 2
batchgate_batch_size_bucket{le=\"8\"} 5
batchgate_batch_size_bucket{le=\"+Inf\"} 10
batchgate_batch_size_sum 40
batchgate_batch_size_count 10
# HELP batchgate_batches_total Batches dispatched, by why they were flushed.
# TYPE batchgate_batches_total counter
batchgate_batches_total{reason=\"full\"} 6
batchgate_batches_total{reason=\"timer\"} 4
# TYPE batchgate_process_resident_memory_bytes gauge
batchgate_process_resident_memory_bytes 1.5e7
# HELP batchgate_worker_call_duration_seconds Duration of one worker call.
# TYPE batchgate_worker_call_duration_seconds histogram
batchgate_worker_call_duration_seconds_bucket{le=\"0.1\"} 1
batchgate_worker_call_duration_seconds_bucket{le=\"+Inf\"} 10
batchgate_worker_call_duration_seconds_sum 2.5
batchgate_worker_call_duration_seconds_count 10
";

    // OpenMetrics spelling, as prometheus-client writes it, with a new reason and two batchers.
    const AFTER: &str = "\
# TYPE batchgate_batch_size histogram
batchgate_batch_size_bucket{le=\"1\",batcher=\"a\"} 2
batchgate_batch_size_bucket{le=\"+Inf\",batcher=\"a\"} 60
batchgate_batch_size_sum{batcher=\"a\"} 440
batchgate_batch_size_count{batcher=\"a\"} 60
batchgate_batch_size_bucket{le=\"+Inf\",batcher=\"b\"} 50
batchgate_batch_size_sum{batcher=\"b\"} 500
batchgate_batch_size_count{batcher=\"b\"} 50
# TYPE batchgate_batches counter
batchgate_batches_total{reason=\"full\",batcher=\"a\"} 56
batchgate_batches_total{reason=\"full\",batcher=\"b\"} 30
batchgate_batches_total{reason=\"timer\",batcher=\"a\"} 4
batchgate_batches_total{reason=\"drain\",batcher=\"b\"} 20
batchgate_process_resident_memory_bytes 2.5e7
# TYPE batchgate_worker_call_duration_seconds histogram
batchgate_worker_call_duration_seconds_bucket{le=\"+Inf\",batcher=\"a\"} 60
batchgate_worker_call_duration_seconds_sum{batcher=\"a\"} 20.5
batchgate_worker_call_duration_seconds_count{batcher=\"a\"} 60
batchgate_worker_call_duration_seconds_bucket{le=\"+Inf\",batcher=\"b\"} 50
batchgate_worker_call_duration_seconds_sum{batcher=\"b\"} 14
batchgate_worker_call_duration_seconds_count{batcher=\"b\"} 50
# EOF
";

    #[test]
    fn servers_scraped_together_add_up() {
        let one = ServerMetrics::parse(BEFORE).expect("parses");
        let mut total = ServerMetrics::default();
        total.add(&one);
        total.add(&one);
        assert_eq!(total.batch_size_sum, Some(80.0));
        assert_eq!(total.batch_size_count, Some(20.0));
        assert_eq!(total.batches_by_reason["full"], 12.0);
        assert_eq!(
            total.batch_size_buckets[&8],
            2.0 * one.batch_size_buckets[&8]
        );
        // Nothing exported by either: still nothing.
        let mut none = ServerMetrics::default();
        none.add(&ServerMetrics::default());
        assert_eq!(none, ServerMetrics::default());
    }

    #[test]
    fn parses_the_metrics_it_needs() {
        let before = ServerMetrics::parse(BEFORE).expect("parses");
        assert_eq!(before.batch_size_sum, Some(40.0));
        assert_eq!(before.batch_size_count, Some(10.0));
        assert_eq!(before.batches_by_reason["full"], 6.0);
        assert_eq!(before.batches_by_reason["timer"], 4.0);
        assert_eq!(before.resident_memory_bytes, Some(15_000_000.0));
        assert_eq!(before.worker_call_seconds_sum, Some(2.5));

        let after = ServerMetrics::parse(AFTER).expect("parses");
        assert_eq!(after.batch_size_sum, Some(940.0));
        assert_eq!(after.batch_size_count, Some(110.0));
        assert_eq!(after.batches_by_reason["full"], 86.0);
        assert_eq!(after.worker_call_seconds_sum, Some(34.5));
    }

    #[test]
    fn worker_busy_is_call_time_per_second_per_slot() {
        let before = ServerMetrics::parse(BEFORE).expect("parses");
        let after = ServerMetrics::parse(AFTER).expect("parses");
        // 32 s in calls over 4 s: 8 slots busy on average, a quarter of 32.
        let busy = before
            .worker_busy(&after, Duration::from_secs(4), 32)
            .expect("exported");
        assert_eq!(
            busy,
            WorkerBusy {
                worker_busy_window_secs: 4.0,
                worker_call_seconds: 32.0,
                worker_busy_slots: 8.0,
                worker_busy_fraction: 0.25,
            }
        );
        // A restarted server counts from zero.
        let reset = after
            .worker_busy(&before, Duration::from_secs(1), 5)
            .expect("exported");
        assert_eq!(reset.worker_call_seconds, 2.5);
        assert_eq!(reset.worker_busy_fraction, 0.5);
        let empty = ServerMetrics::default();
        assert_eq!(empty.worker_busy(&empty, Duration::from_secs(1), 32), None);
        assert_eq!(before.worker_busy(&after, Duration::ZERO, 32), None);
    }

    #[test]
    fn deltas_between_two_scrapes() {
        let before = ServerMetrics::parse(BEFORE).expect("parses");
        let after = ServerMetrics::parse(AFTER).expect("parses");
        let delta = before.delta(&after);
        assert_eq!(delta.batches, Some(100));
        assert_eq!(delta.mean_batch_size, Some(9.0)); // (940 - 40) / (110 - 10)
        let flushes: Vec<_> = delta
            .flushes
            .iter()
            .map(|(r, n)| (r.as_str(), *n))
            .collect();
        assert_eq!(flushes, [("drain", 20), ("full", 80)]); // timer did not move
        assert_eq!(delta.resident_memory_bytes, Some(25_000_000));
    }

    #[test]
    fn missing_metrics_are_none() {
        let empty = ServerMetrics::parse("# nothing here\nother_metric 3\n").expect("parses");
        assert_eq!(empty, ServerMetrics::default());
        let delta = empty.delta(&empty);
        assert_eq!(delta, ServerDelta::default());
        // No batches between the scrapes: no mean, rather than NaN.
        let before = ServerMetrics::parse(BEFORE).expect("parses");
        assert_eq!(before.delta(&before).mean_batch_size, None);
        assert_eq!(before.delta(&before).batches, Some(0));
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        let after = ServerMetrics::parse(BEFORE).expect("parses");
        let before = ServerMetrics::parse(AFTER).expect("parses");
        let delta = before.delta(&after);
        assert_eq!(delta.batches, Some(10));
        assert_eq!(delta.mean_batch_size, Some(4.0));
    }
}
