//! Accepting a task as one operation: record it as pending, claim its input's dedupe entry,
//! enqueue it — or find the task that already runs the same input.
//!
//! One trait method rather than three calls so that a backend can do it all in one round
//! trip (Redis runs a script); [`Steps`] composes the three traits for the others.

use std::sync::Arc;

use async_trait::async_trait;
use batchgate_protocol::task::Task;
use batchgate_store::{Dedupe, ResultStore, StoreError};

use crate::{Queue, QueueError};

/// How an admission went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// The task is recorded and queued.
    Enqueued {
        /// The dedupe cache failed and was skipped (the task runs undeduplicated).
        dedupe_bypassed: bool,
    },
    /// An identical input already has this task; nothing was queued.
    Duplicate(String),
}

/// Why a task was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The queue refused it.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The result store refused it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Admits tasks.
#[async_trait]
pub trait Intake: Send + Sync + 'static {
    /// Records `task` as pending (accepted at `created_at`), and with `input_sha256` claims
    /// the dedupe entry of its input first, then enqueues it. On any refusal nothing is left
    /// behind: no record, no dedupe entry.
    async fn admit(
        &self,
        task: &Task,
        created_at: u64,
        input_sha256: Option<&str>,
    ) -> Result<Admitted, AdmitError>;
}

/// The three steps, one call each: for backends where a call is cheap (in-process).
pub struct Steps {
    /// Where tasks go.
    pub queue: Arc<dyn Queue>,
    /// Where their records live.
    pub results: Arc<dyn ResultStore>,
    /// The dedupe cache, if on.
    pub dedupe: Option<Arc<dyn Dedupe>>,
}

impl Steps {
    /// Removes the record of a task that will not run (best effort: it expires anyway).
    async fn forget(&self, task_id: &str) {
        if let Err(error) = self.results.remove(task_id).await {
            tracing::warn!(%error, "could not remove the record of a task that will not run");
        }
    }
}

#[async_trait]
impl Intake for Steps {
    async fn admit(
        &self,
        task: &Task,
        created_at: u64,
        input_sha256: Option<&str>,
    ) -> Result<Admitted, AdmitError> {
        // The record comes first, so that whoever finds this task through the dedupe cache
        // can already read (and wait on) it.
        self.results
            .create(&task.task_id, created_at, task.owner.as_deref())
            .await?;
        let mut dedupe_bypassed = false;
        let mut claimed = None;
        if let (Some(dedupe), Some(hash)) = (&self.dedupe, input_sha256) {
            match dedupe.claim(hash, &task.task_id).await {
                Ok(Some(existing)) => {
                    self.forget(&task.task_id).await;
                    return Ok(Admitted::Duplicate(existing));
                }
                Ok(None) => claimed = Some((dedupe, hash)),
                Err(error) => {
                    // The cache is an optimisation: without it, run the task anyway.
                    tracing::warn!(%error, "dedupe cache failed; bypassing it");
                    dedupe_bypassed = true;
                }
            }
        }
        let task_id = &task.task_id;
        if let Err(error) = self.queue.enqueue(task.clone()).await {
            // Never leave a record, or a dedupe entry, for a task that will not run.
            self.forget(task_id).await;
            if let Some((dedupe, hash)) = claimed {
                if let Err(e) = dedupe.release(hash, task_id).await {
                    tracing::warn!(error = %e, "could not release the dedupe entry of a refused task");
                }
            }
            return Err(error.into());
        }
        Ok(Admitted::Enqueued { dedupe_bypassed })
    }
}
