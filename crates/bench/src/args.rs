//! The `batchgate bench` flags, and their validation into the crate's internal `Config`.

use std::time::Duration;

use clap::{ArgGroup, ValueEnum};
use serde::Serialize;

use crate::arrivals::Burst;
use crate::BenchError;
use batchgate_flags::parse_duration;

/// Default `--url`: a server started with its own defaults on this machine.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Default `--duration`: long enough for a stable p99 at a few thousand requests/s.
pub const DEFAULT_DURATION: &str = "30s";
/// Default `--warmup`: none.
pub const DEFAULT_WARMUP: &str = "0s";
/// Default `--input-bytes`.
pub const DEFAULT_INPUT_BYTES: usize = 2048;
/// Default `--unique-ratio`: every input fresh, so no cache can help the server.
pub const DEFAULT_UNIQUE_RATIO: f64 = 1.0;
/// Default `--wait-ms`: long enough that almost every answer comes on the first call.
pub const DEFAULT_WAIT_MS: u64 = 30_000;
/// Default `--timeout-ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Default `--max-connections`: ~2,500 are in flight at 10,000/s with 250 ms latency.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `--seed`: fixed, so two runs with the same flags send the same load.
pub const DEFAULT_SEED: u64 = 42;
/// Default `--worker-slots`: the simulated worker's default slots (`serve --sim-slots`,
/// `worker --slots`).
pub const DEFAULT_WORKER_SLOTS: usize = 32;
/// Shortest accepted `--burst-secs` and `--burst-every`, in seconds: tokio's timer ticks in
/// milliseconds, so a shorter burst could not be sent as one.
pub const MIN_BURST_SECS: f64 = 0.001;

/// Shortest accepted `--input-bytes`: every fresh input starts with a 16-character sequence
/// number, which is what makes fresh inputs distinct.
pub const MIN_INPUT_BYTES: usize = 16;
/// Longest accepted `--input-bytes` (16 MiB): far past any sensible request body.
pub const MAX_INPUT_BYTES: usize = 16 << 20;

/// Default `--inputs-per-request`.
pub const DEFAULT_INPUTS_PER_REQUEST: usize = 1;
/// Most `--inputs-per-request`: the OpenAI and KServe V2 doors' own limit per request.
pub const MAX_INPUTS_PER_REQUEST: usize = 2048;

/// Which front door the requests go through.
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `POST /v1/inference?wait_ms=…`, polling `GET /v1/result/{id}` while pending; one
    /// input per request.
    Inference,
    /// `POST /v1/embeddings` (OpenAI), `--inputs-per-request` texts each; every embedding is
    /// checked against the one the simulated worker's output stands for.
    Openai,
    /// `POST /v2/models/{model}/infer` (KServe V2), a `BYTES` tensor of
    /// `--inputs-per-request` texts; every row of the output tensor is checked.
    Kserve,
}

/// How intended send times are spaced in open loop.
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArrivalKind {
    /// Exactly `1/rate` apart.
    Fixed,
    /// Exponential gaps with mean `1/rate` (a Poisson process), from the seeded RNG.
    Poisson,
}

/// Flags of `batchgate bench`: drive load at a running batchgate server and report latency,
/// errors and the server's batching.
#[derive(clap::Args, Debug, Clone)]
#[command(group(ArgGroup::new("load").required(true).args(["rate", "concurrency"])))]
pub struct BenchArgs {
    /// Base URL of the batchgate server (plain http). Several, separated by commas (gateways
    /// of one deployment): each request goes to the next in turn, as behind a round-robin
    /// load balancer, and the report's server figures are their metrics added up.
    #[arg(long, env = "BATCHGATE_BENCH_URL", default_value = DEFAULT_URL)]
    pub url: String,

    /// Open loop: send this many requests per second, whatever the latency (latency is counted
    /// from each request's intended send time); with --burst-rate, the rate between bursts.
    /// Exactly one of --rate and --concurrency.
    #[arg(long, env = "BATCHGATE_BENCH_RATE")]
    pub rate: Option<f64>,

    /// Open loop with bursts: send this many requests per second for --burst-secs at the start
    /// of every --burst-every seconds of the measured window (the first burst starts with it),
    /// and --rate in between. E.g. `--rate 500 --burst-rate 15000 --burst-secs 2 --burst-every
    /// 10`. Works with either --arrivals.
    #[arg(
        long,
        env = "BATCHGATE_BENCH_BURST_RATE",
        conflicts_with = "concurrency"
    )]
    pub burst_rate: Option<f64>,

    /// Length of each burst, in seconds (e.g. `2`); less than --burst-every. Only with
    /// --burst-rate.
    #[arg(long, env = "BATCHGATE_BENCH_BURST_SECS")]
    pub burst_secs: Option<f64>,

    /// Period of the bursts, in seconds (e.g. `10`): one burst starts at the start of the
    /// measured window and one every this many seconds after. Only with --burst-rate.
    #[arg(long, env = "BATCHGATE_BENCH_BURST_EVERY")]
    pub burst_every: Option<f64>,

    /// Closed loop: this many clients, each sending its next request as soon as the last one
    /// finished. Exactly one of --rate and --concurrency.
    #[arg(long, env = "BATCHGATE_BENCH_CONCURRENCY")]
    pub concurrency: Option<usize>,

    /// Spacing of send times in open loop: `fixed` (exactly 1/rate apart) or `poisson`
    /// (exponential gaps). Only with --rate.
    #[arg(
        long,
        env = "BATCHGATE_BENCH_ARRIVALS",
        value_enum,
        default_value_t = ArrivalKind::Fixed,
        conflicts_with = "concurrency"
    )]
    pub arrivals: ArrivalKind,

    /// How long to send load after the warmup, e.g. `30s`, `500ms`, `2m`.
    #[arg(long, env = "BATCHGATE_BENCH_DURATION", default_value = DEFAULT_DURATION, value_parser = parse_duration)]
    pub duration: Duration,

    /// Length of every input, in bytes (ASCII); at least 16.
    #[arg(long, env = "BATCHGATE_BENCH_INPUT_BYTES", default_value_t = DEFAULT_INPUT_BYTES)]
    pub input_bytes: usize,

    /// Fraction in [0, 1] of requests whose input is fresh; the others resend an input already
    /// sent (drawn from a pool of recent inputs).
    #[arg(long, env = "BATCHGATE_BENCH_UNIQUE_RATIO", default_value_t = DEFAULT_UNIQUE_RATIO)]
    pub unique_ratio: f64,

    /// `wait_ms` sent with every call: how long the server may hold a call for its result.
    #[arg(long, env = "BATCHGATE_BENCH_WAIT_MS", default_value_t = DEFAULT_WAIT_MS)]
    pub wait_ms: u64,

    /// Client-side timeout of one request, from its send to its final answer (polls included).
    #[arg(long, env = "BATCHGATE_BENCH_TIMEOUT_MS", default_value_t = DEFAULT_TIMEOUT_MS)]
    pub timeout_ms: u64,

    /// Most requests in flight at once (and so most open connections). In open loop a request
    /// due while all are busy is not sent and is counted as `client_overloaded`.
    #[arg(long, env = "BATCHGATE_BENCH_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Seed of the arrival schedule and of the inputs: the same seed sends the same load.
    #[arg(long, env = "BATCHGATE_BENCH_SEED", default_value_t = DEFAULT_SEED)]
    pub seed: u64,

    /// Print the report as JSON instead of a table (stdout carries only the report).
    #[arg(long, env = "BATCHGATE_BENCH_JSON")]
    pub json: bool,

    /// Also write a report with charts to this file (latency over time, latency CDF, batch
    /// sizes, throughput and shed per second): SVG, or self-contained HTML if the name ends in
    /// `.html`.
    #[arg(long, env = "BATCHGATE_BENCH_REPORT", value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,

    /// Do not check outputs against the simulated worker's (for servers running a real model).
    #[arg(long, env = "BATCHGATE_BENCH_NO_CHECK")]
    pub no_check: bool,

    /// Speak HTTP/2 without TLS (prior knowledge): requests share a few connections as
    /// streams instead of one HTTP/1.1 connection per request in flight.
    #[arg(long, env = "BATCHGATE_BENCH_HTTP2")]
    pub http2: bool,

    /// Warmup before the measured window, e.g. `5s`: in open loop the rate ramps linearly from
    /// 0 to --rate over it (so the connection pool grows as in service; bursts start after
    /// it); its requests are sent but not recorded.
    #[arg(long, env = "BATCHGATE_BENCH_WARMUP", default_value = DEFAULT_WARMUP, value_parser = parse_duration)]
    pub warmup: Duration,

    /// Slots of the worker behind the server (the simulated worker's `--sim-slots` or
    /// `--slots`): the report gives the time spent in worker calls as a fraction of them.
    #[arg(long, env = "BATCHGATE_BENCH_WORKER_SLOTS", default_value_t = DEFAULT_WORKER_SLOTS)]
    pub worker_slots: usize,

    /// A bearer token sent with every call (`batchgate token`), for a gateway with
    /// authentication; the body then carries no `client_id`.
    #[arg(long, env = "BATCHGATE_BENCH_BEARER", hide_env_values = true)]
    pub bearer: Option<String>,

    /// The front door to load: `inference` (`POST /v1/inference`, long-polling the result),
    /// `openai` (`POST /v1/embeddings`) or `kserve` (`POST /v2/models/{model}/infer`, KServe
    /// V2 over HTTP). Outputs are checked on each against the simulated worker's; latency is
    /// per request, whatever its inputs.
    #[arg(long, env = "BATCHGATE_BENCH_API", value_enum, default_value_t = Api::Inference)]
    pub api: Api,

    /// Inputs in each request (1 to 2,048): the OpenAI door's `input` array, the KServe V2
    /// tensor's rows. Only 1 with `--api inference`.
    #[arg(long, env = "BATCHGATE_BENCH_INPUTS_PER_REQUEST", default_value_t = DEFAULT_INPUTS_PER_REQUEST)]
    pub inputs_per_request: usize,

    /// The model to name: `model` of `/v1/inference` (left out when not given: the server's
    /// first model) and of `/v1/embeddings`, the path of KServe V2's `infer` (both `default`
    /// when not given, the server's default `--model-name`).
    #[arg(long, env = "BATCHGATE_BENCH_MODEL")]
    pub model: Option<String>,
}

/// Open or closed loop, with what drives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    /// Requests sent on a schedule of `rate` per second, raised to the burst's rate during
    /// bursts.
    Open {
        rate: f64,
        arrivals: ArrivalKind,
        burst: Option<Burst>,
    },
    /// `concurrency` clients in a send-wait loop.
    Closed { concurrency: usize },
}

/// Validated flags: what the rest of the crate reads.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// `--url` as given (several separated by commas), for the report.
    pub(crate) url: String,
    /// Each base URL, without a trailing slash.
    pub(crate) urls: Vec<String>,
    pub(crate) mode: Mode,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) input_bytes: usize,
    pub(crate) unique_ratio: f64,
    pub(crate) wait_ms: u64,
    pub(crate) timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) seed: u64,
    /// Whether outputs are compared with `sim_output(input)`.
    pub(crate) check: bool,
    /// HTTP/2 prior knowledge instead of HTTP/1.1.
    pub(crate) http2: bool,
    /// What the worker's busy time is a fraction of.
    pub(crate) worker_slots: usize,
    /// Sent as `Authorization: Bearer …` with every call.
    pub(crate) bearer: Option<String>,
    /// Where to write the chart report, if anywhere.
    pub(crate) report: Option<std::path::PathBuf>,
    /// The front door.
    pub(crate) api: Api,
    /// Inputs per request.
    pub(crate) inputs_per_request: usize,
    /// The model named, if any.
    pub(crate) model: Option<String>,
}

impl BenchArgs {
    /// Checks the flags together; clap checks each alone, but `run` may be called without clap.
    pub(crate) fn validate(self) -> Result<Config, BenchError> {
        let invalid = |reason: String| Err(BenchError::InvalidArgs(reason));
        let mode = match (self.rate, self.concurrency) {
            (Some(rate), None) => {
                if !(rate.is_finite() && rate > 0.0) {
                    return invalid(format!("--rate must be a positive number, got {rate}"));
                }
                Mode::Open {
                    rate,
                    arrivals: self.arrivals,
                    burst: self.burst()?,
                }
            }
            (None, Some(concurrency)) => {
                if concurrency == 0 || concurrency > self.max_connections {
                    return invalid(format!(
                        "--concurrency must be in 1..={} (--max-connections), got {concurrency}",
                        self.max_connections
                    ));
                }
                if self.arrivals != ArrivalKind::Fixed {
                    return invalid("--arrivals applies only with --rate".to_owned());
                }
                if self.burst_rate.is_some()
                    || self.burst_secs.is_some()
                    || self.burst_every.is_some()
                {
                    return invalid(
                        "--burst-rate, --burst-secs and --burst-every apply only with --rate"
                            .to_owned(),
                    );
                }
                Mode::Closed { concurrency }
            }
            _ => return invalid("give exactly one of --rate and --concurrency".to_owned()),
        };
        if self.duration.is_zero() {
            return invalid("--duration must be more than zero".to_owned());
        }
        if !(MIN_INPUT_BYTES..=MAX_INPUT_BYTES).contains(&self.input_bytes) {
            return invalid(format!(
                "--input-bytes must be in {MIN_INPUT_BYTES}..={MAX_INPUT_BYTES}, got {}",
                self.input_bytes
            ));
        }
        if !(0.0..=1.0).contains(&self.unique_ratio) {
            return invalid(format!(
                "--unique-ratio must be in [0, 1], got {}",
                self.unique_ratio
            ));
        }
        if self.timeout_ms == 0 {
            return invalid("--timeout-ms must be more than zero".to_owned());
        }
        if self.max_connections == 0 {
            return invalid("--max-connections must be more than zero".to_owned());
        }
        if self.worker_slots == 0 {
            return invalid("--worker-slots must be more than zero".to_owned());
        }
        if !(1..=MAX_INPUTS_PER_REQUEST).contains(&self.inputs_per_request) {
            return invalid(format!(
                "--inputs-per-request must be in 1..={MAX_INPUTS_PER_REQUEST}, got {}",
                self.inputs_per_request
            ));
        }
        if self.api == Api::Inference && self.inputs_per_request != 1 {
            return invalid(
                "--inputs-per-request applies only with --api openai or kserve: /v1/inference takes one input"
                    .to_owned(),
            );
        }
        if self.model.as_deref() == Some("") {
            return invalid("--model must not be empty".to_owned());
        }
        let mut urls = Vec::new();
        for url in self.url.split(',').map(str::trim) {
            let url = url.trim_end_matches('/').to_owned();
            match reqwest::Url::parse(&url) {
                // The client is built without TLS: batchgate is benchmarked on its plain-http
                // port.
                Ok(parsed) if parsed.scheme() == "http" => urls.push(url),
                _ => {
                    return invalid(format!(
                        "--url must be plain http:// URLs, separated by commas, got {:?}",
                        self.url
                    ))
                }
            }
        }
        Ok(Config {
            url: urls.join(","),
            urls,
            mode,
            duration: self.duration,
            warmup: self.warmup,
            input_bytes: self.input_bytes,
            unique_ratio: self.unique_ratio,
            wait_ms: self.wait_ms,
            timeout: Duration::from_millis(self.timeout_ms),
            max_connections: self.max_connections,
            seed: self.seed,
            check: !self.no_check,
            http2: self.http2,
            worker_slots: self.worker_slots,
            bearer: self.bearer,
            report: self.report,
            api: self.api,
            inputs_per_request: self.inputs_per_request,
            model: self.model,
        })
    }

    /// The bursts of `--burst-rate`, `--burst-secs` and `--burst-every`: all three or none.
    fn burst(&self) -> Result<Option<Burst>, BenchError> {
        let invalid = |reason: String| Err(BenchError::InvalidArgs(reason));
        let (rate, length, period) = match (self.burst_rate, self.burst_secs, self.burst_every) {
            (None, None, None) => return Ok(None),
            (Some(rate), Some(length), Some(period)) => (rate, length, period),
            (Some(_), _, _) => {
                return invalid("--burst-rate needs --burst-secs and --burst-every".to_owned())
            }
            (None, _, _) => {
                return invalid(
                    "--burst-secs and --burst-every apply only with --burst-rate".to_owned(),
                )
            }
        };
        if !(rate.is_finite() && rate > 0.0) {
            return invalid(format!(
                "--burst-rate must be a positive number, got {rate}"
            ));
        }
        let length = burst_seconds("--burst-secs", length)?;
        let period = burst_seconds("--burst-every", period)?;
        if length >= period {
            return invalid(format!(
                "--burst-secs must be less than --burst-every (a burst is part of each period), \
                 got {} and {}",
                length.as_secs_f64(),
                period.as_secs_f64()
            ));
        }
        Ok(Some(Burst {
            rate,
            length,
            period,
        }))
    }
}

/// A burst flag's seconds as a duration: finite and at least [`MIN_BURST_SECS`].
fn burst_seconds(flag: &str, secs: f64) -> Result<Duration, BenchError> {
    let invalid = || {
        BenchError::InvalidArgs(format!(
            "{flag} must be a number of seconds, at least {MIN_BURST_SECS}, got {secs}"
        ))
    };
    if secs.is_nan() || secs < MIN_BURST_SECS {
        return Err(invalid());
    }
    // Fails on infinity and on values past `Duration::MAX`.
    Duration::try_from_secs_f64(secs).map_err(|_| invalid())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod burst_tests;
