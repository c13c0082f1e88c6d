//! The event loop: arrivals, the batchers' gather loops, worker calls and the gateway's
//! shedding, in virtual time.
//!
//! Nothing here decides when a batch goes or whether a slot is free: that is
//! [`batchgate_batcher::gather::step`] over the real [`Policy`], and
//! [`batchgate_batcher::slots::SlotState`], the same code the live batcher runs. The workers'
//! load report is the batcher's own [`LoadMeter`], and shedding is the gateway's own
//! [`Shedder`]. What the loop adds is time: each batcher is woken, as the driver's blocking
//! read would be, when a task reaches its queue, when one of its calls ends, and at the
//! deadline the policy names. And, when modelled, the client and the machine: the client's
//! limit on requests in flight (a request due past it is not sent), and the CPU that every
//! request's way in and out, and a finished call's storing of results before its slot frees,
//! wait for (see [`crate::model::Host`]).
//!
//! Virtual time is a count of nanoseconds since the start, mapped onto `Instant`s for the
//! policy. At one instant, call completions are handled first, then sends, then CPU work
//! done, then arrivals in the queue, then timers and samples (completions before arrivals is
//! the order the live driver shows under tokio's paused clock).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use batchgate_batcher::gather::{self, Step};
use batchgate_batcher::load::{LoadMeter, REPORT_EVERY};
use batchgate_batcher::slots::{Aimd, SlotState, INITIAL_ROUND_TRIP};
use batchgate_bench::arrivals::{RateCurve, Schedule};
use batchgate_gateway::Shedder;
use batchgate_policy::Policy;
use batchgate_queue::WorkerLoad;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::model::{Arrivals, Deployment, Load};

mod calls;
mod cpu;
mod host;
mod outcome;

use host::{Client, Cpu, Job, Process};
pub use outcome::{BatchRecord, Outcome, Point};

/// How often the gateway samples the queue and the load board (as `shed.rs` does).
const SHED_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Most points of a time series; longer runs put several seconds in one point.
const MAX_POINTS: u64 = 600;

/// A request in the system: its index and when it was sent (ns since the start).
#[derive(Debug, Clone, Copy)]
struct Request {
    index: u64,
    sent: u64,
}

/// A call under way at a worker.
#[derive(Debug)]
struct Call {
    batcher: usize,
    requests: Vec<Request>,
    started: u64,
    failed: bool,
}

/// One batcher with its queue partition and its worker.
#[derive(Debug)]
struct BatcherSim {
    policy: Policy<Request>,
    slots: SlotState,
    /// Whether the gather loop holds a free slot.
    holding: bool,
    /// Tasks in its queue, not yet read.
    queue: VecDeque<Request>,
    /// The earliest wake-up scheduled for it, if any.
    timer: Option<u64>,
    meter: LoadMeter,
    /// The last load report.
    report: WorkerLoad,
    /// Calls running at its worker.
    running: usize,
    /// Calls waiting for a worker slot (only when more may be in flight than the worker has
    /// slots).
    waiting: VecDeque<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A worker call ends (index into the calls).
    Done(usize),
    /// A batcher's deadline.
    Timer(usize),
    /// The batchers report their load.
    Report,
    /// The gateway samples the queue and the reports.
    ShedSample,
}

/// The arrival times, in order.
enum Source {
    Schedule(Box<Schedule>),
    Trace(std::vec::IntoIter<Duration>),
}

impl Source {
    fn next(&mut self) -> Duration {
        match self {
            Source::Schedule(s) => s.next_offset(),
            Source::Trace(t) => t.next().unwrap_or(Duration::MAX),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs a simulation. `log_batches` keeps every batch (for tests; costly at scale).
pub fn run(deployment: &Deployment, load: &Load, log_batches: bool) -> Outcome {
    Sim::new(deployment, load, log_batches).run(load)
}

struct Sim<'a> {
    d: &'a Deployment,
    base: Instant,
    now: u64,
    end: u64,
    warmup: u64,
    batchers: Vec<BatcherSim>,
    calls: Vec<Option<Call>>,
    free_calls: Vec<usize>,
    heap: BinaryHeap<Reverse<(u64, Event, u64)>>,
    seq: u64,
    shedder: Shedder,
    rng: StdRng,
    queued: u64,
    out: Outcome,
    worker_slots: usize,
    /// The machine's CPU, if modelled.
    cpu: Option<Cpu>,
    /// The client's limit on requests in flight, if any.
    client: Option<Client>,
    /// Requests admitted and on their way to the queue, with their arrival times (in order: the
    /// way in takes the same fixed time after the gateway's first-come-first-served CPU).
    pending: VecDeque<(u64, Request)>,
}

impl<'a> Sim<'a> {
    fn new(d: &'a Deployment, load: &Load, log_batches: bool) -> Self {
        let batchers = (0..d.batchers.max(1))
            .map(|_| BatcherSim {
                policy: Policy::new(d.limits, d.rule),
                slots: SlotState::new(Aimd::new(d.max_inflight_batches, true, INITIAL_ROUND_TRIP)),
                holding: false,
                queue: VecDeque::new(),
                timer: None,
                meter: LoadMeter::default(),
                report: WorkerLoad::default(),
                running: 0,
                waiting: VecDeque::new(),
            })
            .collect::<Vec<_>>();
        let measured = load.duration;
        let secs = measured.as_secs().max(1);
        let point_secs = secs.div_ceil(MAX_POINTS).max(1);
        let n_points = usize::try_from(measured.as_secs_f64().ceil() as u64 / point_secs + 1)
            .unwrap_or(usize::MAX);
        let worker_slots = d.worker.slots.max(1);
        Sim {
            d,
            base: Instant::now(),
            now: 0,
            end: nanos(load.warmup + load.duration),
            warmup: nanos(load.warmup),
            calls: Vec::new(),
            free_calls: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            shedder: Shedder::new(d.shed),
            rng: StdRng::seed_from_u64(load.seed ^ 0x0005_eed0_fa11),
            queued: 0,
            out: Outcome {
                sent: 0,
                requests: 0,
                outcomes: BTreeMap::new(),
                latency_us: batchgate_bench::latency_histogram(),
                batches: 0,
                batched_items: 0,
                flushes: BTreeMap::new(),
                batch_sizes: vec![0; d.limits.max_batch_size.max(1) + 1],
                worker_call_seconds: 0.0,
                total_slots: worker_slots * batchers.len(),
                measured,
                point_secs,
                points: (0..n_points.min(1 << 20))
                    .map(|_| Point {
                        ok: 0,
                        shed: 0,
                        latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                            .expect("constant histogram bounds are valid. This is a bug."),
                    })
                    .collect(),
                events: 0,
                batch_log: log_batches.then(Vec::new),
            },
            batchers,
            worker_slots,
            cpu: d.host.as_ref().map(Cpu::new),
            client: load.max_in_flight.map(|limit| Client {
                limit,
                in_flight: 0,
                answers: BinaryHeap::new(),
            }),
            pending: VecDeque::new(),
        }
    }

    fn at(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    fn schedule(&mut self, t: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse((t, event, self.seq)));
    }

    fn run(mut self, load: &Load) -> Outcome {
        let mut source =
            match &load.arrivals {
                Arrivals::Schedule { rate, kind, burst } => Source::Schedule(Box::new(
                    Schedule::new(*kind, RateCurve::new(*rate, *burst, load.warmup), load.seed),
                )),
                Arrivals::Trace(times) => Source::Trace(times.clone().into_iter()),
            };
        self.schedule(0, Event::Report);
        self.schedule(0, Event::ShedSample);

        let ingress = nanos(self.d.ingress);
        let mut index = 0u64;
        let mut next_sent = nanos(source.next());
        loop {
            if next_sent >= self.end {
                next_sent = u64::MAX;
            }
            // Without a CPU to wait for, a request reaches the queue a fixed time after its
            // send, so both are one step.
            let next_arrival = match (&self.cpu, self.pending.front()) {
                (None, _) if next_sent < u64::MAX => next_sent.saturating_add(ingress),
                (_, Some((t, _))) => *t,
                _ => u64::MAX,
            };
            let (next_event, first) = self
                .heap
                .peek()
                .map_or((u64::MAX, false), |Reverse((t, event, _))| {
                    (*t, matches!(event, Event::Done(_)))
                });
            if next_sent == u64::MAX && next_arrival == u64::MAX && self.idle() {
                break;
            }
            let next_cpu = self
                .cpu
                .as_ref()
                .and_then(Cpu::next_done)
                .unwrap_or(u64::MAX);
            // Completions before sends before CPU work before arrivals before everything else
            // at one instant.
            let next_request = match self.cpu {
                Some(_) => next_sent.min(next_cpu).min(next_arrival),
                None => next_arrival,
            };
            if next_event < next_request || (next_event == next_request && first) {
                let Some(Reverse((t, event, _))) = self.heap.pop() else {
                    break;
                };
                self.out.events += 1;
                self.now = t;
                self.handle(event);
            } else if self.cpu.is_none() {
                self.out.events += 1;
                self.now = next_arrival;
                let request = Request {
                    index,
                    sent: next_sent,
                };
                index += 1;
                next_sent = nanos(source.next());
                if self.send(request) {
                    let batcher =
                        usize::try_from(request.index % self.batchers.len() as u64).unwrap_or(0);
                    self.arrive(batcher, request);
                }
            } else if next_sent <= next_cpu.min(next_arrival) {
                self.now = next_sent;
                self.send(Request {
                    index,
                    sent: next_sent,
                });
                index += 1;
                next_sent = nanos(source.next());
            } else if next_cpu <= next_arrival {
                self.out.events += 1;
                self.now = next_cpu;
                self.cpu_done();
            } else if let Some((t, request)) = self.pending.pop_front() {
                self.out.events += 1;
                self.now = t;
                let batcher =
                    usize::try_from(request.index % self.batchers.len() as u64).unwrap_or(0);
                self.arrive(batcher, request);
            }
        }
        self.out
    }

    /// The client sends a request (unless its limit of requests in flight is reached); it
    /// reaches the queue after the way in. True when it is in the queue at once: no CPU is
    /// modelled, and the caller handles its arrival.
    fn send(&mut self, request: Request) -> bool {
        let measured = self.measured(&request);
        if let Some(client) = &mut self.client {
            if !client.may_send(request.sent) {
                if measured {
                    self.count("client_overloaded");
                }
                return false;
            }
            client.in_flight += 1;
        }
        self.out.requests += 1;
        if measured {
            self.out.sent += 1;
        }
        let Some(cpu) = &mut self.cpu else {
            return true;
        };
        let work = cpu.client_in;
        cpu.push(self.now, Process::Client, work, Job::Sent(request));
        false
    }

    /// A request's answer reaches the client at `t` (its slot in the client's limit frees).
    fn answered_at(&mut self, t: u64) {
        if let Some(client) = &mut self.client {
            client.answers.push(Reverse(t));
        }
    }

    /// No arrivals are left: stop once every task has been answered.
    fn idle(&self) -> bool {
        self.pending.is_empty()
            && self.cpu.as_ref().is_none_or(Cpu::is_idle)
            && self.queued == 0
            && self.calls.len() == self.free_calls.len()
            && self.batchers.iter().all(|b| b.policy.is_empty())
    }

    fn measured(&self, request: &Request) -> bool {
        request.sent >= self.warmup
    }

    fn point(&mut self, t: u64) -> Option<&mut Point> {
        let since = t.checked_sub(self.warmup)?;
        let i = since / 1_000_000_000 / self.out.point_secs;
        self.out.points.get_mut(usize::try_from(i).ok()?)
    }

    fn count(&mut self, kind: &str) {
        match self.out.outcomes.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.out.outcomes.insert(kind.to_owned(), 1);
            }
        }
    }

    fn arrive(&mut self, b: usize, request: Request) {
        let measured = self.measured(&request);
        if self.shedder.check(None).is_err() {
            if measured {
                self.count("http_503:overloaded");
                let now = self.now;
                if let Some(p) = self.point(now) {
                    p.shed += 1;
                }
            }
            // The refusal goes back the way out.
            match &mut self.cpu {
                Some(cpu) => {
                    let work = cpu.gateway_out;
                    cpu.push(self.now, Process::Gateway, work, Job::Refused(request));
                }
                None => self.answered_at(self.now.saturating_add(nanos(self.d.egress))),
            }
            return;
        }
        self.shedder.admitted();
        self.queued += 1;
        let now = self.at(self.now);
        let batcher = &mut self.batchers[b];
        batcher.queue.push_back(request);
        // A gathering batcher is blocked reading the queue: the read returns what arrived, and
        // it joins the buffer before the policy decides again.
        let room = batcher.policy.room();
        if batcher.holding && room > 0 {
            let n = room.min(batcher.queue.len());
            self.queued -= n as u64;
            gather::absorb(&mut batcher.policy, batcher.queue.drain(..n), now);
        }
        self.poke(b);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Done(call) => self.done(call),
            Event::Timer(b) => {
                if self.batchers[b].timer == Some(self.now) {
                    self.batchers[b].timer = None;
                }
                self.poke(b);
            }
            Event::Report => {
                let now = self.at(self.now);
                for b in &mut self.batchers {
                    b.report = b.meter.sample(now, b.slots.limit());
                }
                if !self.idle_after_end() {
                    self.schedule(self.now + nanos(REPORT_EVERY), Event::Report);
                }
            }
            Event::ShedSample => {
                let load = WorkerLoad::combine(self.batchers.iter().map(|b| b.report));
                self.shedder.set(load.unwrap_or_default(), self.queued);
                if !self.idle_after_end() {
                    self.schedule(self.now + nanos(SHED_SAMPLE_EVERY), Event::ShedSample);
                }
            }
        }
    }

    /// Past the end of the arrivals with nothing left to do: periodic events stop.
    fn idle_after_end(&self) -> bool {
        self.now >= self.end && self.idle()
    }

    /// Runs batcher `b`'s gather loop at the current time, as far as it goes without waiting.
    fn poke(&mut self, b: usize) {
        let now = self.at(self.now);
        loop {
            let batcher = &mut self.batchers[b];
            if !batcher.holding {
                if !batcher.slots.try_take() {
                    return;
                }
                batcher.holding = true;
            }
            match gather::step(&mut batcher.policy, now, batcher.slots.load()) {
                Step::Dispatch(batch) => {
                    batcher.holding = false;
                    self.dispatch(b, batch);
                }
                Step::Read { max, until } => {
                    if max > 0 && !batcher.queue.is_empty() {
                        let n = max.min(batcher.queue.len());
                        self.queued -= n as u64;
                        gather::absorb(&mut batcher.policy, batcher.queue.drain(..n), now);
                        continue;
                    }
                    if let Some(until) = until {
                        let tick = nanos(self.d.timer_tick).max(1);
                        let t = nanos(until.saturating_duration_since(self.base));
                        let t = t.div_ceil(tick).saturating_mul(tick).max(self.now);
                        if batcher
                            .timer
                            .is_none_or(|pending| t < pending || pending < self.now)
                        {
                            batcher.timer = Some(t);
                            self.schedule(t, Event::Timer(b));
                        }
                    }
                    return;
                }
            }
        }
    }
}
