//! The machine the simulated deployment shares with its load generator: the CPU of its two
//! processes, and the client's limit on requests in flight.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use super::Request;

/// The process a piece of CPU work belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Process {
    /// The load generator.
    Client = 0,
    /// The server (`serve`: gateway, batcher and in-process worker).
    Gateway = 1,
}

/// What a piece of CPU work leads to once it is done.
#[derive(Debug)]
pub(super) enum Job {
    /// The client has built and sent the request: the gateway reads and admits it.
    Sent(Request),
    /// The gateway has admitted the request: it reaches the queue after the way in.
    Admitted(Request),
    /// The gateway has stored a finished call's results: the call's slot frees.
    Stored(usize),
    /// The gateway has written a refusal (shed): the client reads it.
    Refused(Request),
    /// The client has read these answers; `failed` if the call failed, `None` for a refusal
    /// (not a latency).
    Read {
        requests: Vec<Request>,
        failed: Option<bool>,
    },
}

/// The machine's CPU (see [`crate::model::Host`]): each process's work is one
/// first-come-first-served queue, and the kernel's fair scheduler splits the cores evenly
/// between runnable threads: a thread per core in each process with work queued (both run
/// tokio's default runtime) and the other work's threads. A process alone with work, on an
/// otherwise idle machine, gets every core. The queues are fluid: the work at the head of each
/// is done at its process's current share of the cores.
#[derive(Debug)]
pub(super) struct Cpu {
    /// A request's work on the way in, the client's (building and sending it), in ns of one
    /// core.
    pub(super) client_in: f64,
    /// Then the gateway's (reading and admitting it).
    pub(super) gateway_in: f64,
    /// The gateway's work per task on the way out, before the batcher's slot frees.
    pub(super) gateway_out: f64,
    /// The client's work per answer.
    pub(super) client_out: f64,
    /// Cores of the machine.
    cores: f64,
    /// Runnable threads of other work on the machine, each as busy as can be.
    other_threads: f64,
    /// Each process's queue: work left (ns of one core) and what it leads to.
    queues: [VecDeque<(f64, Job)>; 2],
    /// The time the work left in the queues is counted at.
    at: u64,
}

impl Cpu {
    pub(super) fn new(host: &crate::model::Host) -> Self {
        // Half of each side's CPU on the way in, half on the way out.
        let half = |cpu: Duration| cpu.as_secs_f64() / 2.0 * 1e9;
        Cpu {
            client_in: half(host.client_cpu),
            gateway_in: half(host.gateway_cpu),
            gateway_out: half(host.gateway_cpu),
            client_out: half(host.client_cpu),
            cores: host.cores.max(1e-9),
            other_threads: host.other_threads.max(0.0),
            queues: [VecDeque::new(), VecDeque::new()],
            at: 0,
        }
    }

    /// Cores each process with work gets now: the kernel shares the cores evenly between
    /// runnable threads, a thread per core in each busy process and the other work's threads.
    fn share(&self) -> f64 {
        let busy = self.queues.iter().filter(|q| !q.is_empty()).count().max(1) as f64;
        let threads = self.cores;
        (self.cores * threads / (threads * busy + self.other_threads)).min(self.cores)
    }

    /// Counts the work done from `self.at` to `to`. The caller never passes the next
    /// completion ([`Cpu::next_done`]) without taking it ([`Cpu::take_done`]).
    fn advance(&mut self, to: u64) {
        if to > self.at {
            let done = (to - self.at) as f64 * self.share();
            for queue in &mut self.queues {
                if let Some((left, _)) = queue.front_mut() {
                    *left -= done;
                }
            }
            self.at = to;
        }
    }

    /// Queues `work` (ns of one core) of `process` at `now`.
    pub(super) fn push(&mut self, now: u64, process: Process, work: f64, job: Job) {
        self.advance(now);
        self.queues[process as usize].push_back((work.max(0.0), job));
    }

    /// When the next piece of work is done, if nothing else is queued before.
    pub(super) fn next_done(&self) -> Option<u64> {
        let share = self.share();
        self.queues
            .iter()
            .filter_map(|q| q.front())
            .map(|(left, _)| self.at + (left.max(0.0) / share).ceil() as u64)
            .min()
    }

    /// The work done by `now` (the caller's time is [`Cpu::next_done`]): the head of the queue
    /// with the least work left, which the rounding up of `next_done` has brought to zero or
    /// below. Taking it whatever is left keeps the event loop moving.
    pub(super) fn take_done(&mut self, now: u64) -> Option<Job> {
        self.advance(now);
        let i = (0..self.queues.len())
            .filter(|&i| !self.queues[i].is_empty())
            .min_by(|&a, &b| {
                let left = |i: usize| self.queues[i].front().map_or(0.0, |(l, _)| *l);
                left(a).total_cmp(&left(b))
            })?;
        self.queues[i].pop_front().map(|(_, job)| job)
    }

    /// No work queued.
    pub(super) fn is_idle(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }
}

/// The client's requests in flight, for its limit: answer times of those sent.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) limit: u64,
    pub(super) in_flight: u64,
    /// When each request in flight gets (or got) its answer, earliest first.
    pub(super) answers: BinaryHeap<Reverse<u64>>,
}

impl Client {
    /// Whether a request may be sent at `t` (answers due by then are taken into account).
    pub(super) fn may_send(&mut self, t: u64) -> bool {
        while self.answers.peek().is_some_and(|Reverse(a)| *a <= t) {
            self.answers.pop();
            self.in_flight -= 1;
        }
        self.in_flight < self.limit
    }
}
