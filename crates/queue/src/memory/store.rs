//! The in-process result store: sharded maps with a TTL and wake-ups for waiters.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::api::TaskStatus;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::bucket;
use crate::{Completion, Outcome, ResultStore, StoreError, TaskRecord};

/// Shards of the map; enough that 2 cores' worth of handlers rarely meet on one lock.
const SHARDS: usize = 64;

/// One task's entry.
#[derive(Debug)]
struct Entry {
    /// What the API shows.
    record: TaskRecord,
    /// When the entry stops existing; reset when the result is stored.
    expires_at: Instant,
    /// Long-polls waiting for this task to finish; woken (by being dropped) on completion.
    waiters: Vec<oneshot::Sender<()>>,
}

/// One shard: the map and its expiry schedule.
#[derive(Debug, Default)]
struct Shard {
    /// Records by task id.
    entries: HashMap<String, Entry>,
    /// `(expires_at, task_id)` in the order they were set. With one TTL for all, that is
    /// also expiry order, so sweeping pops from the front. An entry whose expiry was pushed
    /// later has a stale line here, which the sweep recognises and skips.
    expiries: VecDeque<(Instant, String)>,
}

/// A result store in process memory, bounded in the number of records, with a TTL.
///
/// Cloning is not offered: share it behind an `Arc`.
#[derive(Debug)]
pub struct MemoryResultStore {
    /// The shards, picked by a hash of the task id.
    shards: Vec<Mutex<Shard>>,
    /// Records in all shards; checked against `capacity` when a task is created.
    len: AtomicUsize,
    /// Most records held at once. Past it, `create` fails with `Full`.
    capacity: usize,
    /// How long a record lives after its last change.
    ttl: Duration,
    /// Picks a task's shard.
    hasher: RandomState,
}

impl MemoryResultStore {
    /// A store holding at most `capacity` records, each for `ttl` after its last change.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        MemoryResultStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            len: AtomicUsize::new(0),
            capacity,
            ttl,
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, task_id: &str) -> MutexGuard<'_, Shard> {
        self.lock(bucket(&self.hasher, task_id, SHARDS))
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // Every update of a shard is a single map or deque operation; a panic elsewhere while
        // holding the lock leaves it consistent enough to keep serving.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes every record whose TTL has passed at `now`; returns how many went.
    ///
    /// Reads never return expired records whether or not this ran; sweeping only frees memory.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut removed = 0;
        for shard in 0..SHARDS {
            let mut guard = self.lock(shard);
            let shard = &mut *guard;
            while let Some((at, _)) = shard.expiries.front() {
                if *at > now {
                    break;
                }
                let (at, task_id) = shard
                    .expiries
                    .pop_front()
                    .expect("front() was Some just above. This is a bug.");
                let current = shard.entries.get(&task_id).map(|e| e.expires_at);
                if current == Some(at) {
                    shard.entries.remove(&task_id);
                    removed += 1;
                }
            }
        }
        self.len.fetch_sub(removed, Ordering::AcqRel);
        removed
    }

    fn live(entry: &Entry, now: Instant) -> bool {
        entry.expires_at > now
    }
}

#[async_trait]
impl ResultStore for MemoryResultStore {
    async fn create(
        &self,
        task_id: &str,
        created_at: u64,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.len.fetch_sub(1, Ordering::AcqRel);
            // Expired records may be what fills it: sweep once, then refuse if still full.
            if self.sweep(Instant::now()) == 0 || self.len.load(Ordering::Acquire) >= self.capacity
            {
                return Err(StoreError::Full {
                    capacity: self.capacity,
                });
            }
            self.len.fetch_add(1, Ordering::AcqRel);
        }
        let expires_at = Instant::now() + self.ttl;
        let mut shard = self.shard(task_id);
        let entry = Entry {
            record: TaskRecord {
                owner: owner.map(str::to_owned),
                ..TaskRecord::pending(created_at)
            },
            expires_at,
            waiters: Vec::new(),
        };
        if shard.entries.insert(task_id.to_owned(), entry).is_some() {
            // Ids are random UUIDs; a clash replaces the old record and must not count twice.
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        shard.expiries.push_back((expires_at, task_id.to_owned()));
        Ok(())
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError> {
        let expires_at = Instant::now() + self.ttl;
        for c in completions {
            let (status, output, error) = match c.outcome {
                Outcome::Success(out) => (TaskStatus::Success, Some(out), None),
                Outcome::Failed(err) => (TaskStatus::Failed, None, Some(err)),
            };
            let mut shard = self.shard(&c.task_id);
            let entry = shard.entries.entry(c.task_id.clone()).or_insert_with(|| {
                self.len.fetch_add(1, Ordering::AcqRel);
                Entry {
                    record: TaskRecord::pending(c.completed_at),
                    expires_at,
                    waiters: Vec::new(),
                }
            });
            // A SUCCESS is final; a FAILED gives way only to a SUCCESS.
            let replaces = match entry.record.status {
                TaskStatus::Success => false,
                TaskStatus::Failed => status == TaskStatus::Success,
                TaskStatus::Pending => true,
            };
            if !replaces {
                continue;
            }
            entry.record.status = status;
            entry.record.output = output;
            entry.record.error = error;
            entry.record.completed_at = Some(c.completed_at);
            entry.expires_at = expires_at;
            // Dropping the senders wakes every waiter.
            entry.waiters.clear();
            shard.expiries.push_back((expires_at, c.task_id));
        }
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), StoreError> {
        if self.shard(task_id).entries.remove(task_id).is_some() {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let now = Instant::now();
        let shard = self.shard(task_id);
        Ok(shard
            .entries
            .get(task_id)
            .filter(|e| Self::live(e, now))
            .map(|e| e.record.clone()))
    }

    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let woken = {
            let now = Instant::now();
            let mut shard = self.shard(task_id);
            let Some(entry) = shard
                .entries
                .get_mut(task_id)
                .filter(|e| Self::live(e, now))
            else {
                return Ok(None);
            };
            if entry.record.status.is_terminal() || timeout.is_zero() {
                return Ok(Some(entry.record.clone()));
            }
            let (tx, rx) = oneshot::channel();
            entry.waiters.push(tx);
            rx
        };
        // Completion drops the sender (an Err here), which is the wake-up; a timeout is too.
        let _ = tokio::time::timeout(timeout, woken).await;
        self.get(task_id).await
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.len.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn done(id: &str, out: &str) -> Completion {
        Completion {
            task_id: id.into(),
            outcome: Outcome::Success(out.into()),
            completed_at: 7,
            reply_to: None,
        }
    }

    #[tokio::test]
    async fn lifecycle_pending_then_success() {
        let s = MemoryResultStore::new(10, Duration::from_secs(600));
        s.create("a", 1, None).await.expect("create");
        let r = s.get("a").await.expect("get").expect("exists");
        assert_eq!(r.status, TaskStatus::Pending);
        s.complete(vec![done("a", "out")]).await.expect("complete");
        let r = s.get("a").await.expect("get").expect("exists");
        assert_eq!(r.status, TaskStatus::Success);
        assert_eq!(r.output.as_deref(), Some("out"));
        assert_eq!((r.created_at, r.completed_at), (1, Some(7)));
        assert!(s.get("nope").await.expect("get").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn records_expire_after_ttl_and_sweep_frees_them() {
        let s = MemoryResultStore::new(10, Duration::from_secs(600));
        s.create("a", 1, None).await.expect("create");
        tokio::time::advance(Duration::from_secs(300)).await;
        s.complete(vec![done("a", "out")]).await.expect("complete");
        // The TTL restarts at completion: 599 s later it is still there.
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(s.get("a").await.expect("get").is_some());
        assert_eq!(s.sweep(Instant::now()), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.get("a").await.expect("get").is_none());
        assert_eq!(s.sweep(Instant::now()), 1);
        assert_eq!(s.count().await.expect("count"), 0);
    }

    #[tokio::test]
    async fn full_store_refuses_new_tasks() {
        let s = MemoryResultStore::new(2, Duration::from_secs(600));
        s.create("a", 1, None).await.expect("create");
        s.create("b", 1, None).await.expect("create");
        assert!(matches!(
            s.create("c", 1, None).await,
            Err(StoreError::Full { capacity: 2 })
        ));
        s.remove("a").await.expect("remove");
        s.create("c", 1, None).await.expect("room after remove");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_is_woken_by_completion_not_by_its_timeout() {
        let s = Arc::new(MemoryResultStore::new(10, Duration::from_secs(600)));
        s.create("a", 1, None).await.expect("create");
        let start = Instant::now();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait("a", Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.complete(vec![done("a", "out")]).await.expect("complete");
        let r = waiter.await.expect("join").expect("wait").expect("exists");
        assert_eq!(r.status, TaskStatus::Success);
        assert_eq!(start.elapsed(), Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_times_out_pending_and_returns_none_for_unknown() {
        let s = MemoryResultStore::new(10, Duration::from_secs(600));
        s.create("a", 1, None).await.expect("create");
        let r = s
            .wait("a", Duration::from_millis(100))
            .await
            .expect("wait")
            .expect("exists");
        assert_eq!(r.status, TaskStatus::Pending);
        assert!(s
            .wait("zzz", Duration::from_secs(1))
            .await
            .expect("wait")
            .is_none());
    }
}
