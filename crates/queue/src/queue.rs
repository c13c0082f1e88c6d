//! The task queue's trait and types.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use batchgate_protocol::task::Task;
use batchgate_store::{Completion, ResultStore, StoreError};

/// Most tasks waiting in a queue unless configured otherwise; past it, submissions are
/// refused (503 with Retry-After) rather than queued without bound.
pub const DEFAULT_QUEUE_CAPACITY: usize = 50_000;

/// Identifies a delivered task to its queue, so that it can be acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The partition the task was read from.
    pub partition: usize,
    /// The backend's id of the entry within that partition (empty where acks are not needed).
    pub entry_id: String,
}

/// A task handed to a reader, with what it takes to acknowledge it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The task itself.
    pub task: Task,
    /// Pass back to [`Queue::ack`] once the task's result is stored.
    pub receipt: Receipt,
    /// When the task first entered the queue, on this process's clock. The queue's own clock
    /// decides it (Redis: the stream entry's id, Redis's time), not the clock of the gateway
    /// that admitted the task, so queue-age limits hold however the gateways' clocks drift.
    pub queued_at: SystemTime,
    /// How long the task had already waited for a batch when it was queued: on Redis, the
    /// gathering of its admission group (counted from the group's oldest task, see the Redis
    /// intake); zero in process. A batcher counts it as time waited in its batch's buffer, so
    /// that the gathering is not paid again on top of the batch window.
    pub waited: Duration,
}

/// Why a queue operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue holds its capacity already; the caller should shed the request.
    #[error("queue is full ({capacity} tasks)")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// The backend could not be reached or answered with an error.
    #[error("queue backend unavailable: {0}")]
    Unavailable(String),
}

/// A partitioned, bounded, at-least-once task queue.
///
/// Readers get tasks from any partition they serve, and acknowledge each task only after its
/// result is stored; an unacknowledged task may be delivered again (to another reader) by
/// backends that survive a reader's death.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Adds a task. Fails fast with [`QueueError::Full`] instead of growing past capacity.
    async fn enqueue(&self, task: Task) -> Result<(), QueueError>;

    /// Takes up to `max` tasks, waiting at most `block` for the first one. An empty vector
    /// means nothing arrived in time.
    async fn read(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError>;

    /// Marks tasks as done, so they are never delivered again.
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), QueueError>;

    /// Tasks waiting in each partition (not yet acknowledged).
    async fn depth(&self) -> Result<Vec<usize>, QueueError>;

    /// Stores the results of a batch's tasks and acknowledges the batch's entries, as one step
    /// where the backend can (Redis: one script per partition). A stored SUCCESS is never
    /// overwritten; the acknowledgement comes last, so a failure leaves the tasks to be
    /// delivered again, never acknowledged without a result. By default: the store's
    /// [`ResultStore::complete`], then [`Queue::ack`] (whose failure only means a redelivery).
    async fn settle(
        &self,
        results: &dyn ResultStore,
        completions: Vec<Completion>,
        receipts: &[Receipt],
    ) -> Result<(), StoreError> {
        results.complete(completions).await?;
        if let Err(error) = self.ack(receipts).await {
            tracing::warn!(%error, tasks = receipts.len(), "ack failed; tasks may be delivered again");
        }
        Ok(())
    }

    /// Puts a delivered task back as a new entry (its worker was too busy), keeping the time
    /// it first entered the queue, so that the queue-age limit still bounds how long it may
    /// keep coming back. The old entry is acknowledged with its batch.
    async fn requeue(&self, delivery: Delivery) -> Result<(), QueueError> {
        self.enqueue(delivery.task).await
    }

    /// Gives tasks back without completing them (their results could not be stored): a
    /// backend that redelivers makes them available again after its visibility timeout. The
    /// in-process queue has nobody to give them to; its store cannot fail.
    async fn abandon(&self, _receipts: &[Receipt]) {}

    /// Stops taking new tasks from a shared backend before a drain; afterwards `read` returns
    /// only what this reader already holds. In-process queues have no one else to leave tasks
    /// to, so by default nothing changes and the drain empties them.
    async fn close_reads(&self) {}

    /// How many tasks readers have taken so far and how many wait untaken: what the gateway
    /// estimates a new task's queue wait from. `None` where the backend cannot tell.
    async fn backlog(&self) -> Result<Option<Backlog>, QueueError> {
        Ok(None)
    }

    /// How many tasks are worth reading ahead for this process's batcher now: a batch for each
    /// worker slot it could fill at once, or a quarter batch while every slot is busy. A
    /// backend that reads ahead (Redis) holds no more than this (or its own ceiling), so that
    /// tasks that cannot be batched yet wait where every gateway sees them; others ignore it.
    fn read_ahead(&self, _tasks: usize) {}
}

/// A snapshot of the queue's flow, for load shedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Tasks handed to readers so far (a counter; it only grows, except across a restart).
    pub taken: u64,
    /// Tasks waiting to be taken.
    pub queued: u64,
}
