//! The flags of `batchgate simulate`: the bench's load flags and `serve`'s batching and worker
//! flags under the same names, and what a run prints.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use batchgate_bench::arrivals::Burst;
use batchgate_bench::{ArrivalKind, Report};
use batchgate_flags::{parse_duration, PolicyName};
use batchgate_gateway::ShedBound;
use batchgate_policy::Limits;

use crate::engine::{self, Outcome};
use crate::model::{
    Arrivals, Deployment, Host, Load, WorkerModel, DEFAULT_EGRESS, DEFAULT_INGRESS, TIMER_TICK,
};

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A flag, or flags together, out of range.
    #[error("{0}")]
    InvalidArgs(String),
    /// The trace file could not be read or parsed.
    #[error("trace file {path}: {reason}")]
    Trace {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Flags of `batchgate simulate`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Requests per second (open loop, as `bench --rate`); with --burst-rate, the rate between
    /// bursts. Not with --trace.
    #[arg(long, env = "BATCHGATE_SIMULATE_RATE")]
    pub rate: Option<f64>,

    /// Send times from a file instead: one per line, seconds from the start (e.g. `0.0125`);
    /// blank lines and lines starting with `#` are skipped.
    #[arg(long, env = "BATCHGATE_SIMULATE_TRACE", value_name = "FILE", conflicts_with_all = ["rate", "burst_rate"])]
    pub trace: Option<PathBuf>,

    /// As `bench --burst-rate`: this many requests per second for --burst-secs at the start of
    /// every --burst-every seconds of the measured window.
    #[arg(long, env = "BATCHGATE_SIMULATE_BURST_RATE")]
    pub burst_rate: Option<f64>,

    /// As `bench --burst-secs`.
    #[arg(long, env = "BATCHGATE_SIMULATE_BURST_SECS")]
    pub burst_secs: Option<f64>,

    /// As `bench --burst-every`.
    #[arg(long, env = "BATCHGATE_SIMULATE_BURST_EVERY")]
    pub burst_every: Option<f64>,

    /// As `bench --arrivals`: `fixed` or `poisson` spacing.
    #[arg(long, env = "BATCHGATE_SIMULATE_ARRIVALS", value_enum, default_value_t = ArrivalKind::Fixed)]
    pub arrivals: ArrivalKind,

    /// As `bench --duration`: the measured window, e.g. `30s`, `1m`.
    #[arg(long, env = "BATCHGATE_SIMULATE_DURATION", default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// As `bench --warmup`: a linear ramp to --rate before the window, not recorded.
    #[arg(long, env = "BATCHGATE_SIMULATE_WARMUP", default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// As `bench --seed`: of the Poisson schedule, the worker's jitter and errors.
    #[arg(long, env = "BATCHGATE_SIMULATE_SEED", default_value_t = 42)]
    pub seed: u64,

    /// As `serve --sim-slots`: batches the worker behind each batcher runs at once.
    #[arg(long, env = "BATCHGATE_SIMULATE_SIM_SLOTS", default_value_t = 32)]
    pub sim_slots: usize,

    /// As `serve --sim-base-ms`: fixed cost of a worker call, in milliseconds.
    #[arg(long, env = "BATCHGATE_SIMULATE_SIM_BASE_MS", default_value_t = 150.0)]
    pub sim_base_ms: f64,

    /// As `serve --sim-per-item-ms`: added cost per input, in milliseconds.
    #[arg(
        long,
        env = "BATCHGATE_SIMULATE_SIM_PER_ITEM_MS",
        default_value_t = 0.78
    )]
    pub sim_per_item_ms: f64,

    /// Each call's cost stretched by a factor drawn from [1 − J, 1 + J]; 0 is the exact model.
    #[arg(long, env = "BATCHGATE_SIMULATE_SIM_JITTER", default_value_t = 0.0)]
    pub sim_jitter: f64,

    /// Share of worker calls that fail (their tasks end FAILED; retries are not modelled).
    #[arg(long, env = "BATCHGATE_SIMULATE_SIM_ERROR_RATE", default_value_t = 0.0)]
    pub sim_error_rate: f64,

    /// As `serve --max-batch-size`.
    #[arg(long, env = "BATCHGATE_SIMULATE_MAX_BATCH_SIZE", default_value_t = 64)]
    pub max_batch_size: usize,

    /// As `serve --max-wait-ms`.
    #[arg(long, env = "BATCHGATE_SIMULATE_MAX_WAIT_MS", default_value_t = 50)]
    pub max_wait_ms: u64,

    /// As `serve --policy`.
    #[arg(long, env = "BATCHGATE_SIMULATE_POLICY", value_enum, default_value_t = PolicyName::Fixed)]
    pub policy: PolicyName,

    /// As `serve --max-hold-ms` (adaptive policy).
    #[arg(long, env = "BATCHGATE_SIMULATE_MAX_HOLD_MS", default_value_t = 100)]
    pub max_hold_ms: u64,

    /// As `serve --max-inflight-batches` [default: --sim-slots].
    #[arg(long, env = "BATCHGATE_SIMULATE_MAX_INFLIGHT_BATCHES")]
    pub max_inflight_batches: Option<usize>,

    /// As `serve --max-queue-age`.
    #[arg(long, env = "BATCHGATE_SIMULATE_MAX_QUEUE_AGE", default_value = "30s", value_parser = parse_duration)]
    pub max_queue_age: Duration,

    /// As `serve --latency-objective-ms`: shed when a new task's queue wait plus one call
    /// would pass 60% of it; 0 turns shedding off.
    #[arg(
        long,
        env = "BATCHGATE_SIMULATE_LATENCY_OBJECTIVE_MS",
        default_value_t = 500
    )]
    pub latency_objective_ms: u64,

    /// As `serve --shed-wait-ms`: shed on the queue wait alone; 0 turns shedding off.
    #[arg(long, env = "BATCHGATE_SIMULATE_SHED_WAIT_MS")]
    pub shed_wait_ms: Option<u64>,

    /// Batchers, each with its own worker of --sim-slots slots; arrivals are dealt to them in
    /// turn.
    #[arg(long, env = "BATCHGATE_SIMULATE_BATCHERS", default_value_t = 1)]
    pub batchers: usize,

    /// Time from a request's send to its arrival in the queue, in milliseconds (HTTP and
    /// admission; calibrated on the embedded deployment, see BENCHMARKS.md).
    #[arg(long, env = "BATCHGATE_SIMULATE_INGRESS_MS", default_value_t = DEFAULT_INGRESS.as_secs_f64() * 1000.0)]
    pub ingress_ms: f64,

    /// Time from the end of a worker call to the client having the answer, in milliseconds.
    #[arg(long, env = "BATCHGATE_SIMULATE_EGRESS_MS", default_value_t = DEFAULT_EGRESS.as_secs_f64() * 1000.0)]
    pub egress_ms: f64,

    /// CPU time the gateway (`serve`: gateway, batcher and in-process worker) spends per
    /// request, in microseconds: half on the way in, half on the way out (storing the result,
    /// the answer), on --host-cores cores shared with the client's --client-cpu-us; past
    /// cores ÷ (both) requests a second, requests and finished calls wait for the CPU.
    /// 0 (and --client-cpu-us 0): the CPU is not modelled.
    #[arg(long, env = "BATCHGATE_SIMULATE_GATEWAY_CPU_US", default_value_t = 0.0)]
    pub gateway_cpu_us: f64,

    /// CPU time the load generator spends per request on the same machine, in microseconds
    /// (half to send, half to read the answer); 0 when it runs elsewhere.
    #[arg(long, env = "BATCHGATE_SIMULATE_CLIENT_CPU_US", default_value_t = 0.0)]
    pub client_cpu_us: f64,

    /// Both together, split evenly: as --gateway-cpu-us X/2 --client-cpu-us X/2.
    #[arg(long, env = "BATCHGATE_SIMULATE_HOST_CPU_US", conflicts_with_all = ["gateway_cpu_us", "client_cpu_us"])]
    pub host_cpu_us: Option<f64>,

    /// Cores of the machine the gateway (and the client, with --client-cpu-us) runs on.
    #[arg(long, env = "BATCHGATE_SIMULATE_HOST_CORES", default_value_t = 2.0)]
    pub host_cores: f64,

    /// Threads of other work that keep the machine's cores busy meanwhile (its load average
    /// without the simulated processes): the kernel gives each runnable thread an even share
    /// of the cores, so they slow the gateway and the client. Only with the CPU modelled.
    #[arg(
        long,
        env = "BATCHGATE_SIMULATE_HOST_OTHER_THREADS",
        default_value_t = 0.0
    )]
    pub host_other_threads: f64,

    /// As `bench --max-connections`: requests the client keeps in flight at most; one due
    /// while that many await their answer is not sent (`client_overloaded`). [default: no
    /// limit; the bench's is 10,000]
    #[arg(long, env = "BATCHGATE_SIMULATE_MAX_CONNECTIONS")]
    pub max_connections: Option<u64>,

    /// Print the report as JSON, in the shape of `batchgate bench --json`.
    #[arg(long, env = "BATCHGATE_SIMULATE_JSON")]
    pub json: bool,

    /// Also write a report with charts to this file: SVG, or self-contained HTML if the name
    /// ends in `.html`.
    #[arg(long, env = "BATCHGATE_SIMULATE_REPORT", value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// A finished simulation: the bench-shaped report, what the engine measured, and its cost.
#[derive(Debug)]
pub struct Simulated {
    /// In the shape of `batchgate bench --json`.
    pub report: Report,
    /// Everything the engine counted (time series, batch sizes).
    pub outcome: Outcome,
    /// Wall time the simulation took.
    pub wall: Duration,
}

fn millis(flag: &str, ms: f64) -> Result<Duration, SimulateError> {
    if ms.is_finite() && ms >= 0.0 {
        Duration::try_from_secs_f64(ms / 1000.0)
            .map_err(|_| SimulateError::InvalidArgs(format!("{flag} is too large: {ms}")))
    } else {
        Err(SimulateError::InvalidArgs(format!(
            "{flag} must be a number of milliseconds, at least 0, got {ms}"
        )))
    }
}

fn burst_secs(flag: &str, secs: f64) -> Result<Duration, SimulateError> {
    if secs.is_finite() && secs >= 0.001 {
        Duration::try_from_secs_f64(secs)
            .map_err(|_| SimulateError::InvalidArgs(format!("{flag} is too large: {secs}")))
    } else {
        Err(SimulateError::InvalidArgs(format!(
            "{flag} must be a number of seconds, at least 0.001, got {secs}"
        )))
    }
}

impl SimulateArgs {
    /// The deployment these flags describe.
    pub fn deployment(&self) -> Result<Deployment, SimulateError> {
        let invalid = |m: String| Err(SimulateError::InvalidArgs(m));
        if self.sim_slots == 0 {
            return invalid("--sim-slots must be at least 1".into());
        }
        if self.batchers == 0 {
            return invalid("--batchers must be at least 1".into());
        }
        if self.max_batch_size == 0 {
            return invalid("--max-batch-size must be at least 1".into());
        }
        if self.max_inflight_batches == Some(0) {
            return invalid("--max-inflight-batches must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.sim_jitter) {
            return invalid(format!(
                "--sim-jitter must be in [0, 1), got {}",
                self.sim_jitter
            ));
        }
        if !(0.0..=1.0).contains(&self.sim_error_rate) {
            return invalid(format!(
                "--sim-error-rate must be in [0, 1], got {}",
                self.sim_error_rate
            ));
        }
        let limits = Limits {
            max_batch_size: self.max_batch_size,
            max_wait: Duration::from_millis(self.max_wait_ms),
        };
        let rule = self.policy.rule(Duration::from_millis(self.max_hold_ms));
        let shed = match self.shed_wait_ms {
            Some(0) => ShedBound::Off,
            Some(ms) => ShedBound::QueueWait(Duration::from_millis(ms)),
            None if self.latency_objective_ms == 0 => ShedBound::Off,
            None => ShedBound::Objective(Duration::from_millis(self.latency_objective_ms)),
        };
        Ok(Deployment {
            batchers: self.batchers,
            limits,
            rule,
            max_inflight_batches: self.max_inflight_batches.unwrap_or(self.sim_slots),
            worker: WorkerModel {
                slots: self.sim_slots,
                base: millis("--sim-base-ms", self.sim_base_ms)?,
                per_item: millis("--sim-per-item-ms", self.sim_per_item_ms)?,
                jitter: self.sim_jitter,
                error_rate: self.sim_error_rate,
            },
            shed,
            max_queue_age: self.max_queue_age,
            ingress: millis("--ingress-ms", self.ingress_ms)?,
            egress: millis("--egress-ms", self.egress_ms)?,
            host: self.host()?,
            timer_tick: TIMER_TICK,
        })
    }

    fn host(&self) -> Result<Option<Host>, SimulateError> {
        if !(self.host_cores.is_finite() && self.host_cores > 0.0) {
            return Err(SimulateError::InvalidArgs(format!(
                "--host-cores must be a positive number, got {}",
                self.host_cores
            )));
        }
        let micros = |flag: &str, us: f64| {
            if us.is_finite() && (0.0..1e9).contains(&us) {
                Ok(Duration::from_secs_f64(us / 1e6))
            } else {
                Err(SimulateError::InvalidArgs(format!(
                    "{flag} must be a number of microseconds, at least 0, got {us}"
                )))
            }
        };
        let (gateway_cpu, client_cpu) = match self.host_cpu_us {
            Some(us) => {
                let both = micros("--host-cpu-us", us)?;
                (both / 2, both / 2)
            }
            None => (
                micros("--gateway-cpu-us", self.gateway_cpu_us)?,
                micros("--client-cpu-us", self.client_cpu_us)?,
            ),
        };
        if !(self.host_other_threads.is_finite() && self.host_other_threads >= 0.0) {
            return Err(SimulateError::InvalidArgs(format!(
                "--host-other-threads must be a number, at least 0, got {}",
                self.host_other_threads
            )));
        }
        Ok((!(gateway_cpu + client_cpu).is_zero()).then_some(Host {
            cores: self.host_cores,
            gateway_cpu,
            client_cpu,
            other_threads: self.host_other_threads,
        }))
    }

    /// The load these flags describe (reads --trace).
    pub fn load(&self) -> Result<Load, SimulateError> {
        let invalid = |m: String| Err(SimulateError::InvalidArgs(m));
        if self.duration.is_zero() {
            return invalid("--duration must be more than zero".into());
        }
        let arrivals = match (&self.trace, self.rate) {
            (Some(path), None) => Arrivals::Trace(read_trace(path)?),
            (None, Some(rate)) => {
                if !(rate.is_finite() && rate > 0.0) {
                    return invalid(format!("--rate must be a positive number, got {rate}"));
                }
                Arrivals::Schedule {
                    rate,
                    kind: self.arrivals,
                    burst: self.burst()?,
                }
            }
            _ => return invalid("give exactly one of --rate and --trace".into()),
        };
        if self.max_connections == Some(0) {
            return invalid("--max-connections must be at least 1".into());
        }
        Ok(Load {
            arrivals,
            duration: self.duration,
            warmup: self.warmup,
            seed: self.seed,
            max_in_flight: self.max_connections,
        })
    }

    fn burst(&self) -> Result<Option<Burst>, SimulateError> {
        let invalid = |m: &str| Err(SimulateError::InvalidArgs(m.to_owned()));
        match (self.burst_rate, self.burst_secs, self.burst_every) {
            (None, None, None) => Ok(None),
            (Some(rate), Some(length), Some(period)) => {
                if !(rate.is_finite() && rate > 0.0) {
                    return invalid("--burst-rate must be a positive number");
                }
                let length = burst_secs("--burst-secs", length)?;
                let period = burst_secs("--burst-every", period)?;
                if length >= period {
                    return invalid("--burst-secs must be less than --burst-every");
                }
                Ok(Some(Burst {
                    rate,
                    length,
                    period,
                }))
            }
            (Some(_), _, _) => invalid("--burst-rate needs --burst-secs and --burst-every"),
            (None, _, _) => invalid("--burst-secs and --burst-every apply only with --burst-rate"),
        }
    }

    /// Runs the simulation these flags describe.
    pub fn run(&self) -> Result<Simulated, SimulateError> {
        let deployment = self.deployment()?;
        let load = self.load()?;
        Ok(simulate(&deployment, &load))
    }
}

/// Runs `deployment` under `load` and reports in the bench's shape.
pub fn simulate(deployment: &Deployment, load: &Load) -> Simulated {
    let started = Instant::now();
    let outcome = engine::run(deployment, load, false);
    let wall = started.elapsed();
    let report = crate::report::report(deployment, load, &outcome);
    Simulated {
        report,
        outcome,
        wall,
    }
}

/// Reads a trace: one send time per line, in seconds from the start.
pub fn read_trace(path: &std::path::Path) -> Result<Vec<Duration>, SimulateError> {
    let error = |reason: String| SimulateError::Trace {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let mut times = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let secs: f64 = line
            .parse()
            .map_err(|_| error(format!("line {}: not a number of seconds: {line:?}", n + 1)))?;
        let time = Duration::try_from_secs_f64(secs).map_err(|_| {
            error(format!(
                "line {}: not a time since the start (seconds, at least 0): {line:?}",
                n + 1
            ))
        })?;
        times.push(time);
    }
    if times.is_empty() {
        return Err(error("no send times in it".to_owned()));
    }
    times.sort();
    Ok(times)
}
