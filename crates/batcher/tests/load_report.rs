//! The load report against a busy machine, under tokio's paused clock: the batcher, the
//! in-process simulated worker, the in-memory queue and load board, and the gateway's
//! shedder, fed 10,000 tasks a second for 6 s of virtual time.
//!
//! On a machine short of CPU every call of an in-process worker runs late (its timer fires
//! late, its task waits to be polled): with 40 slots at 10,000 tasks a second, calls that take
//! 300 ms instead of the modelled 200 ms fill every slot and the queue grows, though the
//! worker itself is 78% busy. The shedder must not take that for saturated workers. Workers
//! that are saturated in their own time (20 slots at the same rate) must still be shed for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use batchgate_batcher::{Batcher, BatcherConfig, BatcherMetrics};
use batchgate_gateway::{ShedBound, Shedder};
use batchgate_policy::Limits;
use batchgate_protocol::task::Task;
use batchgate_queue::memory::{MemoryDeadLetters, MemoryQueue};
use batchgate_queue::{LoadBoard, MemoryLoadBoard, Queue};
use batchgate_sim::{SimConfig, SimWorker};
use batchgate_store::memory::MemoryResultStore;
use batchgate_store::ResultStore;
use batchgate_worker::{Output, Worker, WorkerError};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The simulated worker on a process whose every call comes back `late`: what a machine
/// whose CPU is taken does to an in-process worker. The worker's own cost is unchanged, and
/// it says so.
struct RunLate {
    inner: SimWorker,
    late: Duration,
}

#[async_trait]
impl Worker for RunLate {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        let outputs = self.inner.infer(inputs).await;
        tokio::time::sleep(self.late).await;
        outputs
    }

    fn expected_call(&self, inputs: usize) -> Option<Duration> {
        self.inner.expected_call(inputs)
    }
}

/// What a run at 10,000 tasks a second did: tasks shed, tasks admitted.
struct Run {
    shed: u64,
    admitted: u64,
}

/// 10,000 tasks a second for 6 s, each admitted only if the shedder lets it (as the gateway
/// does), in front of a batcher with `slots` slots calling the simulated worker (the same
/// number of slots, default costs: ≈ 200 ms for 64 inputs) whose calls come back `late`.
async fn run(slots: usize, late: Duration) -> Run {
    let queue = Arc::new(MemoryQueue::new(16, 1_000_000));
    let store = Arc::new(MemoryResultStore::new(1_000_000, Duration::from_secs(600)));
    let board: Arc<MemoryLoadBoard> = Arc::new(MemoryLoadBoard::default());
    let worker = RunLate {
        inner: SimWorker::new(SimConfig {
            slots,
            ..SimConfig::default()
        }),
        late,
    };
    let batcher = Batcher::new(
        queue.clone(),
        store.clone(),
        Arc::new(MemoryDeadLetters::new(1000)),
        Arc::new(worker),
        BatcherConfig {
            limits: Limits::default(),
            max_inflight_batches: slots,
            ..BatcherConfig::default()
        },
        BatcherMetrics::register(&mut Registry::default()),
    )
    .with_load_board(board.clone(), "batcher-1".into());
    let stop = CancellationToken::new();
    let batcher = tokio::spawn(batcher.run(stop.clone()));
    let shedder = Arc::new(Shedder::new(ShedBound::default()));
    let sampling = tokio::spawn(shedder.clone().run(
        queue.clone() as Arc<dyn Queue>,
        board.clone() as Arc<dyn LoadBoard>,
        stop.clone(),
    ));
    let (shed, admitted) = (AtomicU64::new(0), AtomicU64::new(0));
    let mut every = tokio::time::interval(Duration::from_millis(10));
    for tick in 0..600u64 {
        every.tick().await;
        for i in 0..100u64 {
            if shedder.check(None).is_err() {
                shed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let id = format!("t{tick}-{i}");
            store.create(&id, 0, None).await.expect("create");
            queue
                .enqueue(Task {
                    task_id: id,
                    input: format!("input {tick} {i}"),
                    enqueued_at: SystemTime::now(),
                    reply_to: None,
                    deadline: None,
                    owner: None,
                    trace_parent: None,
                    zone: None,
                })
                .await
                .expect("enqueue");
            shedder.admitted();
            admitted.fetch_add(1, Ordering::Relaxed);
        }
    }
    stop.cancel();
    sampling.await.expect("sampler");
    batcher.abort();
    Run {
        shed: shed.into_inner(),
        admitted: admitted.into_inner(),
    }
}

#[tokio::test(start_paused = true)]
async fn calls_slowed_by_the_machine_do_not_pass_for_saturated_workers() {
    // 40 slots: the worker could take 12,800 a second in its own time; every call 100 ms
    // late, they take 8,500, and the queue grows. Nothing is shed.
    let starved = run(40, Duration::from_millis(100)).await;
    assert_eq!(
        (starved.shed, starved.admitted),
        (0, 60_000),
        "tasks shed because the machine, not the worker, was slow"
    );
}

#[tokio::test(start_paused = true)]
async fn workers_saturated_in_their_own_time_are_still_shed_for() {
    // 20 slots take 6,400 a second: the worker is the bottleneck, and about a third of the
    // 10,000 a second is shed once its load is known.
    let saturated = run(20, Duration::ZERO).await;
    assert!(
        saturated.shed > 10_000 && saturated.admitted < 50_000,
        "shed {} admitted {}",
        saturated.shed,
        saturated.admitted
    );
}
