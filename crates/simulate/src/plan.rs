//! `batchgate plan`: the cheapest distributed deployment that meets a p99 at a rate.
//!
//! The CPU-bound parts are sized from measured cost per request at the autoscaler's CPU
//! target: gateways and batchers (batchgate's CPU per request, split as measured), Redis
//! Cluster masters (Redis's CPU per request), and never fewer than two gateways, two batchers
//! and three masters. The GPU-bound part is searched by simulation:
//! batchers are alike and share nothing but the queue's spread of tasks, so one batcher is
//! simulated at its share of the rate, with the real policy, for each policy and batch window,
//! and the fewest worker slots that hold the p99 (with nothing shed, every request answered)
//! are kept. The cheapest plan has the fewest workers; ties go to the lower p99, then to the
//! defaults (fixed rule, window nearest 50 ms).

use std::fmt;
use std::time::Duration;

use batchgate_bench::ArrivalKind;
use batchgate_gateway::ShedBound;
use batchgate_policy::{Adaptive, Limits, Rule};
use serde::Serialize;

use crate::args::SimulateError;
use crate::engine;
use crate::model::{
    Arrivals, Deployment, Load, WorkerModel, DEFAULT_EGRESS, DEFAULT_INGRESS, TIMER_TICK,
};

/// Batch windows tried, in milliseconds.
const WINDOWS_MS: [u64; 5] = [10, 25, 50, 100, 200];
/// Most slots per batcher the search tries before it gives up on a window.
const MAX_SLOTS_PER_BATCHER: usize = 1 << 16;
/// The fewest masters of a Redis Cluster: a majority of masters must agree that one has failed
/// before its replica takes over, which takes at least three.
pub const MIN_REDIS_MASTERS: usize = 3;
/// The fewest gateways and the fewest batchers a plan has: with one of a kind, its death stops
/// the service until it is replaced; with two, the other goes on (and claims a dead batcher's
/// unfinished tasks).
pub const MIN_PODS: usize = 2;

/// Flags of `batchgate plan`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    /// Requests per second to serve.
    #[arg(long, env = "BATCHGATE_PLAN_RATE")]
    pub rate: f64,

    /// The objective: p99 latency of every request, in milliseconds, with nothing shed.
    #[arg(long, env = "BATCHGATE_PLAN_P99_MS")]
    pub p99_ms: f64,

    /// Fixed cost of one worker call, in milliseconds.
    #[arg(long, env = "BATCHGATE_PLAN_WORKER_BASE_MS", default_value_t = 150.0)]
    pub worker_base_ms: f64,

    /// Added cost per input of a worker call, in milliseconds.
    #[arg(
        long,
        env = "BATCHGATE_PLAN_WORKER_PER_ITEM_MS",
        default_value_t = 0.78
    )]
    pub worker_per_item_ms: f64,

    /// Each call's cost stretched by a factor drawn from [1 − J, 1 + J] (0: the exact model).
    #[arg(long, env = "BATCHGATE_PLAN_WORKER_JITTER", default_value_t = 0.0)]
    pub worker_jitter: f64,

    /// Batches one worker (one GPU) runs at once.
    #[arg(long, env = "BATCHGATE_PLAN_SLOTS_PER_WORKER", default_value_t = 1)]
    pub slots_per_worker: usize,

    /// The worker API's batch limit.
    #[arg(long, env = "BATCHGATE_PLAN_MAX_BATCH_SIZE", default_value_t = 64)]
    pub max_batch_size: usize,

    /// Gateway CPU per request, in microseconds (measured: BENCHMARKS.md, the 6-node cluster
    /// shape at its highest rate held).
    #[arg(long, env = "BATCHGATE_PLAN_GATEWAY_US", default_value_t = 54.0)]
    pub gateway_us: f64,

    /// Batcher CPU per request, in microseconds (measured: the same).
    #[arg(long, env = "BATCHGATE_PLAN_BATCHER_US", default_value_t = 19.0)]
    pub batcher_us: f64,

    /// Redis Cluster masters' CPU per request, in microseconds (measured: the same). A plan
    /// has at least three masters, the fewest a Redis Cluster fails over with.
    #[arg(long, env = "BATCHGATE_PLAN_REDIS_US", default_value_t = 30.0)]
    pub redis_us: f64,

    /// Cores of one gateway or batcher pod.
    #[arg(long, env = "BATCHGATE_PLAN_CORES_PER_POD", default_value_t = 1.0)]
    pub cores_per_pod: f64,

    /// The autoscaler's CPU target for gateways and batchers, and the most a Redis master (one
    /// core) is loaded.
    #[arg(long, env = "BATCHGATE_PLAN_CPU_TARGET", default_value_t = 0.7)]
    pub cpu_target: f64,

    /// Time from send to queue, in milliseconds (HTTP, admission through Redis).
    #[arg(long, env = "BATCHGATE_PLAN_INGRESS_MS", default_value_t = DEFAULT_INGRESS.as_secs_f64() * 1000.0 + 10.0)]
    pub ingress_ms: f64,

    /// Time from the end of a call to the client's answer, in milliseconds (settle, notice).
    #[arg(long, env = "BATCHGATE_PLAN_EGRESS_MS", default_value_t = DEFAULT_EGRESS.as_secs_f64() * 1000.0 + 10.0)]
    pub egress_ms: f64,

    /// Simulated time per candidate.
    #[arg(long, env = "BATCHGATE_PLAN_DURATION", default_value = "20s", value_parser = batchgate_flags::parse_duration)]
    pub duration: Duration,

    /// Seed of the Poisson arrivals.
    #[arg(long, env = "BATCHGATE_PLAN_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Print the plan as JSON.
    #[arg(long, env = "BATCHGATE_PLAN_JSON")]
    pub json: bool,
}

/// One candidate's simulated figures.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    /// `fixed` or `adaptive`.
    pub policy: &'static str,
    /// `--max-wait-ms`.
    pub max_wait_ms: u64,
    /// Worker slots per batcher (`--max-inflight-batches`).
    pub slots_per_batcher: usize,
    /// Simulated p50 and p99, in milliseconds.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Mean batch size.
    pub mean_batch: f64,
    /// Share of slot time in worker calls.
    pub worker_busy: f64,
}

/// The plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Requests per second.
    pub rate: f64,
    /// The objective.
    pub p99_objective_ms: f64,
    /// Workers (GPUs).
    pub workers: usize,
    /// Batchers.
    pub batchers: usize,
    /// Gateways.
    pub gateways: usize,
    /// Redis Cluster masters (each with a replica).
    pub redis_masters: usize,
    /// The chosen policy and window, with its figures.
    pub chosen: Candidate,
    /// The best candidate of every policy and window that met the objective.
    pub candidates: Vec<Candidate>,
    /// Share of the objective left unused: 1 − p99 / objective.
    pub latency_headroom: f64,
    /// Full-batch capacity over the rate, minus one.
    pub capacity_headroom: f64,
    /// The assumptions, in words.
    pub assumptions: Vec<String>,
}

fn positive(flag: &str, v: f64) -> Result<f64, SimulateError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(SimulateError::InvalidArgs(format!(
            "{flag} must be a positive number, got {v}"
        )))
    }
}

fn ms(flag: &str, v: f64) -> Result<Duration, SimulateError> {
    if v.is_finite() && (0.0..1e9).contains(&v) {
        Ok(Duration::from_secs_f64(v / 1000.0))
    } else {
        Err(SimulateError::InvalidArgs(format!(
            "{flag} must be a number of milliseconds, at least 0, got {v}"
        )))
    }
}

impl PlanArgs {
    /// Searches and returns the plan.
    pub fn run(&self) -> Result<Plan, SimulateError> {
        let rate = positive("--rate", self.rate)?;
        let objective = positive("--p99-ms", self.p99_ms)?;
        let target = positive("--cpu-target", self.cpu_target)?;
        if target > 1.0 {
            return Err(SimulateError::InvalidArgs(format!(
                "--cpu-target must be in (0, 1], got {target}"
            )));
        }
        let cores = positive("--cores-per-pod", self.cores_per_pod)?;
        if !(0.0..1.0).contains(&self.worker_jitter) {
            return Err(SimulateError::InvalidArgs(format!(
                "--worker-jitter must be in [0, 1), got {}",
                self.worker_jitter
            )));
        }
        if self.slots_per_worker == 0 || self.max_batch_size == 0 {
            return Err(SimulateError::InvalidArgs(
                "--slots-per-worker and --max-batch-size must be at least 1".into(),
            ));
        }
        if self.duration.is_zero() {
            return Err(SimulateError::InvalidArgs(
                "--duration must be more than zero".into(),
            ));
        }
        // Enough of a kind to carry the rate at the CPU target, and never fewer than `fewest`.
        let pods = |us: f64, per_pod: f64, fewest: usize| -> usize {
            (((rate * us / 1e6) / (target * per_pod)).ceil() as usize).max(fewest)
        };
        let gateways = pods(positive("--gateway-us", self.gateway_us)?, cores, MIN_PODS);
        let batchers = pods(positive("--batcher-us", self.batcher_us)?, cores, MIN_PODS);
        let redis_masters = pods(
            positive("--redis-us", self.redis_us)?,
            1.0,
            MIN_REDIS_MASTERS,
        );
        let worker = WorkerModel {
            slots: 1,
            base: ms("--worker-base-ms", self.worker_base_ms)?,
            per_item: ms("--worker-per-item-ms", self.worker_per_item_ms)?,
            jitter: self.worker_jitter,
            error_rate: 0.0,
        };
        let share = rate / batchers as f64;
        let base = Deployment {
            batchers: 1,
            limits: Limits {
                max_batch_size: self.max_batch_size,
                max_wait: Duration::ZERO,
            },
            rule: Rule::Fixed,
            max_inflight_batches: 1,
            worker,
            shed: ShedBound::Off,
            max_queue_age: Duration::from_secs(3600),
            ingress: ms("--ingress-ms", self.ingress_ms)?,
            egress: ms("--egress-ms", self.egress_ms)?,
            host: None,
            timer_tick: TIMER_TICK,
        };
        let load = Load {
            arrivals: Arrivals::Schedule {
                rate: share,
                kind: ArrivalKind::Poisson,
                burst: None,
            },
            duration: self.duration,
            warmup: Duration::from_secs(2),
            seed: self.seed,
            max_in_flight: None,
        };
        // The fewest slots that could carry the share at all, in full batches.
        let per_slot = self.max_batch_size as f64 / worker.cost(self.max_batch_size).as_secs_f64();
        let floor = ((share / per_slot).ceil() as usize).max(1);
        let mut candidates = Vec::new();
        for policy in ["fixed", "adaptive"] {
            for window in WINDOWS_MS {
                let mut d = base;
                d.limits.max_wait = Duration::from_millis(window);
                d.rule = if policy == "fixed" {
                    Rule::Fixed
                } else {
                    Rule::Adaptive(Adaptive {
                        max_hold: Duration::from_millis(window * 2),
                        ..Adaptive::default()
                    })
                };
                if let Some(c) = search(&d, &load, floor, objective, policy, window) {
                    candidates.push(c);
                }
            }
        }
        let Some(chosen) = candidates
            .iter()
            .min_by(|a, b| {
                // Fewest slots; then the lower p99 (to the millisecond); then the window
                // nearest the default 50 ms, and the fixed rule, the defaults being the
                // best-measured configuration.
                let key = |c: &Candidate| {
                    (
                        c.slots_per_batcher,
                        c.p99_ms.round() as u64,
                        c.max_wait_ms.abs_diff(50),
                        c.policy != "fixed",
                    )
                };
                key(a).cmp(&key(b))
            })
            .cloned()
        else {
            return Err(SimulateError::InvalidArgs(format!(
                "no deployment meets p99 < {objective} ms: one worker call of a full batch \
                 alone takes {:.1} ms",
                worker.cost(self.max_batch_size).as_secs_f64() * 1000.0
            )));
        };
        let total_slots = chosen.slots_per_batcher * batchers;
        let workers = total_slots.div_ceil(self.slots_per_worker);
        let capacity = total_slots as f64 * per_slot;
        let assumptions = vec![
            format!(
                "worker call: {} ms + {} ms per input (stretched by up to ±{:.0}%), {} batch(es) \
                 at once per worker, at most {} inputs per call",
                self.worker_base_ms,
                self.worker_per_item_ms,
                self.worker_jitter * 100.0,
                self.slots_per_worker,
                self.max_batch_size
            ),
            format!(
                "arrivals: Poisson at {rate}/s, dealt evenly to the batchers; one batcher \
                 simulated at {share:.0}/s for {} s after a 2 s ramp",
                self.duration.as_secs_f64()
            ),
            format!(
                "outside the worker: {} ms from send to queue, {} ms from the end of the call to \
                 the answer",
                self.ingress_ms, self.egress_ms
            ),
            format!(
                "CPU per request: gateway {} µs, batcher {} µs, Redis masters {} µs; gateway and \
                 batcher pods of {cores} core(s) at {:.0}% CPU (the autoscaler's target), Redis \
                 masters at most {:.0}% of their one core; at least {MIN_PODS} gateways and \
                 {MIN_PODS} batchers, and {MIN_REDIS_MASTERS} masters",
                self.gateway_us,
                self.batcher_us,
                self.redis_us,
                target * 100.0,
                target * 100.0
            ),
            "objective: p99 of all requests under it, nothing shed, every request answered"
                .to_owned(),
        ];
        Ok(Plan {
            rate,
            p99_objective_ms: objective,
            workers,
            batchers,
            gateways,
            redis_masters,
            latency_headroom: 1.0 - chosen.p99_ms / objective,
            capacity_headroom: capacity / rate - 1.0,
            chosen,
            candidates,
            assumptions,
        })
    }
}

/// Simulates `d` with `slots` slots; its figures if it meets the objective.
fn attempt(
    d: &Deployment,
    load: &Load,
    slots: usize,
    objective: f64,
    policy: &'static str,
    window: u64,
) -> (bool, Option<Candidate>) {
    let mut d = *d;
    d.worker.slots = slots;
    d.max_inflight_batches = slots;
    let out = engine::run(&d, load, false);
    let ok = out.outcomes.get("ok").copied().unwrap_or(0);
    if out.sent == 0 || ok < out.sent {
        return (false, None);
    }
    let p99 = out.latency_us.value_at_quantile(0.99) as f64 / 1000.0;
    let c = Candidate {
        policy,
        max_wait_ms: window,
        slots_per_batcher: slots,
        p50_ms: out.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: p99,
        mean_batch: out.batched_items as f64 / out.batches.max(1) as f64,
        worker_busy: out.worker_call_seconds / load.duration.as_secs_f64() / slots as f64,
    };
    (p99 < objective, Some(c))
}

/// The fewest slots from `floor` up that meet the objective: doubling, then bisection.
fn search(
    d: &Deployment,
    load: &Load,
    floor: usize,
    objective: f64,
    policy: &'static str,
    window: u64,
) -> Option<Candidate> {
    let mut lo = floor; // the fewest not yet known to fail
    let mut step = 1;
    let (mut hi, mut best) = loop {
        let slots = lo + step - 1;
        if slots > MAX_SLOTS_PER_BATCHER {
            return None;
        }
        match attempt(d, load, slots, objective, policy, window) {
            (true, c) => break (slots, c),
            _ => {
                lo = slots + 1;
                step *= 2;
            }
        }
    };
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match attempt(d, load, mid, objective, policy, window) {
            (true, c) => {
                hi = mid;
                best = c;
            }
            _ => lo = mid + 1,
        }
    }
    best
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.chosen;
        writeln!(
            f,
            "plan for {} requests/s at p99 < {} ms",
            self.rate, self.p99_objective_ms
        )?;
        writeln!(f, "  {:<20}{}", "workers (GPUs)", self.workers)?;
        writeln!(f, "  {:<20}{}", "batchers", self.batchers)?;
        writeln!(f, "  {:<20}{}", "gateways", self.gateways)?;
        writeln!(
            f,
            "  {:<20}{} (each with a replica)",
            "Redis masters", self.redis_masters
        )?;
        writeln!(
            f,
            "  {:<20}--policy {} --max-wait-ms {}, {} slots per batcher",
            "batching", c.policy, c.max_wait_ms, c.slots_per_batcher
        )?;
        writeln!(
            f,
            "  {:<20}p50 {:.1} ms, p99 {:.1} ms, mean batch {:.1}, worker busy {:.0}%",
            "simulated",
            c.p50_ms,
            c.p99_ms,
            c.mean_batch,
            c.worker_busy * 100.0
        )?;
        writeln!(
            f,
            "  {:<20}{:.0}% of the p99 objective unused; full-batch capacity {:.0}% above the rate",
            "headroom",
            self.latency_headroom * 100.0,
            self.capacity_headroom * 100.0
        )?;
        writeln!(
            f,
            "candidates (fewest slots per batcher meeting the objective)"
        )?;
        writeln!(
            f,
            "  {:<10}{:>8}{:>8}{:>10}{:>10}{:>8}{:>7}",
            "policy", "wait ms", "slots", "p50 ms", "p99 ms", "batch", "busy"
        )?;
        for c in &self.candidates {
            writeln!(
                f,
                "  {:<10}{:>8}{:>8}{:>10.1}{:>10.1}{:>8.1}{:>6.0}%",
                c.policy,
                c.max_wait_ms,
                c.slots_per_batcher,
                c.p50_ms,
                c.p99_ms,
                c.mean_batch,
                c.worker_busy * 100.0
            )?;
        }
        writeln!(f, "assumptions")?;
        for a in &self.assumptions {
            writeln!(f, "  - {a}")?;
        }
        Ok(())
    }
}
