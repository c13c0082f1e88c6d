//! The dead-letter queue: tasks that failed for good, kept with their input and error so an
//! operator can look at them and run them again.

use async_trait::async_trait;
use batchgate_protocol::task::Task;
use serde::Serialize;

use crate::QueueError;

/// Default most entries kept; older ones are dropped first.
pub const DEFAULT_DEAD_LETTER_CAPACITY: usize = 100_000;

/// One failed task, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The entry's id in the dead-letter queue (not the task's).
    pub id: String,
    /// The task that failed.
    pub task_id: String,
    /// Its input, as the client sent it.
    pub input: String,
    /// Who submitted it, if known: a replay runs it under the same owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Why it failed: the error its result carries.
    pub error: String,
    /// Worker calls (or queue deliveries) it took part in before it was given up.
    pub attempts: u32,
    /// When it was given up, in Unix milliseconds.
    pub failed_at: u64,
}

/// A task to dead-letter, with why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The task.
    pub task: Task,
    /// Its error, as stored in its result.
    pub error: String,
    /// Worker calls (or deliveries) it took part in.
    pub attempts: u32,
    /// When, in Unix milliseconds.
    pub failed_at: u64,
}

/// Which entries an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The oldest `n` entries.
    Oldest(usize),
    /// These entries (ids as [`DeadLetter::id`]); unknown ids are skipped.
    Ids(Vec<String>),
}

/// Where failed tasks are kept.
#[async_trait]
pub trait DeadLetters: Send + Sync + 'static {
    /// Adds failed tasks.
    async fn add(&self, failures: Vec<Failure>) -> Result<(), QueueError>;

    /// The oldest `limit` entries, oldest first, without removing them.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;

    /// Entries held.
    async fn count(&self) -> Result<usize, QueueError>;

    /// Removes the selected entries and returns them (to replay them, or to purge).
    async fn take(&self, selection: Selection) -> Result<Vec<DeadLetter>, QueueError>;
}
