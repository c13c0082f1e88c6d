//! A batch's worker call in virtual time: sent when a slot is free (else it waits for one),
//! ended after the worker's modelled cost, and its requests answered.

use std::time::Duration;

use batchgate_policy::Batch;
use rand::Rng;

use super::{nanos, BatchRecord, Call, Event, Job, Process, Request, Sim};

impl Sim<'_> {
    pub(super) fn dispatch(&mut self, b: usize, batch: Batch<Request>) {
        let n = batch.items.len();
        self.out.batches += 1;
        self.out.batched_items += n as u64;
        *self.out.flushes.entry(batch.reason.as_str()).or_insert(0) += 1;
        if let Some(slot) = self.out.batch_sizes.get_mut(n) {
            *slot += 1;
        }
        if let Some(log) = &mut self.out.batch_log {
            log.push(BatchRecord {
                batcher: b,
                at: Duration::from_nanos(self.now),
                requests: batch.items.iter().map(|r| r.index).collect(),
                reason: batch.reason,
            });
        }
        // Tasks past --max-queue-age fail `expired` and are not sent, as dispatch.rs does.
        let max_age = nanos(self.d.max_queue_age);
        let ingress = nanos(self.d.ingress);
        let now = self.now;
        let mut requests = batch.items;
        let before = requests.len();
        let mut expired = Vec::new();
        requests.retain(|r| {
            let old = now.saturating_sub(r.sent.saturating_add(ingress)) > max_age;
            if old {
                expired.push(*r);
            }
            !old
        });
        for r in expired {
            if self.measured(&r) {
                self.count("failed");
            }
            self.answered_at(now.saturating_add(nanos(self.d.egress)));
        }
        if requests.is_empty() && before > 0 {
            // Nothing to send: the slot frees at once.
            self.batchers[b].slots.release();
            return;
        }
        let failed =
            self.d.worker.error_rate > 0.0 && self.rng.random::<f64>() < self.d.worker.error_rate;
        let call = Call {
            batcher: b,
            requests,
            started: now,
            failed,
        };
        let id = match self.free_calls.pop() {
            Some(id) => {
                self.calls[id] = Some(call);
                id
            }
            None => {
                self.calls.push(Some(call));
                self.calls.len() - 1
            }
        };
        if self.batchers[b].running < self.worker_slots {
            self.start(id);
        } else {
            self.batchers[b].waiting.push_back(id);
        }
    }

    /// A call starts running at its worker now.
    pub(super) fn start(&mut self, id: usize) {
        let now = self.now;
        let Some(call) = self.calls[id].as_mut() else {
            return;
        };
        call.started = now;
        let n = call.requests.len();
        let b = call.batcher;
        let mut cost = self.d.worker.cost(n).as_secs_f64();
        if self.d.worker.jitter > 0.0 {
            let j = self.d.worker.jitter;
            cost *= 1.0 + self.rng.random_range(-j..=j);
        }
        let cost = (cost.max(0.0) * 1e9) as u64;
        let batcher = &mut self.batchers[b];
        batcher.running += 1;
        batcher
            .meter
            .call_started(self.base + Duration::from_nanos(now), batcher.slots.limit());
        self.schedule(now + cost, Event::Done(id));
    }

    pub(super) fn done(&mut self, id: usize) {
        let Some(call) = self.calls[id].as_ref() else {
            return;
        };
        let now = self.now;
        let (b, n, started) = (call.batcher, call.requests.len(), call.started);
        let took = Duration::from_nanos(now - started);
        // Worker time inside the measured window.
        let from = started.max(self.warmup);
        let to = now.min(self.end);
        if to > from {
            self.out.worker_call_seconds += (to - from) as f64 / 1e9;
        }
        let at = self.at(now);
        {
            let batcher = &mut self.batchers[b];
            batcher.running -= 1;
            let limit = batcher.slots.limit();
            batcher.meter.call_ended(at, limit);
            batcher.meter.batch_done(n, took);
            batcher.slots.observe(false, took, at);
        }
        if let Some(next) = self.batchers[b].waiting.pop_front() {
            self.start(next);
        }
        // The results are stored on the way out; the slot frees once that work is done.
        match &mut self.cpu {
            Some(cpu) => {
                let work = cpu.gateway_out * n as f64;
                cpu.push(now, Process::Gateway, work, Job::Stored(id));
            }
            None => self.stored(id),
        }
    }

    /// A call's results are stored: its slot frees and its answers go to the client.
    pub(super) fn stored(&mut self, id: usize) {
        let Some(call) = self.calls[id].take() else {
            return;
        };
        self.free_calls.push(id);
        let now = self.now;
        let b = call.batcher;
        self.batchers[b].slots.release();
        match &mut self.cpu {
            // The client reads the answers once its work queued before them is done.
            Some(cpu) => {
                let work = cpu.client_out * call.requests.len() as f64;
                let job = Job::Read {
                    requests: call.requests,
                    failed: Some(call.failed),
                };
                cpu.push(now, Process::Client, work, job);
            }
            None => self.answer(&call.requests, call.failed, now),
        }
        // As in the driver: a freed slot wakes a batcher waiting for one; a batcher already
        // gathering (blocked on the queue until its deadline) sees the new load only at its
        // next arrival or deadline.
        if !self.batchers[b].holding {
            self.poke(b);
        }
    }
}
