//! The result store's trait and types.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::api::{TaskStatus, TaskView};
use batchgate_protocol::Output;

/// How long a result is kept after it is stored, unless configured otherwise.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(600);

/// Most records (pending and finished) the in-process result store holds unless configured
/// otherwise; past it the oldest are evicted.
pub const DEFAULT_MAX_RESULTS: usize = 8_000_000;

/// What the store holds for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Pending, or how it ended.
    pub status: TaskStatus,
    /// The worker's output, on success, typed as the worker gave it.
    pub output: Option<Output>,
    /// Why it failed, on failure.
    pub error: Option<String>,
    /// Accepted at, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// Result stored at, milliseconds since the Unix epoch.
    pub completed_at: Option<u64>,
    /// Who submitted the task, where the store knows it.
    pub owner: Option<String>,
}

impl TaskRecord {
    /// A fresh record for a task accepted at `created_at`.
    pub fn pending(created_at: u64) -> Self {
        TaskRecord {
            status: TaskStatus::Pending,
            output: None,
            error: None,
            created_at,
            completed_at: None,
            owner: None,
        }
    }

    /// The output, when it is text.
    pub fn output_text(&self) -> Option<&str> {
        self.output.as_ref().and_then(Output::as_text)
    }

    /// Whether `caller` may read this record: its owner, or anyone when it has none and
    /// `unowned_is_public` (authentication off).
    pub fn readable_by(&self, caller: &str, unowned_is_public: bool) -> bool {
        match &self.owner {
            Some(owner) => owner == caller,
            None => unowned_is_public,
        }
    }

    /// The API's view of this record.
    pub fn view(&self, task_id: &str) -> TaskView {
        TaskView {
            task_id: task_id.to_owned(),
            status: self.status,
            output: self.output.as_ref().map(Output::to_text),
            error: self.error.clone(),
            created_at: self.created_at,
            completed_at: self.completed_at,
        }
    }

    /// The same view, with the id, the output and the error moved into it, not copied.
    pub fn into_view(self, task_id: String) -> TaskView {
        TaskView {
            task_id,
            status: self.status,
            output: self.output.map(Output::into_text),
            error: self.error,
            created_at: self.created_at,
            completed_at: self.completed_at,
        }
    }
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The worker's output for the task's input.
    Success(Output),
    /// The reason it will never have one.
    Failed(String),
}

/// One task's final result, as the batcher writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Which task.
    pub task_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When, in milliseconds since the Unix epoch.
    pub completed_at: u64,
    /// The gateway to notify, from the task (`None`: nobody waits elsewhere).
    pub reply_to: Option<String>,
}

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store holds as many records as it may; the caller should shed the request.
    #[error("result store is full ({capacity} records)")]
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// The backend could not be reached or answered with an error.
    #[error("result store unavailable: {0}")]
    Unavailable(String),
}

/// Short-lived storage of task results, keyed by task id, with a TTL.
#[async_trait]
pub trait ResultStore: Send + Sync + 'static {
    /// Records a newly accepted task as pending, owned by `owner` if given.
    async fn create(
        &self,
        task_id: &str,
        created_at: u64,
        owner: Option<&str>,
    ) -> Result<(), StoreError>;

    /// [`ResultStore::create`] for an id that no record has: one just made for a new task.
    /// A store may skip looking for a record to replace (an in-process store's look-up of an
    /// id that is not there lands on a place of its index seldom in cache). By default,
    /// `create`.
    async fn create_new(
        &self,
        task_id: &str,
        created_at: u64,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        self.create(task_id, created_at, owner).await
    }

    /// Stores final results and wakes whoever waits for them. Unknown ids (expired, or never
    /// created here) are stored all the same: a result is never thrown away. A SUCCESS is
    /// final: nothing overwrites it; a FAILED is overwritten only by a SUCCESS (a redelivered
    /// task that got through after all), which leaves no `error` behind.
    async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError>;

    /// Forgets a task, used when it was recorded but could not be enqueued.
    async fn remove(&self, task_id: &str) -> Result<(), StoreError>;

    /// The task's record, or `None` if unknown or expired.
    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError>;

    /// Like [`ResultStore::get`], but if the task is pending, waits up to `timeout` for it to
    /// finish, woken by [`ResultStore::complete`] (no polling).
    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskRecord>, StoreError>;

    /// How many records the store holds (pending and finished).
    async fn count(&self) -> Result<usize, StoreError>;

    /// Registers interest in the result of a task this process is about to admit, before it
    /// can complete, so that its completion cannot slip past; the returned expectation then
    /// waits without reading the store first. `created_at` and `owner` are the task's as
    /// admitted: a store that does not read its pending record back returns one made of
    /// them if nothing comes in time.
    ///
    /// By default the expectation reads the store when it starts waiting
    /// ([`ResultStore::wait`]): enough where a read is a lock, not a round trip.
    fn expect(
        self: Arc<Self>,
        task_id: &str,
        created_at: u64,
        owner: Option<&str>,
    ) -> Box<dyn Expectation> {
        let _ = (created_at, owner);
        Box::new(ReadThenWait {
            store: self,
            task_id: task_id.to_owned(),
        })
    }

    /// Reads a task's record and, if it is pending, registers interest in its result in the
    /// same step (one round trip on Redis), so that the caller can check the record (its
    /// owner) before it waits.
    async fn watch(self: Arc<Self>, task_id: &str) -> Result<Watched, StoreError> {
        Ok(match self.get(task_id).await? {
            None => Watched::Missing,
            Some(record) if record.status.is_terminal() => Watched::Done(record),
            Some(record) => {
                let expectation =
                    self.clone()
                        .expect(task_id, record.created_at, record.owner.as_deref());
                Watched::Pending(record, expectation)
            }
        })
    }
}

/// What [`ResultStore::watch`] found.
pub enum Watched {
    /// No such task (unknown or expired).
    Missing,
    /// The task has finished.
    Done(TaskRecord),
    /// The task is pending; its expectation waits for the result.
    Pending(TaskRecord, Box<dyn Expectation>),
}

/// Interest in one task's result, registered before it could be missed.
#[async_trait]
pub trait Expectation: Send {
    /// Waits up to `timeout` for the result: the final record, the pending one if nothing
    /// came in time, or `None` if the task is gone (expired).
    async fn wait(self: Box<Self>, timeout: Duration) -> Result<Option<TaskRecord>, StoreError>;
}

/// The default expectation: [`ResultStore::wait`] when the wait starts.
struct ReadThenWait<S: ?Sized> {
    store: Arc<S>,
    task_id: String,
}

#[async_trait]
impl<S: ResultStore + ?Sized> Expectation for ReadThenWait<S> {
    async fn wait(self: Box<Self>, timeout: Duration) -> Result<Option<TaskRecord>, StoreError> {
        self.store.wait(&self.task_id, timeout).await
    }
}
