//! The result of a run: a human table (`Display`) or JSON (`Serialize`).

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::args::{Api, ArrivalKind, Config, Mode};
use crate::metrics_scrape::{ServerDelta, WorkerBusy};
use crate::record::Totals;

/// Outcome kind of measured requests still unanswered when the drain gave up.
pub(crate) const ABANDONED: &str = "abandoned";

/// Everything a run measured.
///
/// Invariant: the `outcomes` counts add up to `sent` plus `outcomes["client_overloaded"]`
/// (requests that were due but never sent).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The flags of the run.
    pub config: RunConfig,
    /// Length of the measured window (the `--duration`), in seconds.
    pub measured_secs: f64,
    /// Requests of the measured window that were sent.
    pub sent: u64,
    /// Requests that ended `ok`.
    pub ok: u64,
    /// Requests that ended in any other way (including never sent or never answered).
    pub errors: u64,
    /// `ok` requests per second of the measured window.
    pub achieved_rate: f64,
    /// Count per outcome kind: `ok`, `wrong_output`, `failed`, `http_<status>[:<code>]`,
    /// `bad_response`, `timeout`, `connect`, `io`, `client_overloaded`, `abandoned`.
    pub outcomes: BTreeMap<String, u64>,
    /// Latency of the `ok` requests; `None` when there were none.
    pub latency_ms: Option<Latency>,
    /// What the server's `/metrics` said about the run.
    pub server: ServerReport,
}

/// The flags of the run, echoed so a saved report says what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Base URL of the server.
    pub url: String,
    /// `open` (`--rate`) or `closed` (`--concurrency`).
    pub mode: &'static str,
    /// Intended requests per second (open loop); with bursts, the rate between them.
    pub rate: Option<f64>,
    /// Intended requests per second during bursts (open loop with `--burst-rate`).
    pub burst_rate: Option<f64>,
    /// Length of each burst, in seconds.
    pub burst_secs: Option<f64>,
    /// Period of the bursts, in seconds; one starts with the measured window.
    pub burst_every_secs: Option<f64>,
    /// Mean intended requests per second over a period of bursts.
    pub burst_mean_rate: Option<f64>,
    /// Spacing of send times (open loop).
    pub arrivals: Option<ArrivalKind>,
    /// Clients in the send-wait loop (closed loop).
    pub concurrency: Option<usize>,
    /// Measured window, in seconds.
    pub duration_secs: f64,
    /// Unrecorded load before it, in seconds.
    pub warmup_secs: f64,
    /// Length of every input.
    pub input_bytes: usize,
    /// Fraction of requests with a fresh input.
    pub unique_ratio: f64,
    /// `wait_ms` sent with each call.
    pub wait_ms: u64,
    /// Client-side timeout of one request.
    pub timeout_ms: u64,
    /// Cap on requests in flight.
    pub max_connections: usize,
    /// Seed of the schedule and the inputs.
    pub seed: u64,
    /// Whether outputs were checked against `sim_output`.
    pub check: bool,
    /// Worker slots the worker's busy time is a fraction of (`--worker-slots`).
    pub worker_slots: usize,
    /// The front door loaded (`--api`): `inference`, `openai` or `kserve`.
    pub api: Api,
    /// Inputs in each request (`--inputs-per-request`); latency and counts are per request.
    pub inputs_per_request: usize,
    /// The model named (`--model`), if any.
    pub model: Option<String>,
}

/// Latency percentiles, in milliseconds, from when the request was due (open loop) or sent
/// (closed loop) to its final answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// How many latencies this summarises.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Highest.
    pub max: f64,
}

/// The server side of the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServerReport {
    /// Changes between the scrape before and the scrape after the load.
    #[serde(flatten)]
    pub delta: ServerDelta,
    /// How busy the worker was over the measured window; `None` (the fields left out of the
    /// JSON) if the server does not export the worker-call histogram or a scrape failed.
    #[serde(flatten)]
    pub worker_busy: Option<WorkerBusy>,
    /// Why the scrape after the load failed, if it did (the delta is then empty).
    pub scrape_error: Option<String>,
}

impl Latency {
    /// Summarises a histogram of microseconds; `None` if it is empty.
    pub(crate) fn of(histogram_us: &Histogram<u64>) -> Option<Latency> {
        if histogram_us.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Latency {
            count: histogram_us.len(),
            mean: histogram_us.mean() / 1000.0,
            p50: ms(histogram_us.value_at_quantile(0.50)),
            p90: ms(histogram_us.value_at_quantile(0.90)),
            p99: ms(histogram_us.value_at_quantile(0.99)),
            p999: ms(histogram_us.value_at_quantile(0.999)),
            max: ms(histogram_us.max()),
        })
    }
}

impl RunConfig {
    pub(crate) fn of(config: &Config) -> RunConfig {
        let (mode, rate, arrivals, burst, concurrency) = match config.mode {
            Mode::Open {
                rate,
                arrivals,
                burst,
            } => ("open", Some(rate), Some(arrivals), burst, None),
            Mode::Closed { concurrency } => ("closed", None, None, None, Some(concurrency)),
        };
        RunConfig {
            url: config.url.clone(),
            mode,
            rate,
            burst_rate: burst.map(|burst| burst.rate),
            burst_secs: burst.map(|burst| burst.length.as_secs_f64()),
            burst_every_secs: burst.map(|burst| burst.period.as_secs_f64()),
            burst_mean_rate: burst.zip(rate).map(|(burst, rate)| burst.mean_rate(rate)),
            arrivals,
            concurrency,
            duration_secs: config.duration.as_secs_f64(),
            warmup_secs: config.warmup.as_secs_f64(),
            input_bytes: config.input_bytes,
            unique_ratio: config.unique_ratio,
            wait_ms: config.wait_ms,
            timeout_ms: u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
            max_connections: config.max_connections,
            seed: config.seed,
            check: config.check,
            worker_slots: config.worker_slots,
            api: config.api,
            inputs_per_request: config.inputs_per_request,
            model: config.model.clone(),
        }
    }
}

impl Report {
    /// Builds the report from the recorder's totals (or a simulator's). Requests sent but never
    /// recorded (the drain gave up on them) are counted as `abandoned`, so the counts always
    /// add up.
    pub fn new(config: RunConfig, totals: Totals, server: ServerReport) -> Report {
        let Totals {
            sent,
            mut outcomes,
            latency_us,
        } = totals;
        let overloaded = outcomes.get("client_overloaded").copied().unwrap_or(0);
        let answered = outcomes.values().sum::<u64>() - overloaded;
        if sent > answered {
            outcomes.insert(ABANDONED.to_owned(), sent - answered);
        }
        let ok = outcomes.get("ok").copied().unwrap_or(0);
        let errors = outcomes.values().sum::<u64>() - ok;
        let measured_secs = config.duration_secs;
        Report {
            config,
            measured_secs,
            sent,
            ok,
            errors,
            achieved_rate: ok as f64 / measured_secs,
            outcomes,
            latency_ms: Latency::of(&latency_us),
            server,
        }
    }

    /// The report as pretty JSON (what `--json` prints).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes. This is a bug.")
    }

    /// What `batchgate bench` prints on stdout: [`Report::to_json`] with `--json`, else the
    /// table of `Display`.
    pub fn render(&self, json: bool) -> String {
        if json {
            self.to_json()
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        match (c.rate, c.arrivals, c.concurrency) {
            (Some(rate), Some(arrivals), _) => {
                let arrivals = match arrivals {
                    ArrivalKind::Fixed => "fixed",
                    ArrivalKind::Poisson => "poisson",
                };
                writeln!(f, "open loop, {rate} requests/s ({arrivals} arrivals)")?;
                if let (Some(burst_rate), Some(secs), Some(every), Some(mean)) = (
                    c.burst_rate,
                    c.burst_secs,
                    c.burst_every_secs,
                    c.burst_mean_rate,
                ) {
                    writeln!(
                        f,
                        "  {:<22}{burst_rate} requests/s for {secs}s every {every}s from the start \
                         of the measured window, {rate}/s between (mean {mean:.1}/s)",
                        "bursts"
                    )?;
                }
            }
            (_, _, Some(concurrency)) => writeln!(f, "closed loop, concurrency {concurrency}")?,
            _ => writeln!(f, "{} loop", c.mode)?,
        }
        writeln!(
            f,
            "  {:<22}{}s (+{}s warmup) against {}",
            "duration", c.duration_secs, c.warmup_secs, c.url
        )?;
        writeln!(
            f,
            "  {:<22}{} bytes, unique ratio {}, wait_ms {}, timeout {} ms{}",
            "inputs",
            c.input_bytes,
            c.unique_ratio,
            c.wait_ms,
            c.timeout_ms,
            if c.check { "" } else { ", outputs not checked" }
        )?;
        if c.api != Api::Inference || c.model.is_some() {
            writeln!(
                f,
                "  {:<22}{:?}, {} inputs per request, model {}",
                "front door",
                c.api,
                c.inputs_per_request,
                c.model.as_deref().unwrap_or("(default)")
            )?;
        }
        writeln!(f, "requests")?;
        writeln!(f, "  {:<22}{}", "sent", self.sent)?;
        writeln!(f, "  {:<22}{} ({:.1}/s)", "ok", self.ok, self.achieved_rate)?;
        writeln!(f, "  {:<22}{}", "errors", self.errors)?;
        for (kind, count) in self.outcomes.iter().filter(|(kind, _)| *kind != "ok") {
            writeln!(f, "    {kind:<20}{count}")?;
        }
        writeln!(f, "latency of ok requests (ms)")?;
        match &self.latency_ms {
            Some(l) => {
                for (name, value) in [
                    ("p50", l.p50),
                    ("p90", l.p90),
                    ("p99", l.p99),
                    ("p99.9", l.p999),
                    ("max", l.max),
                    ("mean", l.mean),
                ] {
                    writeln!(f, "  {name:<22}{value:.2}")?;
                }
            }
            None => writeln!(f, "  none")?,
        }
        writeln!(f, "server")?;
        let s = &self.server.delta;
        match (s.mean_batch_size, s.batches) {
            (Some(mean), Some(batches)) => writeln!(
                f,
                "  {:<22}{mean:.2} over {batches} batches",
                "mean batch size"
            )?,
            _ => writeln!(f, "  {:<22}n/a", "mean batch size")?,
        }
        match &self.server.worker_busy {
            Some(busy) => writeln!(
                f,
                "  {:<22}{:.2} slot-seconds/s = {:.1}% of {} slots (over {:.1}s)",
                "worker busy",
                busy.worker_busy_slots,
                busy.worker_busy_fraction * 100.0,
                c.worker_slots,
                busy.worker_busy_window_secs
            )?,
            None => writeln!(f, "  {:<22}n/a", "worker busy")?,
        }
        let flushes: Vec<String> = s
            .flushes
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect();
        let flushes = if flushes.is_empty() {
            "n/a".to_owned()
        } else {
            flushes.join(", ")
        };
        writeln!(f, "  {:<22}{flushes}", "flushes")?;
        match s.resident_memory_bytes {
            Some(bytes) => writeln!(
                f,
                "  {:<22}{:.1} MiB",
                "resident memory",
                bytes as f64 / (1024.0 * 1024.0)
            )?,
            None => writeln!(f, "  {:<22}n/a", "resident memory")?,
        }
        if let Some(error) = &self.server.scrape_error {
            writeln!(f, "  {:<22}{error}", "scrape after failed")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
