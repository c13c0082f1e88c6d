//! The load generator behind `batchgate bench`.
//!
//! It drives a running batchgate server over its real HTTP API and reports what a client saw
//! (outcomes, latency percentiles, achieved rate) next to what the server did (mean batch size,
//! flush reasons and how busy the worker's slots were, from `/metrics`). Two ways to load it:
//!
//! - **open loop** (`--rate`): requests are sent on a schedule, fixed or Poisson, whatever the
//!   latency; latency counts from each request's *intended* send time, so a stall cannot hide
//!   (no coordinated omission). This is how real traffic behaves and what the batching
//!   trade-off should be judged on. The rate can burst periodically (`--burst-rate`,
//!   `--burst-secs`, `--burst-every`).
//! - **closed loop** (`--concurrency`): a fixed number of clients, each sending its next request
//!   when the last one ended; it finds the throughput ceiling.
//!
//! Every request is bounded by `--timeout-ms`, the number in flight by `--max-connections`, and
//! the run by `--warmup` + `--duration`.
//!
//! Layout:
//! - [`args`]: the flags ([`BenchArgs`]) and their validation.
//! - [`chart`]: the SVG or HTML picture of a run (`--report`), also drawn by `batchgate simulate`.
//! - [`arrivals`]: the open-loop schedule of intended send times (fixed or Poisson, seeded),
//!   following the rate curve (warmup ramp, bursts); public so that `batchgate simulate` sends
//!   the same arrivals.
//! - `inputs`: request inputs, fresh or reused per `--unique-ratio` (seeded).
//! - `client`: one request's lifecycle (POST, long-poll while pending, check the output), on
//!   the front door `--api` names.
//! - `doors`: the OpenAI and KServe V2 doors' bodies and how their answers are judged.
//! - `outcome`: how an answer is classified (`ok`, `http_429:rate_limited`, `timeout`, ...).
//! - `record`: the shared counters and latency histogram.
//! - `drive`: the open and closed loops.
//! - `metrics_scrape`: the server's `/metrics` before and after, and the difference.
//! - `progress`: the once-a-second line on stderr.
//! - [`report`]: the [`Report`], as a table (`Display`) or JSON (`Serialize`).
//! - `error`: [`BenchError`].

pub mod args;
pub mod arrivals;
pub mod chart;
mod client;
mod doors;
mod drive;
mod error;
mod inputs;
mod metrics_scrape;
mod outcome;
mod progress;
mod record;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use args::{ArrivalKind, BenchArgs};
pub use error::BenchError;
pub use metrics_scrape::{ServerDelta, ServerMetrics, WorkerBusy};
pub use record::{latency_histogram, Totals};
pub use report::Report;

use crate::args::{Config, Mode};
use crate::arrivals::{RateCurve, Schedule};
use crate::client::Client;
use crate::drive::Load;
use crate::inputs::Inputs;
use crate::record::Recorder;
use crate::report::{RunConfig, ServerReport};

/// How long past the request timeout the drain waits for the last requests. Each request ends
/// by its own timeout, so this only covers a runtime too busy to run them promptly.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs a benchmark and returns its report. Printing it is the caller's, on stdout, as
/// [`Report::render`] with the `--json` flag read before the call; the progress line goes to
/// stderr meanwhile.
///
/// In order: validate the flags; scrape `/metrics` (an unreachable server fails the run here,
/// before any load); send the load for `warmup + duration`, scraping `/metrics` once more as
/// the measured window starts if there is a warmup; wait for the requests still in flight
/// (each ends by its timeout); scrape `/metrics` again (a failure is noted in the report, not
/// fatal: the client-side numbers are still good).
///
/// Batches and flushes are counted from the first scrape to the last; the worker's busy time
/// from the start of the measured window to the last, so the warmup's ramp does not dilute it.
/// The last scrape is never before the end of the measured window.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let config = args.validate()?;
    raise_open_files_limit(config.max_connections);
    let http = client::build_http(&config)?;
    let before = metrics_scrape::scrape_all(&http, &config.urls).await?;
    tracing::info!(url = %config.url, mode = ?config.mode, "server reachable, starting load");

    let recorder = Arc::new(Recorder::default());
    let inputs = Inputs::new(config.input_bytes, config.unique_ratio, config.seed);
    let load = Load::new(
        Client::new(http.clone(), &config)?,
        Arc::clone(&recorder),
        &config,
    );
    // Without a warmup the measured window starts with the load, just after the first scrape.
    let window_start = if config.warmup.is_zero() {
        None
    } else {
        Some(tokio::spawn(scrape_at(
            http.clone(),
            config.urls.clone(),
            load.measure_from,
        )))
    };
    recorder.window_starts_at(load.measure_from.into_std());
    let stop_progress = CancellationToken::new();
    let progress = progress::spawn(
        Arc::clone(&recorder),
        load.start,
        config.warmup,
        stop_progress.clone(),
    );

    let in_flight = match config.mode {
        Mode::Open {
            rate,
            arrivals,
            burst,
        } => {
            let curve = RateCurve::new(rate, burst, config.warmup);
            let schedule = Schedule::new(arrivals, curve, config.seed);
            drive::open_loop(&load, &config, schedule, inputs).await
        }
        Mode::Closed { concurrency } => {
            drive::closed_loop(&load, concurrency, config.inputs_per_request, inputs)
        }
    };
    let drained = tokio::time::timeout(config.timeout + DRAIN_GRACE, in_flight.wait())
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            left = in_flight.len(),
            "requests still in flight after the drain; counted as abandoned"
        );
    }
    stop_progress.cancel();
    // The progress task only writes to stderr; if it panicked there is nothing to recover.
    let _ = progress.await;

    let window_start = match window_start {
        None => Some((load.measure_from, before.clone())),
        Some(task) => match task.await {
            Ok(Ok(scraped)) => Some(scraped),
            Ok(Err(error)) => {
                tracing::warn!(%error, "scrape at the start of the measured window failed");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "scrape at the start of the measured window panicked");
                None
            }
        },
    };
    // Open loop stops issuing at its last intended send, up to 1/rate before the end of the
    // window; the window's worker time is over the whole window at least.
    let mut bars = Vec::new();
    let server = match scrape_at(http, config.urls.clone(), load.end).await {
        Ok(after) => {
            bars = before.batch_size_bars(&after.1);
            server_report(&config, &before, window_start, &after)
        }
        Err(error) => {
            tracing::warn!(%error, "scrape after the load failed");
            ServerReport {
                delta: ServerDelta::default(),
                worker_busy: None,
                scrape_error: Some(error.to_string()),
            }
        }
    };
    let totals = recorder.totals();
    let report = Report::new(RunConfig::of(&config), totals.clone(), server);
    if let Some(path) = &config.report {
        let charts = charts_of(&report, &totals, &recorder.timeline(), bars);
        chart::write(path, &charts).map_err(|e| BenchError::Report(path.clone(), e))?;
    }
    Ok(report)
}

/// The charts of a run.
fn charts_of(
    report: &Report,
    totals: &Totals,
    timeline: &[record::Second],
    batch_sizes: Vec<(u32, u32, u64)>,
) -> chart::Charts {
    let seconds = timeline
        .iter()
        .enumerate()
        .map(|(t, s)| (t as f64, s))
        .filter(|(t, _)| *t < report.measured_secs);
    let summary = match &report.latency_ms {
        Some(l) => format!(
            "{:.0} ok/s, {} errors ({} shed), p50 {:.1} ms, p99 {:.1} ms, mean batch {:.1}",
            report.achieved_rate,
            report.errors,
            report
                .outcomes
                .get("http_503:overloaded")
                .copied()
                .unwrap_or(0),
            l.p50,
            l.p99,
            report.server.delta.mean_batch_size.unwrap_or(0.0)
        ),
        None => format!("{} sent, none ok", report.sent),
    };
    chart::Charts {
        title: format!("batchgate bench against {}", report.config.url),
        summary,
        latency: seconds
            .clone()
            .filter(|(_, s)| !s.latency_us.is_empty())
            .map(|(t, s)| {
                (
                    t,
                    s.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
                    s.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
                )
            })
            .collect(),
        cdf: chart::cdf_of(&totals.latency_us),
        batch_sizes,
        throughput: seconds
            .map(|(t, s)| (t, s.ok as f64, s.shed as f64))
            .collect(),
    }
}

/// Scrapes `/metrics` at `at` (at once if it is past); returns when the scrape was sent with
/// what it found.
async fn scrape_at(
    http: reqwest::Client,
    urls: Vec<String>,
    at: Instant,
) -> Result<(Instant, ServerMetrics), BenchError> {
    tokio::time::sleep_until(at).await;
    let sent = Instant::now();
    let metrics = metrics_scrape::scrape_all(&http, &urls).await?;
    Ok((sent, metrics))
}

/// The server side of the report from the scrapes before the load, at the start of the measured
/// window (if it worked) and after the load.
fn server_report(
    config: &Config,
    before: &ServerMetrics,
    window_start: Option<(Instant, ServerMetrics)>,
    (end, after): &(Instant, ServerMetrics),
) -> ServerReport {
    let worker_busy = window_start.and_then(|(start, at_start)| {
        at_start.worker_busy(after, end.duration_since(start), config.worker_slots)
    });
    ServerReport {
        delta: before.delta(after),
        worker_busy,
        scrape_error: None,
    }
}

/// Each connection is a file descriptor: raise the soft limit toward the hard one so that
/// `max_connections` can be reached, and say so when it cannot.
fn raise_open_files_limit(max_connections: usize) {
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(256);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            limit = got,
            max_connections,
            "the open-files limit is below --max-connections; expect connect errors"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not raise the open-files limit"),
    }
}
