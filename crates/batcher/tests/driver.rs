//! The driver on in-process backends, under tokio's paused clock: flush timing is exact.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use batchgate_batcher::{Batcher, BatcherConfig, BatcherMetrics};
use batchgate_policy::Limits;
use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::sim_output;
use batchgate_protocol::task::Task;
use batchgate_queue::memory::{MemoryDeadLetters, MemoryQueue};
use batchgate_queue::{Delivery, LoadBoard, MemoryLoadBoard, Queue, QueueError, Receipt};
use batchgate_store::memory::MemoryResultStore;
use batchgate_store::ResultStore;
use batchgate_worker::{Output, Worker, WorkerError};
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A worker that records when each call started and how big it was.
struct Recording {
    calls: Mutex<Vec<(Instant, usize)>>,
    cost: Duration,
    fail: bool,
}

#[async_trait]
impl Worker for Recording {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        self.calls
            .lock()
            .expect("lock")
            .push((Instant::now(), inputs.len()));
        tokio::time::sleep(self.cost).await;
        if self.fail {
            return Err(WorkerError::Status {
                status: 500,
                message: "boom".into(),
            });
        }
        Ok(inputs.iter().map(|i| Output::Text(sim_output(i))).collect())
    }
}

struct Harness {
    queue: Arc<dyn Queue>,
    store: Arc<dyn ResultStore>,
    worker: Arc<Recording>,
    shutdown: CancellationToken,
    batcher: tokio::task::JoinHandle<batchgate_batcher::DrainReport>,
}

fn start(max_inflight: usize, cost: Duration, fail: bool) -> Harness {
    let store = Arc::new(MemoryResultStore::new(100_000, Duration::from_secs(600)));
    start_with(store, max_inflight, cost, fail)
}

fn start_with(
    store: Arc<dyn ResultStore>,
    max_inflight: usize,
    cost: Duration,
    fail: bool,
) -> Harness {
    start_on(
        Arc::new(MemoryQueue::new(16, 100_000)),
        store,
        max_inflight,
        cost,
        fail,
    )
}

fn start_on(
    queue: Arc<dyn Queue>,
    store: Arc<dyn ResultStore>,
    max_inflight: usize,
    cost: Duration,
    fail: bool,
) -> Harness {
    let worker = Arc::new(Recording {
        calls: Mutex::default(),
        cost,
        fail,
    });
    let batcher = Batcher::new(
        queue.clone(),
        store.clone(),
        Arc::new(MemoryDeadLetters::new(1000)),
        worker.clone(),
        BatcherConfig {
            limits: Limits::default(),
            max_inflight_batches: max_inflight,
            ..BatcherConfig::default()
        },
        BatcherMetrics::register(&mut Registry::default()),
    );
    let shutdown = CancellationToken::new();
    let batcher = tokio::spawn(batcher.run(shutdown.clone()));
    Harness {
        queue,
        store,
        worker,
        shutdown,
        batcher,
    }
}

impl Harness {
    async fn submit(&self, n: usize, tag: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let id = format!("{tag}-{i}");
            self.store.create(&id, 0, None).await.expect("create");
            self.queue
                .enqueue(Task {
                    task_id: id.clone(),
                    input: format!("input {tag} {i}"),
                    enqueued_at: SystemTime::now(),
                    reply_to: None,
                    deadline: None,
                    owner: None,
                    trace_parent: None,
                    zone: None,
                })
                .await
                .expect("enqueue");
            ids.push(id);
        }
        ids
    }

    async fn wait_all(&self, ids: &[String]) -> Vec<TaskStatus> {
        let mut out = Vec::new();
        for id in ids {
            let r = self
                .store
                .wait(id, Duration::from_secs(60))
                .await
                .expect("wait")
                .expect("exists");
            out.push(r.status);
        }
        out
    }

    fn calls(&self) -> Vec<(Instant, usize)> {
        self.worker.calls.lock().expect("lock").clone()
    }
}

#[tokio::test(start_paused = true)]
async fn a_lone_task_flushes_exactly_50ms_after_it_arrived() {
    let h = start(4, Duration::from_millis(10), false);
    tokio::time::sleep(Duration::from_millis(3)).await;
    let t0 = Instant::now();
    let ids = h.submit(1, "a").await;
    assert_eq!(h.wait_all(&ids).await, vec![TaskStatus::Success]);
    assert_eq!(h.calls(), vec![(t0 + Duration::from_millis(50), 1)]);
}

/// The in-process queue, its tasks delivered as if each had waited `waited` on its way (as an
/// admission gathered on Redis has).
struct WaitedOnTheWay {
    queue: MemoryQueue,
    waited: Duration,
}

#[async_trait]
impl Queue for WaitedOnTheWay {
    async fn enqueue(&self, task: Task) -> Result<(), QueueError> {
        self.queue.enqueue(task).await
    }

    async fn read(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError> {
        let mut read = self.queue.read(max, block).await?;
        for d in &mut read {
            d.waited = self.waited;
        }
        Ok(read)
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        self.queue.ack(receipts).await
    }

    async fn depth(&self) -> Result<Vec<usize>, QueueError> {
        self.queue.depth().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_that_waited_on_its_way_waits_only_the_rest_of_the_window() {
    let store = Arc::new(MemoryResultStore::new(100_000, Duration::from_secs(600)));
    let queue = WaitedOnTheWay {
        queue: MemoryQueue::new(16, 100_000),
        waited: Duration::from_millis(30),
    };
    let h = start_on(Arc::new(queue), store, 4, Duration::from_millis(10), false);
    tokio::time::sleep(Duration::from_millis(3)).await;
    let t0 = Instant::now();
    let ids = h.submit(1, "a").await;
    assert_eq!(h.wait_all(&ids).await, vec![TaskStatus::Success]);
    assert_eq!(h.calls(), vec![(t0 + Duration::from_millis(20), 1)]);
}

#[tokio::test(start_paused = true)]
async fn sixty_four_tasks_flush_at_once_and_65th_waits_its_own_window() {
    let h = start(4, Duration::from_millis(10), false);
    let t0 = Instant::now();
    let ids = h.submit(65, "b").await;
    let statuses = h.wait_all(&ids).await;
    assert!(statuses.iter().all(|s| *s == TaskStatus::Success));
    assert_eq!(
        h.calls(),
        vec![(t0, 64), (t0 + Duration::from_millis(50), 1)]
    );
}

#[tokio::test(start_paused = true)]
async fn outputs_are_not_cross_wired_and_batches_never_exceed_64() {
    let h = start(2, Duration::from_millis(200), false);
    let ids = h.submit(1000, "c").await;
    h.wait_all(&ids).await;
    for (i, id) in ids.iter().enumerate() {
        let r = h.store.get(id).await.expect("get").expect("exists");
        assert_eq!(
            r.output_text(),
            Some(sim_output(&format!("input c {i}")).as_str())
        );
    }
    let calls = h.calls();
    assert!(calls.iter().all(|(_, n)| *n <= 64));
    assert_eq!(calls.iter().map(|(_, n)| n).sum::<usize>(), 1000);
    // With the worker saturated, tasks wait in the queue and every batch leaves full.
    assert!(calls[..calls.len() - 1].iter().all(|(_, n)| *n == 64));
}

#[tokio::test(start_paused = true)]
async fn a_failed_worker_call_fails_its_tasks_with_a_reason() {
    let h = start(2, Duration::from_millis(5), true);
    let ids = h.submit(3, "d").await;
    assert_eq!(h.wait_all(&ids).await, vec![TaskStatus::Failed; 3]);
    let r = h.store.get(&ids[0]).await.expect("get").expect("exists");
    assert_eq!(
        r.error.as_deref(),
        Some("worker error: worker answered 500")
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_the_queue_and_the_buffer() {
    let h = start(1, Duration::from_millis(200), false);
    let ids = h.submit(300, "e").await;
    // Let the first batch leave, then ask for shutdown with 236 tasks still queued.
    tokio::time::sleep(Duration::from_millis(1)).await;
    h.shutdown.cancel();
    let report = h.batcher.await.expect("join");
    assert!(report.drained_batches >= 4, "{report:?}");
    for id in &ids {
        let r = h.store.get(id).await.expect("get").expect("exists");
        assert_eq!(r.status, TaskStatus::Success, "{id}");
    }
    assert_eq!(
        h.queue.depth().await.expect("depth").iter().sum::<usize>(),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn identical_inputs_in_one_batch_reach_the_worker_once() {
    let h = start(4, Duration::from_millis(10), false);
    let inputs = ["hot", "hot", "cold", "hot"];
    for (i, input) in inputs.iter().enumerate() {
        let id = format!("c-{i}");
        h.store.create(&id, 0, None).await.expect("create");
        h.queue
            .enqueue(Task {
                task_id: id,
                input: (*input).to_owned(),
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
    for (i, input) in inputs.iter().enumerate() {
        let r = h
            .store
            .wait(&format!("c-{i}"), Duration::from_secs(60))
            .await
            .expect("wait")
            .expect("exists");
        assert_eq!(r.output_text(), Some(sim_output(input).as_str()));
    }
    let sizes: Vec<usize> = h.calls().iter().map(|(_, n)| *n).collect();
    assert_eq!(sizes, vec![2], "one call with the two distinct inputs");
}

/// A worker that can run `capacity` calls at once and answers 429 to any call beyond.
struct Limited {
    capacity: usize,
    running: std::sync::atomic::AtomicUsize,
    attempts: std::sync::atomic::AtomicUsize,
    rejected: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Worker for Limited {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.attempts.fetch_add(1, SeqCst);
        if now > self.capacity {
            self.running.fetch_sub(1, SeqCst);
            self.rejected.fetch_add(1, SeqCst);
            return Err(WorkerError::Status {
                status: 429,
                message: "busy".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.running.fetch_sub(1, SeqCst);
        Ok(inputs.iter().map(|i| Output::Text(sim_output(i))).collect())
    }
}

#[tokio::test(start_paused = true)]
async fn overload_answers_lower_the_inflight_limit_and_successes_raise_it() {
    use std::sync::atomic::Ordering::SeqCst;
    let queue = Arc::new(MemoryQueue::new(4, 100_000));
    let store = Arc::new(MemoryResultStore::new(100_000, Duration::from_secs(600)));
    let worker = Arc::new(Limited {
        capacity: 4,
        running: Default::default(),
        attempts: Default::default(),
        rejected: Default::default(),
    });
    let metrics = BatcherMetrics::register(&mut Registry::default());
    let batcher = Batcher::new(
        queue.clone(),
        store.clone(),
        Arc::new(MemoryDeadLetters::new(1000)),
        worker.clone(),
        BatcherConfig {
            max_inflight_batches: 32,
            ..BatcherConfig::default()
        },
        metrics.clone(),
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(batcher.run(shutdown.clone()));
    let h = Harness {
        queue,
        store,
        worker: Arc::new(Recording {
            calls: Mutex::default(),
            cost: Duration::ZERO,
            fail: false,
        }),
        shutdown,
        batcher: run,
    };
    // Every value the limit takes, in order: sampled each (virtual) millisecond.
    let limits = Arc::new(Mutex::new(vec![metrics.concurrency_limit.get()]));
    let watcher = tokio::spawn({
        let (limits, metrics) = (limits.clone(), metrics.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let now = metrics.concurrency_limit.get();
                let mut seen = limits.lock().expect("not poisoned");
                if seen.last() != Some(&now) {
                    seen.push(now);
                }
            }
        }
    });
    let ids = h.submit(128 * 64, "aimd").await;
    let statuses = h.wait_all(&ids).await;
    watcher.abort();
    let limits = limits.lock().expect("not poisoned").clone();
    // The first wave of 32 calls meets a worker that takes 4: the limit is cut (32 → 16 → 8 →
    // 4 …, once per cooldown), and after that the worker sees few calls beyond its capacity.
    assert!(worker.rejected.load(SeqCst) > 0);
    assert!(metrics.worker_overloads.get() > 0);
    assert!(
        metrics.concurrency_limit.get() < 32,
        "limit {}",
        metrics.concurrency_limit.get()
    );
    // Tasks the worker turned away went back to the queue and ran later: none failed.
    assert!(statuses.iter().all(|s| *s == TaskStatus::Success));
    assert!(metrics.requeued.get() > 0);
    // Once cut, the limit kept calls near the worker's capacity: most calls ran. (Without
    // backpressure, 32 calls against room for 4 would see 7 in 8 of them turned away.)
    let rejected = worker.rejected.load(SeqCst);
    let attempts = worker.attempts.load(SeqCst);
    // The first wave (32 calls at once) cannot be helped; after it, AIMD probes up and is cut
    // back. Measured: about a third of all calls answered 429 (jitter moves it a little).
    assert!(
        rejected * 2 < attempts,
        "{rejected} of {attempts} calls answered 429"
    );
    // ...and successes raised it again: after a cut, the limit went up at least once.
    assert!(
        limits.windows(2).any(|w| w[0] < 32 && w[1] > w[0]),
        "the limit never rose after a cut: {limits:?}"
    );
    h.shutdown.cancel();
    h.batcher.await.expect("join");
}

/// Nothing of a stopped batcher runs on: by the time `run` returns, its load reporter (the
/// only other holder of the board) has ended, after publishing while the batcher ran.
#[tokio::test(start_paused = true)]
async fn the_load_reporter_has_ended_when_the_batcher_returns() {
    let board = Arc::new(MemoryLoadBoard::default());
    let batcher = Batcher::new(
        Arc::new(MemoryQueue::new(1, 100)),
        Arc::new(MemoryResultStore::new(100, Duration::from_secs(600))),
        Arc::new(MemoryDeadLetters::new(10)),
        Arc::new(Recording {
            calls: Mutex::default(),
            cost: Duration::from_millis(1),
            fail: false,
        }),
        BatcherConfig::default(),
        BatcherMetrics::register(&mut Registry::default()),
    )
    .with_load_board(board.clone(), "batcher-1".into());
    let shutdown = CancellationToken::new();
    let stopper = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shutdown.cancel();
        }
    });
    // Run here, not in a task of its own: once `run` returns, nothing else has been polled,
    // so a reporter still alive would still hold its clone of the board.
    batcher.run(shutdown).await;
    assert_eq!(
        Arc::strong_count(&board),
        1,
        "the load reporter outlived the batcher"
    );
    let report = board
        .read()
        .await
        .expect("read")
        .expect("reports were published");
    assert_eq!(report.busy, 0.0, "an idle batcher's slots are free");
    stopper.await.expect("stopper");
}

/// A result store whose writes wait until the test lets them through: a store that takes its
/// time, as Redis does under load (a round trip, behind other commands).
struct HeldStore {
    inner: MemoryResultStore,
    open: tokio::sync::Semaphore,
}

#[async_trait]
impl ResultStore for HeldStore {
    async fn create(
        &self,
        task_id: &str,
        created_at: u64,
        owner: Option<&str>,
    ) -> Result<(), batchgate_store::StoreError> {
        self.inner.create(task_id, created_at, owner).await
    }

    async fn complete(
        &self,
        completions: Vec<batchgate_store::Completion>,
    ) -> Result<(), batchgate_store::StoreError> {
        let _open = self.open.acquire().await.expect("never closed");
        self.inner.complete(completions).await
    }

    async fn remove(&self, task_id: &str) -> Result<(), batchgate_store::StoreError> {
        self.inner.remove(task_id).await
    }

    async fn get(
        &self,
        task_id: &str,
    ) -> Result<Option<batchgate_store::TaskRecord>, batchgate_store::StoreError> {
        self.inner.get(task_id).await
    }

    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<batchgate_store::TaskRecord>, batchgate_store::StoreError> {
        self.inner.wait(task_id, timeout).await
    }

    async fn count(&self) -> Result<usize, batchgate_store::StoreError> {
        self.inner.count().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_slot_frees_when_the_worker_answers_not_when_its_results_are_stored() {
    // One slot, a worker that answers in 10 ms, and a store that writes nothing until let.
    let store = Arc::new(HeldStore {
        inner: MemoryResultStore::new(100_000, Duration::from_secs(600)),
        open: tokio::sync::Semaphore::new(0),
    });
    let h = start_with(store.clone(), 1, Duration::from_millis(10), false);
    let ids = h.submit(3 * 64, "h").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The first batch waits for the store; the worker still got the second. The third waits
    // for the slot, which the second keeps until it may settle: one batch settles at a time
    // per slot, so a store that falls behind still holds new batches back.
    let sizes = |h: &Harness| -> Vec<usize> { h.calls().iter().map(|(_, n)| *n).collect() };
    assert_eq!(sizes(&h), vec![64, 64]);
    store.open.add_permits(1_000);
    assert_eq!(h.wait_all(&ids).await, vec![TaskStatus::Success; 3 * 64]);
    assert_eq!(sizes(&h), vec![64, 64, 64]);
}
