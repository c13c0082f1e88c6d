//! The dedupe cache's trait: identical inputs share one task.

use std::time::Duration;

use async_trait::async_trait;

use crate::StoreError;

/// How long identical inputs share one task unless configured otherwise.
pub const DEFAULT_DEDUPE_TTL: Duration = Duration::from_secs(300);

/// Maps the SHA-256 of an input to the task id of its first submission, for a TTL.
#[async_trait]
pub trait Dedupe: Send + Sync + 'static {
    /// Records `task_id` for `input_sha256` unless an entry exists; returns the existing task
    /// id if there is one (then the caller answers with it and enqueues nothing).
    async fn claim(&self, input_sha256: &str, task_id: &str) -> Result<Option<String>, StoreError>;

    /// Forgets the entry if it still names `task_id` (its task could not be enqueued).
    async fn release(&self, input_sha256: &str, task_id: &str) -> Result<(), StoreError>;
}
