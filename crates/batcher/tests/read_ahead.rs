//! What the batcher tells the queue is worth reading ahead (`Queue::read_ahead`): a batch for
//! each slot it could fill while gathering, a quarter batch while every slot is busy. Run
//! under tokio's paused clock against the in-memory queue, with the simulated worker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use batchgate_batcher::{Batcher, BatcherConfig, BatcherMetrics};
use batchgate_policy::Limits;
use batchgate_protocol::task::Task;
use batchgate_queue::memory::{MemoryDeadLetters, MemoryQueue};
use batchgate_queue::{Delivery, Queue, QueueError, Receipt};
use batchgate_sim::{SimConfig, SimWorker};
use batchgate_store::memory::MemoryResultStore;
use batchgate_store::{Completion, ResultStore, StoreError};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The in-memory queue, keeping every read-ahead the batcher asked for.
struct Recording {
    inner: MemoryQueue,
    asked: Mutex<Vec<usize>>,
}

#[async_trait]
impl Queue for Recording {
    async fn enqueue(&self, task: Task) -> Result<(), QueueError> {
        self.inner.enqueue(task).await
    }
    async fn read(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError> {
        self.inner.read(max, block).await
    }
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        self.inner.ack(receipts).await
    }
    async fn depth(&self) -> Result<Vec<usize>, QueueError> {
        self.inner.depth().await
    }
    async fn settle(
        &self,
        results: &dyn ResultStore,
        completions: Vec<Completion>,
        receipts: &[Receipt],
    ) -> Result<(), StoreError> {
        self.inner.settle(results, completions, receipts).await
    }
    fn read_ahead(&self, tasks: usize) {
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tasks);
    }
}

#[tokio::test(start_paused = true)]
async fn the_batcher_asks_for_a_batch_per_free_slot_and_a_quarter_when_none_is_free() {
    const BATCH: usize = 8;
    let queue = Arc::new(Recording {
        inner: MemoryQueue::new(1, 10_000),
        asked: Mutex::new(Vec::new()),
    });
    let store = Arc::new(MemoryResultStore::new(10_000, Duration::from_secs(600)));
    // 100 tasks waiting before the batcher starts: 13 batches of 8 for 3 slots.
    for i in 0..100 {
        let id = format!("t{i}");
        store.create(&id, 0, None).await.expect("create");
        queue
            .enqueue(Task {
                task_id: id,
                input: format!("input {i}"),
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
    let batcher = Batcher::new(
        queue.clone(),
        store.clone(),
        Arc::new(MemoryDeadLetters::new(100)),
        Arc::new(SimWorker::new(SimConfig {
            slots: 3,
            ..SimConfig::default()
        })),
        BatcherConfig {
            limits: Limits {
                max_batch_size: BATCH,
                ..Limits::default()
            },
            max_inflight_batches: 3,
            ..BatcherConfig::default()
        },
        BatcherMetrics::register(&mut Registry::default()),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(batcher.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    running.await.expect("batcher");
    let asked = queue
        .asked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // The first batch is gathered with the two other slots free: three batches' worth.
    assert_eq!(asked.first(), Some(&(3 * BATCH)), "{asked:?}");
    // With all three slots in calls, a quarter batch.
    assert!(asked.contains(&BATCH.div_ceil(4)), "{asked:?}");
    // Never more than a batch per slot, never nothing.
    assert!(
        asked.iter().all(|&n| (1..=3 * BATCH).contains(&n)),
        "{asked:?}"
    );
}
