//! The machine the simulated deployment shares with its load generator: one CPU queue, and
//! the client's limit on requests in flight.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// The machine's CPU as one first-come-first-served queue of work (see [`crate::model::Host`]):
/// work due at a time ends once the work queued before it and its own are done. Work is in
/// nanoseconds of the whole machine (CPU time ÷ cores).
#[derive(Debug)]
pub(super) struct Cpu {
    /// A request's work on the way in: the client's and the gateway's halves.
    pub(super) way_in: u64,
    /// The gateway's work per task on the way out, before the batcher's slot frees.
    pub(super) gateway_out: u64,
    /// The client's work per answer.
    pub(super) client_out: u64,
    /// When the work queued so far is done.
    pub(super) free_at: u64,
}

impl Cpu {
    pub(super) fn new(host: &crate::model::Host) -> Self {
        // Half of each side's CPU on the way in, half on the way out, spread over the cores.
        let half = |cpu: Duration| (cpu.as_secs_f64() / 2.0 / host.cores.max(1e-9) * 1e9) as u64;
        Cpu {
            way_in: half(host.gateway_cpu) + half(host.client_cpu),
            gateway_out: half(host.gateway_cpu),
            client_out: half(host.client_cpu),
            free_at: 0,
        }
    }

    /// Queues `work` at `at`; returns when it is done.
    pub(super) fn run(&mut self, at: u64, work: u64) -> u64 {
        self.free_at = self.free_at.max(at) + work;
        self.free_at
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
