//! The result store on Redis: one string record per task with a TTL (layout in
//! `crate::record`). Results are written by the settle script (see `crate::settle`), which
//! also tells the gateways that wait.
//!
//! Waiting costs no read of its own: a task this gateway admits is registered with the
//! notifier before admission ([`ResultStore::expect`]), and a long poll reads the record and
//! registers this gateway on it in one script ([`ResultStore::watch`]), so the result's
//! notice reaches whichever gateway waits.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use batchgate_store::{Completion, Expectation, ResultStore, StoreError, TaskRecord, Watched};
use redis::{RedisResult, Script};
use tokio::sync::oneshot;

use crate::conn::{bounded, RedisConn};
use crate::describe;
use crate::keys::Keys;
use crate::notify::{Notifier, Wake};
use crate::record;
use crate::settle::Settler;

/// How often a process without a subscription (never a gateway) re-reads a pending record.
const POLL_WITHOUT_NOTIFIER: Duration = Duration::from_secs(1);

/// The Redis result store. Cloning is shallow.
#[derive(Clone)]
pub struct RedisResultStore {
    /// Shared multiplexed connection.
    conn: RedisConn,
    /// Key names.
    keys: Keys,
    /// Bound on one command.
    op_timeout: Duration,
    /// Writes results (the same script the batcher settles batches with).
    settler: Settler,
    /// Reads a record and registers this gateway as its watcher.
    watch: Script,
    /// Wakes local waiters when their tasks complete, with this gateway's id on the
    /// notification bus; absent in batcher-only processes, which never wait.
    notifier: Option<(Arc<Notifier>, String)>,
}

impl RedisResultStore {
    /// A store on `conn`; `notifier` is this gateway's subscription and its id, if it
    /// serves waits; `cluster` picks sharded pub/sub and per-partition writes.
    pub fn new(
        conn: RedisConn,
        keys: Keys,
        ttl: Duration,
        op_timeout: Duration,
        notifier: Option<(Arc<Notifier>, String)>,
        cluster: bool,
    ) -> Self {
        let settler = Settler::new(conn.clone(), keys.clone(), ttl, cluster, op_timeout);
        RedisResultStore {
            settler: match &notifier {
                Some((notifier, name)) => {
                    settler.with_local_gateway(notifier.clone(), name.clone())
                }
                None => settler,
            },
            conn,
            keys,
            op_timeout,
            watch: Script::new(include_str!("lua/watch.lua")),
            notifier,
        }
    }

    fn unavailable(error: &redis::RedisError) -> StoreError {
        StoreError::Unavailable(describe(error))
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        let mut conn = self.conn.clone();
        bounded(self.op_timeout, cmd.query_async(&mut conn)).await
    }

    /// Registers a local waiter for `task_id` (none without a notifier).
    fn register(&self, task_id: &str) -> Option<oneshot::Receiver<Wake>> {
        self.notifier.as_ref().map(|(n, _)| n.register(task_id))
    }

    /// Reads the record; while it is pending, registers this gateway on it, in one script.
    async fn read_watching(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let Some((_, gateway)) = &self.notifier else {
            return self.get(task_id).await;
        };
        let mut call = self.watch.prepare_invoke();
        call.key(self.keys.result(task_id)).arg(gateway);
        let mut conn = self.conn.clone();
        let record: Option<Vec<u8>> = bounded(self.op_timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|e| Self::unavailable(&e))?;
        Ok(record.as_deref().and_then(record::parse))
    }
}

/// A wait registered before it could miss its notice.
struct Expected {
    store: Arc<RedisResultStore>,
    task_id: String,
    /// The record as last known (pending).
    pending: TaskRecord,
    /// The registration; `None` without a notifier (then the store is polled).
    woken: Option<oneshot::Receiver<Wake>>,
}

#[async_trait]
impl Expectation for Expected {
    async fn wait(self: Box<Self>, timeout: Duration) -> Result<Option<TaskRecord>, StoreError> {
        let Expected {
            store,
            task_id,
            mut pending,
            mut woken,
        } = *self;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let wake = match woken.take() {
                Some(rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Err(_) => return Ok(Some(pending)),
                    Ok(Ok(wake)) => wake,
                    // The registration went without a word: treat it as a recheck.
                    Ok(Err(_)) => Wake::Recheck,
                },
                None => {
                    let nap = deadline
                        .saturating_duration_since(tokio::time::Instant::now())
                        .min(POLL_WITHOUT_NOTIFIER);
                    if nap.is_zero() {
                        return Ok(Some(pending));
                    }
                    tokio::time::sleep(nap).await;
                    Wake::Recheck
                }
            };
            match wake {
                // The notice carries the result: no read of the store.
                Wake::Done(notice) => {
                    return Ok(Some(TaskRecord {
                        status: notice.status,
                        output: notice.output,
                        error: notice.error,
                        completed_at: Some(notice.completed_at),
                        ..pending
                    }))
                }
                Wake::Recheck => {
                    // Register again first, then read once: nothing can slip between.
                    woken = store.register(&task_id);
                    match store.read_watching(&task_id).await? {
                        Some(r) if !r.status.is_terminal() => pending = r,
                        other => return Ok(other),
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(Some(pending));
                    }
                }
            }
        }
    }
}

#[async_trait]
impl ResultStore for RedisResultStore {
    async fn create(
        &self,
        task_id: &str,
        created_at: u64,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.keys.result(task_id))
                .arg(record::pending(created_at, owner))
                .arg("PX")
                .arg(self.settler.ttl_ms()),
        )
        .await
        .map_err(|e| Self::unavailable(&e))
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError> {
        self.settler
            .settle(&completions, &[])
            .await
            .map(|_| ())
            .map_err(|e| Self::unavailable(&e))
    }

    async fn remove(&self, task_id: &str) -> Result<(), StoreError> {
        self.run::<()>(redis::cmd("DEL").arg(self.keys.result(task_id)))
            .await
            .map_err(|e| Self::unavailable(&e))
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let record: Option<Vec<u8>> = self
            .run(redis::cmd("GET").arg(self.keys.result(task_id)))
            .await
            .map_err(|e| Self::unavailable(&e))?;
        Ok(record.as_deref().and_then(record::parse))
    }

    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskRecord>, StoreError> {
        match Arc::new(self.clone()).watch(task_id).await? {
            Watched::Missing => Ok(None),
            Watched::Done(record) => Ok(Some(record)),
            Watched::Pending(record, _) if timeout.is_zero() => Ok(Some(record)),
            Watched::Pending(_, expectation) => expectation.wait(timeout).await,
        }
    }

    async fn count(&self) -> Result<usize, StoreError> {
        // Every key of the database (results, streams, dedupe): cheap, and close enough for a
        // gauge; an exact count would need a SCAN.
        self.run(&redis::cmd("DBSIZE"))
            .await
            .map_err(|e| Self::unavailable(&e))
    }

    fn expect(
        self: Arc<Self>,
        task_id: &str,
        created_at: u64,
        owner: Option<&str>,
    ) -> Box<dyn Expectation> {
        Box::new(Expected {
            woken: self.register(task_id),
            store: self,
            task_id: task_id.to_owned(),
            pending: TaskRecord {
                owner: owner.map(str::to_owned),
                ..TaskRecord::pending(created_at)
            },
        })
    }

    async fn watch(self: Arc<Self>, task_id: &str) -> Result<Watched, StoreError> {
        // Registered before the read: a completion right after it still wakes us.
        let woken = self.register(task_id);
        Ok(match self.read_watching(task_id).await? {
            None => Watched::Missing,
            Some(record) if record.status.is_terminal() => Watched::Done(record),
            Some(record) => Watched::Pending(
                record.clone(),
                Box::new(Expected {
                    store: self.clone(),
                    task_id: task_id.to_owned(),
                    pending: record,
                    woken,
                }),
            ),
        })
    }
}
