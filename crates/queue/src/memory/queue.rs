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

    fn pop_up_to(&self, max: usize) -> Vec<Delivery> {
        let n = self.partitions.len();
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % n;
        let mut out = Vec::new();
        for offset in 0..n {
            if out.len() >= max {
                break;
            }
            let partition = (start + offset) % n;
            let mut fifo = self.lock(partition);
            while out.len() < max {
                let Some(task) = fifo.pop_front() else { break };
                out.push(Delivery {
                    // One process: the gateway's clock is the queue's.
                    queued_at: task.enqueued_at,
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
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(QueueError::Full {
                capacity: self.capacity,
            });
        }
        let partition = bucket(&self.hasher, &task.task_id, self.partitions.len());
        self.lock(partition).push_back(task);
        self.arrived.notify_one();
        Ok(())
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
