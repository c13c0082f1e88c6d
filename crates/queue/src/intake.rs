//! Accepting a task as one operation: record it as pending, claim its input's dedupe entry,
//! enqueue it — or find the task that already runs the same input.
//!
//! One trait method rather than three calls so that a backend can do it all in one round
//! trip (Redis runs a script); [`Steps`] does the three on the in-process backends.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use batchgate_protocol::task::Task;
use batchgate_store::memory::{MemoryDedupe, MemoryResultStore};
use batchgate_store::StoreError;
use tokio::sync::Notify;

use crate::memory::MemoryQueue;
use crate::QueueError;

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

impl From<AdmittedOwned> for Admitted {
    /// The admission as [`Intake::admit`] tells it: a duplicate's task is dropped.
    fn from(admitted: AdmittedOwned) -> Self {
        match admitted {
            AdmittedOwned::Enqueued { dedupe_bypassed } => Admitted::Enqueued { dedupe_bypassed },
            AdmittedOwned::Duplicate { existing, .. } => Admitted::Duplicate(existing),
        }
    }
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
    /// looking for a record to replace ([`ResultStore::create_new`](batchgate_store::ResultStore::create_new));
    /// the Redis intake keeps it whole for the process's own reader.
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

    /// Whether [`Intake::admit_quietly`] spares its caller a wake-up: an intake whose answer
    /// comes later, from another task (Redis gathers admissions into one call), says yes.
    fn answers_quietly(&self) -> bool {
        false
    }

    /// [`Intake::admit_owned`] for a caller that will wait for the task's result anyway:
    /// the answer goes to `answer` (see [`QuietAnswer::new`]), which drops the guard it
    /// holds once it is given. A plain `Enqueued` wakes no one (the result will); anything
    /// else does ([`QuietAnswer::unusual`]). Returns once the task is handed over (the
    /// default: once it is admitted).
    async fn admit_quietly(
        &self,
        task: Task,
        created_at: u64,
        input_sha256: Option<&str>,
        answer: QuietReply,
    ) {
        answer.send(self.admit_owned(task, created_at, input_sha256).await);
    }
}

/// The answer of an admission made by [`Intake::admit_quietly`].
#[derive(Debug, Default)]
pub struct QuietAnswer {
    answer: Mutex<Option<Result<AdmittedOwned, AdmitError>>>,
    /// Notified by every answer.
    answered: Notify,
    /// Notified by an answer other than a plain `Enqueued`.
    unusual: Notify,
}

impl QuietAnswer {
    /// A fresh answer, and the reply that gives it (with `guard`, dropped once it is given).
    pub fn new(guard: Box<dyn Send>) -> (Arc<QuietAnswer>, QuietReply) {
        let answer = Arc::new(QuietAnswer::default());
        let reply = QuietReply {
            answer: answer.clone(),
            guard: Some(guard),
        };
        (answer, reply)
    }

    /// Returns once the answer is a refusal or a duplicate; never for a plain `Enqueued`.
    pub async fn unusual(&self) {
        self.unusual.notified().await
    }

    /// Waits for the answer, whatever it is, and takes it.
    pub async fn take(&self) -> Result<AdmittedOwned, AdmitError> {
        loop {
            if let Some(answer) = self.lock().take() {
                return answer;
            }
            self.answered.notified().await;
        }
    }

    /// The answer, if it has come.
    pub fn try_take(&self) -> Option<Result<AdmittedOwned, AdmitError>> {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Result<AdmittedOwned, AdmitError>>> {
        self.answer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Gives a [`QuietAnswer`] (once). Dropped unanswered, it answers that the admission was
/// dropped, so that no caller waits on it for ever.
pub struct QuietReply {
    answer: Arc<QuietAnswer>,
    guard: Option<Box<dyn Send>>,
}

impl QuietReply {
    /// Gives the answer: a plain `Enqueued` quietly, anything else with a wake-up.
    pub fn send(mut self, answer: Result<AdmittedOwned, AdmitError>) {
        self.give(answer);
    }

    fn give(&mut self, answer: Result<AdmittedOwned, AdmitError>) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let unusual = !matches!(answer, Ok(AdmittedOwned::Enqueued { .. }));
        *self.answer.lock() = Some(answer);
        drop(guard);
        self.answer.answered.notify_one();
        if unusual {
            self.answer.unusual.notify_one();
        }
    }
}

impl std::fmt::Debug for QuietReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuietReply")
            .field("answered", &self.guard.is_none())
            .finish()
    }
}

impl Drop for QuietReply {
    fn drop(&mut self) {
        self.give(Err(AdmitError::Queue(QueueError::Unavailable(
            "admission dropped".into(),
        ))));
    }
}

/// The three steps on the in-process backends, as plain calls: record, claim the dedupe
/// entry, enqueue. (Through the backends' traits each would box a future of its own.)
pub struct Steps {
    /// Where tasks go.
    pub queue: Arc<MemoryQueue>,
    /// Where their records live.
    pub results: Arc<MemoryResultStore>,
    /// The dedupe cache, if on.
    pub dedupe: Option<Arc<MemoryDedupe>>,
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
        Ok(self
            .admit_steps(task.clone(), created_at, input_sha256, Record::Replace)?
            .into())
    }

    async fn admit_owned(
        &self,
        task: Task,
        created_at: u64,
        input_sha256: Option<&str>,
    ) -> Result<AdmittedOwned, AdmitError> {
        self.admit_steps(task, created_at, input_sha256, Record::New)
    }
}

/// How [`Steps`] records a task it admits.
#[derive(Clone, Copy)]
enum Record {
    /// Its id is new: no record to replace ([`ResultStore::create_new`](batchgate_store::ResultStore::create_new)).
    New,
    /// It may have a record already, which is replaced ([`ResultStore::create`](batchgate_store::ResultStore::create)).
    Replace,
}

impl Steps {
    fn admit_steps(
        &self,
        task: Task,
        created_at: u64,
        input_sha256: Option<&str>,
        record: Record,
    ) -> Result<AdmittedOwned, AdmitError> {
        // The record comes first, so that whoever finds this task through the dedupe cache
        // can already read (and wait on) it.
        let (task_id, owner) = (task.task_id.as_str(), task.owner.as_deref());
        match record {
            Record::New => self.results.create_new_now(task_id, created_at, owner),
            Record::Replace => self.results.create_now(task_id, created_at, owner),
        }
        let claimed = match (&self.dedupe, input_sha256) {
            (Some(dedupe), Some(hash)) => {
                if let Some(existing) = dedupe.claim_now(hash, task_id) {
                    self.results.remove_now(task_id);
                    return Ok(AdmittedOwned::Duplicate { existing, task });
                }
                Some((dedupe, hash))
            }
            _ => None,
        };
        if let Err((error, task)) = self.queue.push(task) {
            // Never leave a record, or a dedupe entry, for a task that will not run.
            self.results.remove_now(&task.task_id);
            if let Some((dedupe, hash)) = claimed {
                dedupe.release_now(hash, &task.task_id);
            }
            return Err(error.into());
        }
        Ok(AdmittedOwned::Enqueued {
            dedupe_bypassed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use batchgate_store::ResultStore;

    use super::*;
    use crate::Queue;

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

    fn in_memory(capacity: usize) -> (Steps, Arc<MemoryQueue>, Arc<MemoryResultStore>) {
        let queue = Arc::new(MemoryQueue::new(1, capacity));
        let results = Arc::new(MemoryResultStore::new(100, Duration::from_secs(60)));
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

#[cfg(test)]
mod quiet_tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Polls `future` once: its output if it is ready.
    fn ready<F: Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    /// A guard that says when it is dropped.
    struct Guard(Arc<AtomicBool>);

    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn answer_with_guard() -> (Arc<QuietAnswer>, QuietReply, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        let (answer, reply) = QuietAnswer::new(Box::new(Guard(dropped.clone())));
        (answer, reply, dropped)
    }

    #[test]
    fn a_plain_admission_is_answered_without_waking_the_wait() {
        let (answer, reply, dropped) = answer_with_guard();
        assert!(ready(answer.take()).is_none(), "no answer yet");
        reply.send(Ok(AdmittedOwned::Enqueued {
            dedupe_bypassed: true,
        }));
        assert!(
            dropped.load(Ordering::SeqCst),
            "the guard goes with the answer"
        );
        assert!(
            ready(answer.unusual()).is_none(),
            "an admission is not unusual"
        );
        assert!(matches!(
            ready(answer.take()),
            Some(Ok(AdmittedOwned::Enqueued {
                dedupe_bypassed: true
            }))
        ));
    }

    #[test]
    fn a_refusal_wakes_the_wait() {
        let (answer, reply, dropped) = answer_with_guard();
        assert!(ready(answer.unusual()).is_none());
        reply.send(Err(AdmitError::Queue(QueueError::Full { capacity: 1 })));
        assert!(dropped.load(Ordering::SeqCst));
        assert!(ready(answer.unusual()).is_some(), "a refusal is unusual");
        assert!(matches!(
            ready(answer.take()),
            Some(Err(AdmitError::Queue(QueueError::Full { capacity: 1 })))
        ));
    }

    #[test]
    fn a_reply_dropped_unanswered_answers_that_the_admission_was_dropped() {
        let (answer, reply, dropped) = answer_with_guard();
        drop(reply);
        assert!(dropped.load(Ordering::SeqCst));
        assert!(ready(answer.unusual()).is_some());
        assert!(matches!(
            ready(answer.take()),
            Some(Err(AdmitError::Queue(QueueError::Unavailable(why)))) if why == "admission dropped"
        ));
    }
}
