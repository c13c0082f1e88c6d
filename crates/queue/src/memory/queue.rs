//! The in-process partitioned, bounded queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::task::Task;
use foldhash::fast::RandomState;
use tokio::sync::Notify;

use super::bucket;
use crate::{Backlog, Delivery, Queue, QueueError, Receipt};

/// A bounded queue split into partitions, each a `VecDeque` behind its own lock.
///
/// Partitions here mirror the distributed queue's layout (so metrics and readers look the same in
/// both deployments) and keep lock contention low with several gateways' worth of handlers.
/// Readers take from all partitions, starting at a rotating one, so no partition starves.
#[derive(Debug)]
pub struct MemoryQueue {
    /// One FIFO per partition. Locks are held for a few pushes or pops only, never across await.
    partitions: Vec<Mutex<VecDeque<Task>>>,
    /// Tasks in all partitions; checked against `capacity` before a push.
    len: AtomicUsize,
    /// Most tasks held at once. Past it, `enqueue` fails with `Full`.
    capacity: usize,
    /// Wakes a blocked reader when a task arrives.
    arrived: Notify,
    /// The partition the next read starts from, for fairness.
    next_start: AtomicUsize,
    /// Picks a task's partition from its id.
    hasher: RandomState,
    /// Tasks handed to readers so far.
    served: AtomicU64,
}

impl MemoryQueue {
    /// A queue of `partitions` partitions (at least 1) holding at most `capacity` tasks.
    pub fn new(partitions: usize, capacity: usize) -> Self {
        MemoryQueue {
            partitions: (0..partitions.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            len: AtomicUsize::new(0),
            capacity,
            arrived: Notify::new(),
            next_start: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            hasher: RandomState::default(),
        }
    }

    fn lock(&self, partition: usize) -> std::sync::MutexGuard<'_, VecDeque<Task>> {
        // A panic while holding this lock cannot leave a VecDeque half-updated in a way that
        // matters to us, so a poisoned lock is still usable.
        self.partitions[partition]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Queue::enqueue`], done at once (no future: an in-process intake calls it directly);
    /// a refused task is handed back with the reason (by value, as it came: the result is
    /// moved once, not boxed on the overloaded path).
    #[allow(clippy::result_large_err)]
    pub fn push(&self, task: Task) -> Result<(), (QueueError, Task)> {
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.len.fetch_sub(1, Ordering::AcqRel);
            let full = QueueError::Full {
                capacity: self.capacity,
            };
            return Err((full, task));
        }
        let partition = bucket(&self.hasher, &task.task_id, self.partitions.len());
        self.lock(partition).push_back(task);
        self.arrived.notify_one();
        Ok(())
    }

    /// Takes up to `max` tasks, from the partitions in turn. It stops as soon as it holds
    /// every task the count said was queued when it began (each partition is a lock, and a
    /// reader of an empty or nearly empty queue, the batcher's usual case, would otherwise
    /// lock all of them): the count is raised before a push and lowered after a pop, so it
    /// never counts fewer tasks than the partitions hold, and one pushed after the count was
    /// read wakes the reader, who registered before counting (`read`).
    fn pop_up_to(&self, max: usize) -> Vec<Delivery> {
        let wanted = max.min(self.len.load(Ordering::Acquire));
        if wanted == 0 {
            return Vec::new();
        }
        let n = self.partitions.len();
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % n;
        let mut out = Vec::with_capacity(wanted);
        for offset in 0..n {
            if out.len() >= wanted {
                break;
            }
            let partition = (start + offset) % n;
            let mut fifo = self.lock(partition);
            while out.len() < wanted {
                let Some(task) = fifo.pop_front() else { break };
                out.push(Delivery {
                    // One process: the gateway's clock is the queue's.
                    queued_at: task.enqueued_at,
                    waited: Duration::ZERO,
                    task,
                    receipt: Receipt {
                        partition,
                        entry_id: String::new(),
                    },
                });
            }
        }
        self.len.fetch_sub(out.len(), Ordering::AcqRel);
        self.served.fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn enqueue(&self, task: Task) -> Result<(), QueueError> {
        self.push(task).map_err(|(error, _)| error)
    }

    async fn read(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + block;
        loop {
            // Register interest before looking, so an enqueue between the look and the wait
            // still wakes us.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.pop_up_to(max);
            if !got.is_empty() {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, _receipts: &[Receipt]) -> Result<(), QueueError> {
        // Nothing to do: a delivered task is gone from this queue, and nothing survives the
        // process to deliver it again.
        Ok(())
    }

    async fn backlog(&self) -> Result<Option<Backlog>, QueueError> {
        Ok(Some(Backlog {
            taken: self.served.load(Ordering::Relaxed),
            queued: self.len.load(Ordering::Acquire) as u64,
        }))
    }

    async fn depth(&self) -> Result<Vec<usize>, QueueError> {
        Ok((0..self.partitions.len())
            .map(|p| self.lock(p).len())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn task(i: usize) -> Task {
        Task {
            task_id: format!("t{i}"),
            input: format!("in{i}"),
            enqueued_at: SystemTime::now(),
            reply_to: None,
            deadline: None,
            owner: None,
            trace_parent: None,
            zone: None,
        }
    }

    #[tokio::test]
    async fn full_queue_refuses_instead_of_growing() {
        let q = MemoryQueue::new(4, 3);
        for i in 0..3 {
            q.enqueue(task(i)).await.expect("room");
        }
        assert!(matches!(
            q.enqueue(task(3)).await,
            Err(QueueError::Full { capacity: 3 })
        ));
        assert_eq!(q.depth().await.expect("depth").iter().sum::<usize>(), 3);
        let got = q.read(10, Duration::ZERO).await.expect("read");
        assert_eq!(got.len(), 3);
        q.enqueue(task(4)).await.expect("room again after a read");
    }

    #[tokio::test]
    async fn read_takes_at_most_max_and_keeps_every_task_once() {
        let q = MemoryQueue::new(16, 1000);
        for i in 0..100 {
            q.enqueue(task(i)).await.expect("room");
        }
        let mut seen = Vec::new();
        loop {
            let got = q.read(64, Duration::ZERO).await.expect("read");
            if got.is_empty() {
                break;
            }
            assert!(got.len() <= 64);
            seen.extend(got.into_iter().map(|d| d.task.task_id));
        }
        seen.sort();
        let mut want: Vec<_> = (0..100).map(|i| format!("t{i}")).collect();
        want.sort();
        assert_eq!(seen, want);
    }

    /// `q.read(max, 0)` on another thread while this one holds `partition`'s lock: its
    /// answer, or `None` if it waited for that lock (it is then let go, and finishes).
    fn read_beside_held_lock(
        q: &std::sync::Arc<MemoryQueue>,
        partition: usize,
        max: usize,
    ) -> Option<Vec<Delivery>> {
        let held = q.lock(partition);
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn({
            let q = q.clone();
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("runtime");
                let got = runtime.block_on(q.read(max, Duration::ZERO)).expect("read");
                let _ = tx.send(got);
            }
        });
        // A read that does not wait answers at once; one that waits for the held lock never
        // does until it is let go. The bound is far past any scheduling delay, so a slow
        // machine cannot pass for a waiting read.
        let got = rx.recv_timeout(Duration::from_secs(30)).ok();
        drop(held);
        reader.join().expect("reader");
        got
    }

    #[test]
    fn a_read_locks_no_partition_it_need_not_look_in() {
        let q = std::sync::Arc::new(MemoryQueue::new(2, 10));
        // An empty queue: nothing to look for, so no partition is locked.
        let got = read_beside_held_lock(&q, 0, 8).expect("an empty read takes no lock");
        assert!(got.is_empty());
        // One task in the partition the next read starts from: found there, the read is over
        // without the other partition's lock.
        let start = q.next_start.load(Ordering::Relaxed) % 2;
        let id = (0..)
            .map(|i| format!("t{i}"))
            .find(|id| bucket(&q.hasher, id, 2) == start)
            .expect("an id of that partition");
        let mut one = task(0);
        one.task_id = id.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(q.enqueue(one)).expect("room");
        let got = read_beside_held_lock(&q, 1 - start, 8).expect("the task, without waiting");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].task.task_id, id);
    }

    #[tokio::test]
    async fn one_read_takes_every_queued_task_whatever_their_partitions() {
        let q = MemoryQueue::new(16, 1000);
        for i in 0..40 {
            q.enqueue(task(i)).await.expect("room");
        }
        assert_eq!(q.read(64, Duration::ZERO).await.expect("read").len(), 40);
        assert!(q.read(64, Duration::ZERO).await.expect("read").is_empty());
        q.enqueue(task(40)).await.expect("room");
        assert_eq!(q.read(64, Duration::ZERO).await.expect("read").len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn blocked_read_wakes_on_enqueue_and_times_out_otherwise() {
        let q = std::sync::Arc::new(MemoryQueue::new(2, 10));
        let start = tokio::time::Instant::now();
        assert!(q
            .read(1, Duration::from_millis(30))
            .await
            .expect("read")
            .is_empty());
        assert_eq!(start.elapsed(), Duration::from_millis(30));

        let reader = tokio::spawn({
            let q = q.clone();
            async move { q.read(1, Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        q.enqueue(task(1)).await.expect("room");
        let got = reader.await.expect("join").expect("read");
        assert_eq!(got.len(), 1);
        assert!(start.elapsed() < Duration::from_millis(40));
    }
}
