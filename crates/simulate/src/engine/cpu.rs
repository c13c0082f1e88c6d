//! What a request's CPU work leads to, step by step, when the machine's CPU is modelled: the
//! client sends, the gateway admits, the request travels to the queue; a finished call's
//! results are stored by the gateway, then read by the client.

use super::{nanos, Job, Process, Request, Sim};

impl Sim<'_> {
    /// Takes the CPU work done now and moves its request (or call) on.
    pub(super) fn cpu_done(&mut self) {
        let now = self.now;
        let Some(cpu) = &mut self.cpu else {
            return;
        };
        let Some(job) = cpu.take_done(now) else {
            return;
        };
        match job {
            Job::Sent(request) => {
                let work = cpu.gateway_in;
                cpu.push(now, Process::Gateway, work, Job::Admitted(request));
            }
            Job::Admitted(request) => {
                let arrival = now.saturating_add(nanos(self.d.ingress));
                self.pending.push_back((arrival, request));
            }
            Job::Stored(call) => self.stored(call),
            Job::Refused(request) => {
                let work = cpu.client_out;
                let job = Job::Read {
                    requests: vec![request],
                    failed: None,
                };
                cpu.push(now, Process::Client, work, job);
            }
            Job::Read {
                requests,
                failed: Some(failed),
            } => self.answer(&requests, failed, now),
            Job::Read { failed: None, .. } => {
                self.answered_at(now.saturating_add(nanos(self.d.egress)));
            }
        }
    }

    /// The client has read the answers of a call at `read` (failed or not): they reach it
    /// after the way out, and their latencies count from their send times.
    pub(super) fn answer(&mut self, requests: &[Request], failed: bool, read: u64) {
        let answered = read.saturating_add(nanos(self.d.egress));
        for r in requests {
            self.answered_at(answered);
            if !self.measured(r) {
                continue;
            }
            if failed {
                self.count("failed");
                continue;
            }
            let micros = (answered - r.sent) / 1000;
            self.out.latency_us.saturating_record(micros.max(1));
            if let Some(ok) = self.out.outcomes.get_mut("ok") {
                *ok += 1;
            } else {
                self.out.outcomes.insert("ok".to_owned(), 1);
            }
            if let Some(p) = self.point(answered) {
                p.ok += 1;
                p.latency_us.saturating_record(micros.max(1));
            }
        }
    }
}
