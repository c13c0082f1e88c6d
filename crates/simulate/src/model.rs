//! What is simulated: the deployment (batchers, their worker slots, the batching flags), the
//! worker's cost model, the costs outside the batcher, and the load.

use std::time::Duration;

use batchgate_bench::arrivals::Burst;
use batchgate_bench::ArrivalKind;
use batchgate_gateway::ShedBound;
use batchgate_policy::{Limits, Rule};

/// Fixed time a request spends outside the queue, the batcher and the worker call, split
/// between the way in (before it reaches the queue) and the way out (after its call ends):
/// network, wake-ups and timers, everything but waiting for a busy CPU, which [`Host`] adds
/// when it is modelled. Calibrated against the
/// measured medians of the embedded deployment on the project's 2-core machine (BENCHMARKS.md,
/// "The simulator").
pub const DEFAULT_INGRESS: Duration = Duration::from_millis(2);
/// See [`DEFAULT_INGRESS`].
pub const DEFAULT_EGRESS: Duration = Duration::from_millis(2);

/// The resolution of tokio's timers, which wake the live batcher at its deadlines.
pub const TIMER_TICK: Duration = Duration::from_millis(1);

/// The simulated worker: the reference worker's cost model, per batcher.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerModel {
    /// Batches the worker behind one batcher runs at once (`serve --sim-slots`).
    pub slots: usize,
    /// Fixed cost of a call.
    pub base: Duration,
    /// Added cost per input.
    pub per_item: Duration,
    /// Each call's cost is stretched by a factor drawn uniformly from `[1 − jitter, 1 + jitter]`
    /// (0: exactly the model).
    pub jitter: f64,
    /// Share of calls that fail; their tasks end FAILED (retries are not modelled).
    pub error_rate: f64,
}

impl Default for WorkerModel {
    fn default() -> Self {
        WorkerModel {
            slots: 32,
            base: Duration::from_millis(150),
            per_item: Duration::from_micros(780),
            jitter: 0.0,
            error_rate: 0.0,
        }
    }
}

impl WorkerModel {
    /// The model's cost of a call with `n` inputs, before jitter.
    pub fn cost(&self, n: usize) -> Duration {
        self.base + self.per_item * u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Inputs a second that `slots` slots get through in full batches of `max_batch`.
    pub fn full_batch_capacity(&self, max_batch: usize) -> f64 {
        self.slots as f64 * max_batch as f64 / self.cost(max_batch).as_secs_f64()
    }
}

/// The CPU of the machine the gateway runs on, shared by every request and, when the load
/// generator runs there too (as in BENCHMARKS.md: `batchgate bench` and `batchgate serve` on
/// the same two cores), by the client. Each process's work is a first-come-first-served queue
/// (work is queued when it becomes due, and whatever its process queued before delays it), and
/// the kernel splits the cores evenly between runnable threads: as many per busy process as
/// there are cores (tokio's default runtime), and `other_threads` of the machine's other
/// work. Two busy processes on an otherwise idle machine get half the cores each; one alone
/// gets them all, so the gateway's work does not wait behind the client's, nor the client's
/// behind the gateway's.
///
/// A request's work is split where it happens:
/// - on the way in, when it is sent: the client's half (building and sending it), then the
///   gateway's half (HTTP, JSON, dedupe, admission); the task reaches the queue once that is
///   done;
/// - on the way out, when its worker call ends: the gateway's other half (storing the result,
///   waking the long poll, the answer), done for the whole batch before the batcher's slot
///   frees, then the client's other half (reading the answer), after which the client has it.
///   The dispatcher frees a slot sooner: once the worker has answered and the batch may
///   settle (`dispatch.rs`), and the answers are written by the waiting requests' tasks
///   after. The model's later release stands for the delays between a call's end and the
///   next batch that it does not model otherwise (waking the dispatch and the gather loop on
///   a busy runtime): freeing the slot at the call's end put the p50 of the 3× overload
///   scenario (`tests/agreement.rs`) 10 ms (fixed policy) and 27 ms (adaptive) below what
///   was measured, after the dispatcher's change as before it (252.4 and 251.1 ms), where
///   this release lands within 2%.
///
/// So past `cores / (gateway_cpu + client_cpu)` requests a second (fewer with other work),
/// work queues for the CPU: the busier process falls behind first (the client, at the
/// measuring machine's figures), new tasks reach the queue later and answers are read later;
/// a gateway behind frees its finished calls' slots later, which lowers what the worker gets
/// through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Host {
    /// Cores of the machine.
    pub cores: f64,
    /// The gateway's CPU time per request (`serve`: gateway, batcher and in-process worker).
    pub gateway_cpu: Duration,
    /// The load generator's CPU time per request, when it shares the machine (else zero).
    pub client_cpu: Duration,
    /// Threads of other work runnable on the machine all along, each weighted as the kernel
    /// weighs its nice value (a nice-0 thread is 1): they take their even share of the cores.
    /// 0 on an otherwise idle machine.
    pub other_threads: f64,
}

impl Host {
    /// Requests a second the machine gets through with its CPU fully busy.
    pub fn capacity(&self) -> f64 {
        let per_request = (self.gateway_cpu + self.client_cpu).as_secs_f64();
        if per_request > 0.0 {
            self.cores / per_request
        } else {
            f64::INFINITY
        }
    }
}

/// The deployment in virtual time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deployment {
    /// Batchers, each with its own policy, slots and worker; arrivals are dealt to them in
    /// turn (as hashed task ids spread over partitions).
    pub batchers: usize,
    /// `--max-batch-size`, `--max-wait-ms`.
    pub limits: Limits,
    /// `--policy` (and `--max-hold-ms`).
    pub rule: Rule,
    /// Worker calls under way at once per batcher (`--max-inflight-batches`; by default the
    /// worker's slots, as `serve` does).
    pub max_inflight_batches: usize,
    /// The worker behind each batcher.
    pub worker: WorkerModel,
    /// The gateway's shedding rule (`--latency-objective-ms`, `--shed-wait-ms`).
    pub shed: ShedBound,
    /// `--max-queue-age`: older tasks fail `expired` instead of running.
    pub max_queue_age: Duration,
    /// Time from a request's send to its arrival in the queue.
    pub ingress: Duration,
    /// Time from the end of its worker call to the client having the answer.
    pub egress: Duration,
    /// The CPU that requests pass through on their way in and out, if it is to be modelled.
    pub host: Option<Host>,
    /// Resolution of the batcher's timers: a deadline wakes it at the next whole tick, as
    /// tokio's timer (1 ms) does for the live driver.
    pub timer_tick: Duration,
}

impl Default for Deployment {
    fn default() -> Self {
        Deployment {
            batchers: 1,
            limits: Limits::default(),
            rule: Rule::Fixed,
            max_inflight_batches: 32,
            worker: WorkerModel::default(),
            shed: ShedBound::default(),
            max_queue_age: Duration::from_secs(30),
            ingress: DEFAULT_INGRESS,
            egress: DEFAULT_EGRESS,
            host: None,
            timer_tick: TIMER_TICK,
        }
    }
}

/// When requests are sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Arrivals {
    /// The bench's open-loop schedule: `rate` per second, fixed or Poisson, with bursts.
    Schedule {
        /// Requests per second (between bursts).
        rate: f64,
        /// Spacing of send times.
        kind: ArrivalKind,
        /// Periodic bursts, if any.
        burst: Option<Burst>,
    },
    /// Send times read from a file, as offsets from the start, sorted.
    Trace(Vec<Duration>),
}

/// The load: arrivals over a warmup and a measured window.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// When requests are sent.
    pub arrivals: Arrivals,
    /// The measured window.
    pub duration: Duration,
    /// Sent but not recorded, before the window (the schedule ramps over it, as the bench's).
    pub warmup: Duration,
    /// Seed of the schedule and of the worker's jitter and errors.
    pub seed: u64,
    /// Requests the client keeps in flight at most (`bench --max-connections`): one due while
    /// that many await their answer is not sent and counts as `client_overloaded`, as the
    /// bench counts it. `None`: no limit.
    pub max_in_flight: Option<u64>,
}
