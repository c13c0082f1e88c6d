//! The simulator and the live batcher run the same batching code: fed the same arrival times,
//! with a worker of the same cost, they send the same batches at the same times.
//!
//! The live side is the real `Batcher` on the in-process queue (one partition, so tasks leave
//! it in arrival order) under tokio's paused clock, so its times are exact; the simulated side
//! is `engine::run` with a trace of the same times. Arrivals fall on whole milliseconds, as
//! tokio's timers do. Both sides call the same `Policy`, `gather::step` and `SlotState`, so a
//! change to any of them changes both; what this test guards is the simulator's loop around
//! them: when a batcher wakes (arrivals, its deadline, a slot freed while it waits for one),
//! and in which order at one instant. Earlier versions of that loop failed it (a freed slot
//! re-deciding a batch the live driver only sees at its next wake-up; deciding before reading
//! a task that arrived at the deadline's very instant).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use batchgate_batcher::{Batcher, BatcherConfig, BatcherMetrics};
use batchgate_gateway::ShedBound;
use batchgate_policy::{Adaptive, Limits, Rule};
use batchgate_protocol::sim_output;
use batchgate_protocol::task::Task;
use batchgate_queue::memory::{MemoryDeadLetters, MemoryQueue};
use batchgate_queue::Queue;
use batchgate_simulate::engine;
use batchgate_simulate::model::TIMER_TICK;
use batchgate_simulate::{Arrivals, Deployment, Load, WorkerModel};
use batchgate_store::memory::MemoryResultStore;
use batchgate_store::ResultStore;
use batchgate_worker::{Output, Worker, WorkerError};
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const MS: Duration = Duration::from_millis(1);
const BASE: Duration = Duration::from_millis(100);
const PER_ITEM: Duration = Duration::from_millis(1);
const SLOTS: usize = 2;

/// A batch as both sides see it: when it went (ms since the start) and which requests it held.
type Boundary = (u64, Vec<u64>);

/// A worker that costs `BASE + PER_ITEM × n`, as the simulator's model, and records each call.
struct Recording {
    start: Instant,
    calls: Mutex<Vec<Boundary>>,
}

#[async_trait]
impl Worker for Recording {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        let at = u64::try_from(self.start.elapsed().as_millis()).expect("small");
        let mut ids: Vec<u64> = inputs
            .iter()
            .map(|i| i.parse().expect("inputs are request indexes"))
            .collect();
        ids.sort_unstable();
        self.calls.lock().expect("lock").push((at, ids));
        tokio::time::sleep(BASE + PER_ITEM * u32::try_from(inputs.len()).expect("small")).await;
        Ok(inputs.iter().map(|i| Output::Text(sim_output(i))).collect())
    }
}

/// Arrival times in ms: a lone request, a steady stream on a 3 ms grid (timer flushes, and
/// full batches once it speeds up), bursts bigger than a batch while both slots are busy (the
/// backlog waits in the queue and leaves as full batches), and a tail that trickles out.
fn arrivals() -> Vec<u64> {
    let mut t = vec![1];
    t.extend((0..60).map(|i| 301 + 3 * i)); // 1 per 3 ms
    t.extend(std::iter::repeat_n(499, 70)); // a burst of 70 at once
    t.extend(std::iter::repeat_n(502, 140)); // and 140 more
    t.extend((0..40).map(|i| 700 + 3 * i));
    t.extend([1201, 1204, 1300]);
    t
}

async fn live(rule: Rule, times: &[u64]) -> Vec<Boundary> {
    let start = Instant::now();
    // One partition: the queue hands tasks out in arrival order, as the simulator's does (with
    // 16, the order across partitions follows the task ids' hashes).
    let queue = Arc::new(MemoryQueue::new(1, 100_000));
    let store = Arc::new(MemoryResultStore::new(100_000, Duration::from_secs(600)));
    let worker = Arc::new(Recording {
        start,
        calls: Mutex::default(),
    });
    let batcher = Batcher::new(
        queue.clone(),
        store.clone(),
        Arc::new(MemoryDeadLetters::new(1000)),
        worker.clone(),
        BatcherConfig {
            limits: Limits::default(),
            max_inflight_batches: SLOTS,
            rule,
            ..BatcherConfig::default()
        },
        BatcherMetrics::register(&mut Registry::default()),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(batcher.run(shutdown.clone()));
    for (i, at) in times.iter().enumerate() {
        tokio::time::sleep_until(start + MS * u32::try_from(*at).expect("small")).await;
        let id = format!("t{i}");
        store.create(&id, 0, None).await.expect("create");
        queue
            .enqueue(Task {
                task_id: id,
                input: i.to_string(),
                enqueued_at: SystemTime::now(),
                reply_to: None,
                deadline: None,
                owner: None,
                trace_parent: None,
                zone: None,
            })
            .await
            .expect("enqueue");
    }
    for i in 0..times.len() {
        let done = store
            .wait(&format!("t{i}"), Duration::from_secs(60))
            .await
            .expect("wait")
            .expect("exists");
        assert_eq!(
            done.status,
            batchgate_protocol::api::TaskStatus::Success,
            "t{i}"
        );
    }
    shutdown.cancel();
    running.await.expect("batcher");
    let calls = worker.calls.lock().expect("lock").clone();
    calls
}

fn simulated(rule: Rule, times: &[u64]) -> Vec<Boundary> {
    let deployment = Deployment {
        batchers: 1,
        limits: Limits::default(),
        rule,
        max_inflight_batches: SLOTS,
        worker: WorkerModel {
            slots: SLOTS,
            base: BASE,
            per_item: PER_ITEM,
            jitter: 0.0,
            error_rate: 0.0,
        },
        shed: ShedBound::Off,
        max_queue_age: Duration::from_secs(30),
        ingress: Duration::ZERO,
        egress: Duration::ZERO,
        host: None,
        timer_tick: TIMER_TICK,
    };
    let load = Load {
        arrivals: Arrivals::Trace(
            times
                .iter()
                .map(|ms| MS * u32::try_from(*ms).expect("small"))
                .collect(),
        ),
        duration: Duration::from_secs(2),
        warmup: Duration::ZERO,
        seed: 1,
        max_in_flight: None,
    };
    let out = engine::run(&deployment, &load, true);
    assert_eq!(out.outcomes.get("ok").copied(), Some(times.len() as u64));
    out.batch_log
        .expect("asked for the batch log")
        .into_iter()
        .map(|b| {
            let mut ids = b.requests;
            ids.sort_unstable();
            (u64::try_from(b.at.as_millis()).expect("small"), ids)
        })
        .collect()
}

fn check(rule: Rule, live: &[Boundary]) {
    let times = arrivals();
    let sim = simulated(rule, &times);
    let sizes = |b: &[Boundary]| {
        b.iter()
            .map(|(at, ids)| (*at, ids.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sizes(&sim),
        sizes(live),
        "{rule:?}: batch times and sizes differ (simulated, then live)"
    );
    assert_eq!(sim, live, "{rule:?}: batch contents differ");
    // The scenario exercises the policy: more than one kind of batch, and full ones.
    assert!(live.iter().any(|(_, ids)| ids.len() == 64), "{live:?}");
    assert!(live.iter().any(|(_, ids)| ids.len() < 64), "{live:?}");
}

#[tokio::test(start_paused = true)]
async fn fixed_policy_same_batches_live_and_simulated() {
    let live = live(Rule::Fixed, &arrivals()).await;
    check(Rule::Fixed, &live);
}

#[tokio::test(start_paused = true)]
async fn adaptive_policy_same_batches_live_and_simulated() {
    let rule = Rule::Adaptive(Adaptive::default());
    let live = live(rule, &arrivals()).await;
    check(rule, &live);
}
