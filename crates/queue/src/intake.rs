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

/// How an admission by [`Intake::admit_owned`] went: as [`Admitted`] says, with the task
/// handed back when nothing was queued.
#[derive(Debug)]
pub enum AdmittedOwned {
    /// The task is recorded and queued.
    Enqueued {
        /// The dedupe cache failed and was skipped (the task runs undeduplicated).
        dedupe_bypassed: bool,
    },
    /// An identical input already has a task (`existing`); this one was not queued.
    Duplicate {
        /// The task that runs the same input.
        existing: String,
        /// The task given, to be admitted again if need be.
        task: Task,
    },
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

    /// [`Intake::admit`], given a task whose id no record has (one just made, or one whose
    /// record was removed when its admission found a duplicate): a backend that keeps tasks
    /// as they are (in process) queues this one without a copy, and records it without
    /// looking for a record to replace ([`ResultStore::create_new`]).
    async fn admit_owned(
        &self,
        task: Task,
        created_at: u64,
        input_sha256: Option<&str>,
    ) -> Result<AdmittedOwned, AdmitError> {
        Ok(match self.admit(&task, created_at, input_sha256).await? {
            Admitted::Enqueued { dedupe_bypassed } => AdmittedOwned::Enqueued { dedupe_bypassed },
            Admitted::Duplicate(existing) => AdmittedOwned::Duplicate { existing, task },
        })
    }
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
        // A task given by reference may be one that ran before (a dead letter replayed):
        // its record is replaced.
        Ok(
            match self
                .admit_steps(task.clone(), created_at, input_sha256, Record::Replace)
                .await?
            {
                AdmittedOwned::Enqueued { dedupe_bypassed } => {
                    Admitted::Enqueued { dedupe_bypassed }
                }
                AdmittedOwned::Duplicate { existing, .. } => Admitted::Duplicate(existing),
            },
        )
    }

    async fn admit_owned(
        &self,
        task: Task,
        created_at: u64,
        input_sha256: Option<&str>,
    ) -> Result<AdmittedOwned, AdmitError> {
        self.admit_steps(task, created_at, input_sha256, Record::New)
            .await
    }
}

/// How [`Steps`] records a task it admits.
#[derive(Clone, Copy)]
enum Record {
    /// Its id is new: no record to replace ([`ResultStore::create_new`]).
    New,
    /// It may have a record already, which is replaced ([`ResultStore::create`]).
    Replace,
}

impl Steps {
    async fn admit_steps(
        &self,
        task: Task,
        created_at: u64,
        input_sha256: Option<&str>,
        record: Record,
    ) -> Result<AdmittedOwned, AdmitError> {
        // The record comes first, so that whoever finds this task through the dedupe cache
        // can already read (and wait on) it.
        let (task_id, owner) = (&task.task_id, task.owner.as_deref());
        match record {
            Record::New => self.results.create_new(task_id, created_at, owner).await?,
            Record::Replace => self.results.create(task_id, created_at, owner).await?,
        }
        let mut dedupe_bypassed = false;
        let mut claimed = None;
        if let (Some(dedupe), Some(hash)) = (&self.dedupe, input_sha256) {
            match dedupe.claim(hash, &task.task_id).await {
                Ok(Some(existing)) => {
                    self.forget(&task.task_id).await;
                    return Ok(AdmittedOwned::Duplicate { existing, task });
                }
                Ok(None) => claimed = Some((dedupe, hash)),
                Err(error) => {
                    // The cache is an optimisation: without it, run the task anyway.
                    tracing::warn!(%error, "dedupe cache failed; bypassing it");
                    dedupe_bypassed = true;
                }
            }
        }
        // The queue takes the task; its id is kept to undo a refusal (a copy of 36 bytes
        // rather than of the task and its input).
        let task_id = task.task_id.clone();
        if let Err(error) = self.queue.enqueue(task).await {
            // Never leave a record, or a dedupe entry, for a task that will not run.
            self.forget(&task_id).await;
            if let Some((dedupe, hash)) = claimed {
                if let Err(e) = dedupe.release(hash, &task_id).await {
                    tracing::warn!(error = %e, "could not release the dedupe entry of a refused task");
                }
            }
            return Err(error.into());
        }
        Ok(AdmittedOwned::Enqueued { dedupe_bypassed })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use batchgate_store::memory::{MemoryDedupe, MemoryResultStore};

    use super::*;
    use crate::memory::MemoryQueue;

    fn task(task_id: &str) -> Task {
        Task {
            task_id: task_id.into(),
            input: "the input".into(),
            enqueued_at: SystemTime::UNIX_EPOCH,
            reply_to: Some("gw".into()),
            deadline: None,
            owner: Some("alice".into()),
            trace_parent: None,
            zone: None,
        }
    }

    fn in_memory(capacity: usize) -> (Steps, Arc<dyn Queue>, Arc<dyn ResultStore>) {
        let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(1, capacity));
        let results: Arc<dyn ResultStore> =
            Arc::new(MemoryResultStore::new(100, Duration::from_secs(60)));
        let dedupe = Arc::new(MemoryDedupe::new(Duration::from_secs(60), 100));
        let steps = Steps {
            queue: queue.clone(),
            results: results.clone(),
            dedupe: Some(dedupe),
        };
        (steps, queue, results)
    }

    /// The task given is the task queued; a duplicate hands it back, queues nothing and
    /// leaves no record; a refused one leaves no record either.
    #[tokio::test]
    async fn a_task_given_is_queued_as_it_is_or_handed_back() {
        let (steps, queue, results) = in_memory(2);
        let first = steps
            .admit_owned(task("t-1"), 5, Some("hash-a"))
            .await
            .expect("admitted");
        assert!(matches!(
            first,
            AdmittedOwned::Enqueued {
                dedupe_bypassed: false
            }
        ));
        let queued = queue.read(10, Duration::ZERO).await.expect("read");
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].task, task("t-1"));
        assert!(results.get("t-1").await.expect("get").is_some());

        match steps
            .admit_owned(task("t-2"), 6, Some("hash-a"))
            .await
            .expect("admitted")
        {
            AdmittedOwned::Duplicate {
                existing,
                task: back,
            } => {
                assert_eq!(existing, "t-1");
                assert_eq!(back, task("t-2"));
            }
            other => panic!("not a duplicate: {other:?}"),
        }
        assert!(results.get("t-2").await.expect("get").is_none());
        assert!(queue
            .read(10, Duration::ZERO)
            .await
            .expect("read")
            .is_empty());

        // The by-reference admission says the same.
        assert_eq!(
            steps
                .admit(&task("t-3"), 7, Some("hash-a"))
                .await
                .expect("admitted"),
            Admitted::Duplicate("t-1".into())
        );

        let (full, _, full_results) = in_memory(0);
        assert!(full
            .admit_owned(task("t-4"), 8, Some("hash-b"))
            .await
            .is_err());
        assert!(full_results.get("t-4").await.expect("get").is_none());
    }
}
