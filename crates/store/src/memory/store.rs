//! The in-process result store: sharded maps with a TTL, bounded by evicting the oldest
//! record, and wake-ups for waiters.
//!
//! Kept compact because it holds every result for its TTL (10 minutes: ~6 million records at
//! 10,000 tasks/s). A finished record is its id as 16 bytes (the canonical UUID text the
//! gateway makes, packed; other ids stay text, in a table of their own), its times, its status,
//! a 4-byte number for its owner (names are interned per shard), its expiry in seconds of the
//! store's clock, and the output bytes as the worker produced them — one allocation. Pending
//! records, few and short-lived, live in a map of their own, so that the order of finished
//! records (for expiry and eviction) gets one entry per record. Waiters are kept apart too:
//! only pending records that someone long-polls have any.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::fast::RandomState;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::bucket;
use super::keys::{pack_uuid, TaskId};
use super::owners::Owners;

use crate::{Completion, Expectation, Outcome, ResultStore, StoreError, TaskRecord, Watched};

/// Shards of a large store; enough that 2 cores' worth of handlers rarely meet on one lock.
const SHARDS: usize = 64;
/// Fewest records a shard is made for: a small store has fewer shards (one below this), so
/// that its eviction order is close to the store's oldest-first.
const MIN_PER_SHARD: usize = 4096;

mod table;

use table::{Ended, Pending, Stored, Table};

/// One shard: the two tables, the owners their records name, and the waiters.
#[derive(Debug, Default)]
struct Shard {
    /// Records whose ids are canonical UUIDs (all the gateway makes).
    uuids: Table<[u8; 16]>,
    /// Records with any other id.
    texts: Table<Box<str>>,
    /// Owner names of this shard's records.
    owners: Owners,
    /// Long-polls waiting for a pending task to finish; woken (by being dropped) when it does.
    waiters: HashMap<TaskId, Waiters, RandomState>,
    /// Pending records created so far: the next one's `seq`.
    created: u64,
}

/// Whoever waits for one pending task: nearly always one caller (the submission that waits
/// for its own task), kept without a vector, which would be an allocation a request. The
/// completion hands each the record it stored, so a woken waiter does not look it up.
#[derive(Debug)]
enum Waiters {
    One(oneshot::Sender<TaskRecord>),
    Many(Vec<oneshot::Sender<TaskRecord>>),
}

impl Waiters {
    /// Adds a waiter to those waiting for `task_id` in `waiters`: what it waits on, which
    /// resolves when the result is stored, with the stored record (or with an error, its
    /// sender dropped: then it reads the store).
    fn register(
        waiters: &mut HashMap<TaskId, Waiters, RandomState>,
        task_id: TaskId,
    ) -> oneshot::Receiver<TaskRecord> {
        let (waiter, woken) = oneshot::channel();
        // One look-up: the key is made either way (a new task's, nearly always).
        match waiters.entry(task_id) {
            Entry::Vacant(none) => {
                none.insert(Waiters::One(waiter));
            }
            Entry::Occupied(mut some) => match some.get_mut() {
                Waiters::Many(all) => all.push(waiter),
                one => {
                    if let Waiters::One(first) = std::mem::replace(one, Waiters::Many(Vec::new())) {
                        *one = Waiters::Many(vec![first, waiter]);
                    }
                }
            },
        }
        woken
    }

    /// Hands every waiter the stored record.
    fn wake(self, record: TaskRecord) {
        match self {
            Waiters::One(waiter) => {
                let _ = waiter.send(record);
            }
            Waiters::Many(all) => {
                for waiter in all {
                    let _ = waiter.send(record.clone());
                }
            }
        }
    }

    /// Drops the waiters that gave up (their waits timed out); whether any are left.
    fn retain_waiting(&mut self) -> bool {
        match self {
            Waiters::One(waiter) => !waiter.is_closed(),
            Waiters::Many(all) => {
                all.retain(|w| !w.is_closed());
                !all.is_empty()
            }
        }
    }
}

/// Runs `$body` with `$table` bound to the table holding `$id` and `$key` to its key there.
macro_rules! with_table {
    ($shard:expr, $id:expr, |$table:ident, $key:ident| $body:expr) => {
        match pack_uuid($id) {
            Some(packed) => {
                let $table = &mut $shard.uuids;
                let $key = &packed;
                $body
            }
            None => {
                let $table = &mut $shard.texts;
                let $key: &str = $id;
                $body
            }
        }
    };
}

impl Shard {
    fn len(&self) -> usize {
        self.uuids.len() + self.texts.len()
    }

    fn get(&self, task_id: &str, now: u32) -> Option<TaskRecord> {
        match pack_uuid(task_id) {
            Some(packed) => self.uuids.get(&packed, now, &self.owners),
            None => self.texts.get(task_id, now, &self.owners),
        }
    }

    /// Removes the oldest record: the oldest finished one, or if none has finished, the
    /// pending one created first. Whether there was any.
    fn evict_oldest(&mut self) -> bool {
        let owners = &mut self.owners;
        match (self.uuids.oldest_done(), self.texts.oldest_done()) {
            (Some(u), Some(t)) if t < u => return self.texts.pop_oldest_done(owners),
            (Some(_), _) => return self.uuids.pop_oldest_done(owners),
            (None, Some(_)) => return self.texts.pop_oldest_done(owners),
            (None, None) => {}
        }
        let uuid = self.uuids.oldest_pending().map(|(e, k)| (e, *k));
        let text = self.texts.oldest_pending().map(|(e, k)| (e, k.clone()));
        match (uuid, text) {
            (Some((u, key)), Some((t, _))) if u <= t => self.uuids.remove(&key, owners),
            (Some((_, key)), None) => self.uuids.remove(&key, owners),
            (_, Some((_, key))) => self.texts.remove(&key, owners),
            (None, None) => false,
        }
    }
}

/// A result store in process memory, bounded in the number of records, with a TTL.
///
/// At its bound it evicts the oldest record of the shard a new record goes to (the oldest
/// finished one; a pending one only if none has finished) and counts it in
/// [`MemoryResultStore::evicted`]: a full store never refuses a task, and what it forgets
/// first is what its reader is least likely to still want.
///
/// Cloning is not offered: share it behind an `Arc`.
#[derive(Debug)]
pub struct MemoryResultStore {
    /// The shards, picked by a hash of the task id.
    shards: Vec<Mutex<Shard>>,
    /// Records in all shards.
    len: AtomicUsize,
    /// Most records one shard holds: the store's capacity over the shards, rounded up.
    per_shard: usize,
    /// How long a record lives after its last change.
    ttl: Duration,
    /// Second 0 of the store's clock, in which expiries are kept (4 bytes a record).
    epoch: Instant,
    /// Records evicted to make room, since the start.
    evicted: AtomicU64,
    /// Picks a task's shard.
    hasher: RandomState,
}

impl MemoryResultStore {
    /// A store holding about `capacity` records (evicting the oldest past it), each for
    /// `ttl` after its last change.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self::with_shards(capacity, ttl, capacity / MIN_PER_SHARD)
    }

    /// The same with `shards` shards (at least 1, at most 64). Eviction picks the oldest
    /// record of a shard, so with one shard it is exactly the oldest of the store.
    pub fn with_shards(capacity: usize, ttl: Duration, shards: usize) -> Self {
        let shards = shards.clamp(1, SHARDS);
        MemoryResultStore {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            len: AtomicUsize::new(0),
            per_shard: capacity.div_ceil(shards).max(1),
            ttl,
            epoch: Instant::now(),
            evicted: AtomicU64::new(0),
            hasher: RandomState::default(),
        }
    }

    /// Records evicted to make room for newer ones, since the store was made.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn shard(&self, task_id: &str) -> MutexGuard<'_, Shard> {
        self.lock(bucket(&self.hasher, task_id, self.shards.len()))
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // Every update of a shard is a few map or deque operations; a panic elsewhere while
        // holding the lock leaves it consistent enough to keep serving.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The second of the store's clock that `at` falls in.
    fn second(&self, at: Instant) -> u32 {
        let secs = at.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// The expiry of a record changed at `now`: the second its TTL ends in, rounded up, so
    /// that a record never goes before its TTL (and at most a second after).
    fn expiry(&self, now: Instant) -> u32 {
        let end = now.saturating_duration_since(self.epoch) + self.ttl;
        let secs = end.as_secs() + u64::from(end.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// Evicts the shard's oldest records until one more fits.
    fn make_room(&self, shard: &mut Shard) {
        while shard.len() >= self.per_shard && shard.evict_oldest() {
            self.len.fetch_sub(1, Ordering::AcqRel);
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`ResultStore::create`], done at once (no future: an in-process intake calls it
    /// directly).
    pub fn create_now(&self, task_id: &str, created_at: u64, owner: Option<&str>) {
        self.record_pending(task_id, created_at, owner, false);
    }

    /// [`ResultStore::create_new`], done at once.
    pub fn create_new_now(&self, task_id: &str, created_at: u64, owner: Option<&str>) {
        self.record_pending(task_id, created_at, owner, true);
    }

    /// [`ResultStore::remove`], done at once.
    pub fn remove_now(&self, task_id: &str) {
        let mut guard = self.shard(task_id);
        let shard = &mut *guard;
        let owners = &mut shard.owners;
        if with_table!(shard, task_id, |table, key| table.remove(key, owners)) {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Records a pending task, replacing any record of its id, or with `new`, only a
    /// pending one ([`ResultStore::create_new`]).
    fn record_pending(&self, task_id: &str, created_at: u64, owner: Option<&str>, new: bool) {
        let expires = self.expiry(Instant::now());
        let mut guard = self.shard(task_id);
        let shard = &mut *guard;
        self.make_room(shard);
        let owner = shard.owners.acquire(owner);
        shard.created += 1;
        let pending = Pending {
            created_at,
            expires,
            owner,
            seq: shard.created,
        };
        let owners = &mut shard.owners;
        let added = if new {
            with_table!(shard, task_id, |table, key| table
                .create_new(key, pending, owners))
        } else {
            with_table!(shard, task_id, |table, key| table
                .create(key, pending, owners))
        };
        self.len.fetch_add(added, Ordering::AcqRel);
    }

    /// Removes every record whose TTL has passed at `now`; returns how many went.
    ///
    /// Reads never return expired records whether or not this ran; sweeping only frees memory.
    pub fn sweep(&self, now: Instant) -> usize {
        let second = self.second(now);
        let mut removed = 0;
        for shard in 0..self.shards.len() {
            let mut guard = self.lock(shard);
            let shard = &mut *guard;
            removed += shard.uuids.sweep(second, &mut shard.owners);
            removed += shard.texts.sweep(second, &mut shard.owners);
            // Waits that timed out left closed senders behind.
            shard.waiters.retain(|_, waiters| waiters.retain_waiting());
        }
        self.len.fetch_sub(removed, Ordering::AcqRel);
        removed
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
        self.create_now(task_id, created_at, owner);
        Ok(())
    }

    /// No finished record is looked for: a new id has none.
    async fn create_new(
        &self,
        task_id: &str,
        created_at: u64,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        self.create_new_now(task_id, created_at, owner);
        Ok(())
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError> {
        let expires = self.expiry(Instant::now());
        for c in completions {
            let (ended, body) = match c.outcome {
                Outcome::Success(out) => (Ended::Success, out.into_encoded()),
                Outcome::Failed(err) => (Ended::Failed, err.into_bytes()),
            };
            let completion = (ended, body.into_boxed_slice(), c.completed_at);
            let mut guard = self.shard(&c.task_id);
            let shard = &mut *guard;
            // The id packed once, and its finished record looked up at most once (not at
            // all for a pending task), for both the room and the write (eviction, done only
            // for a task not here, leaves every other record's sequence number as it was).
            let id = c.task_id.as_str();
            let packed = pack_uuid(id);
            let waiters = if shard.waiters.is_empty() {
                None
            } else {
                shard.waiters.remove(&match packed {
                    Some(packed) => TaskId::Uuid(packed),
                    None => TaskId::Text(Box::from(id)),
                })
            };
            let (pending, indexed) = match &packed {
                Some(key) => shard.uuids.locate(key),
                None => shard.texts.locate(id),
            };
            if indexed.is_none() && !pending {
                self.make_room(shard);
            }
            let stored = match &packed {
                Some(key) => shard.uuids.complete(key, completion, expires, indexed),
                None => shard.texts.complete(id, completion, expires, indexed),
            };
            let woken = match waiters {
                Some(waiters) if matches!(stored, Stored::Stored(_)) => match &packed {
                    Some(_) => shard.uuids.last_done(&shard.owners),
                    None => shard.texts.last_done(&shard.owners),
                }
                .map(|record| (waiters, record)),
                _ => None,
            };
            if let Stored::Stored(added) = stored {
                self.len.fetch_add(added, Ordering::AcqRel);
            }
            // Every waiter gets the stored record. Where nothing was stored (a final result
            // was there already), dropping the senders wakes them to read it.
            if let Some((waiters, record)) = woken {
                waiters.wake(record);
            }
        }
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), StoreError> {
        self.remove_now(task_id);
        Ok(())
    }

    async fn get(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let now = self.second(Instant::now());
        Ok(self.shard(task_id).get(task_id, now))
    }

    async fn wait(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let woken = {
            let now = self.second(Instant::now());
            let mut shard = self.shard(task_id);
            let Some(record) = shard.get(task_id, now) else {
                return Ok(None);
            };
            if record.status.is_terminal() || timeout.is_zero() {
                return Ok(Some(record));
            }
            Waiters::register(&mut shard.waiters, TaskId::new(task_id))
        };
        // The completion sends the stored record; a dropped sender or a timeout is read.
        if let Ok(Ok(record)) = tokio::time::timeout(timeout, woken).await {
            return Ok(Some(record));
        }
        self.get(task_id).await
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.len.load(Ordering::Acquire))
    }

    /// Registers the waiter at once, before the task's record exists: the completion wakes
    /// it, and the wait reads the store once, when woken (or timed out), not also before.
    /// The task is one about to be admitted, so it has not finished: its id is not looked
    /// up among the finished records (a look-up that, for an id not there, lands on a
    /// place of the index seldom in cache).
    fn expect(
        self: Arc<Self>,
        task_id: &str,
        _created_at: u64,
        _owner: Option<&str>,
    ) -> Box<dyn Expectation> {
        let id = TaskId::new(task_id);
        let woken = Waiters::register(&mut self.shard(task_id).waiters, id.clone());
        Box::new(Expected {
            store: self,
            task_id: id,
            woken,
        })
    }

    /// The record read and, while it is pending, the waiter registered under the same lock,
    /// so its completion cannot come between.
    async fn watch(self: Arc<Self>, task_id: &str) -> Result<Watched, StoreError> {
        let now = self.second(Instant::now());
        let mut shard = self.shard(task_id);
        let Some(record) = shard.get(task_id, now) else {
            return Ok(Watched::Missing);
        };
        if record.status.is_terminal() {
            return Ok(Watched::Done(record));
        }
        let id = TaskId::new(task_id);
        let woken = Waiters::register(&mut shard.waiters, id.clone());
        drop(shard);
        Ok(Watched::Pending(
            record,
            Box::new(Expected {
                store: self,
                task_id: id,
                woken,
            }),
        ))
    }
}

/// A waiter registered by [`MemoryResultStore::expect`].
struct Expected {
    store: Arc<MemoryResultStore>,
    /// Packed: made into text only to read the store (a wait that timed out).
    task_id: TaskId,
    /// Resolves with the record when the result is stored (with an error, the sender
    /// dropped, when the store could not hand it over: then it is read).
    woken: oneshot::Receiver<TaskRecord>,
}

#[async_trait]
impl Expectation for Expected {
    async fn wait(self: Box<Self>, timeout: Duration) -> Result<Option<TaskRecord>, StoreError> {
        let Expected {
            store,
            task_id,
            woken,
        } = *self;
        if !timeout.is_zero() {
            if let Ok(Ok(record)) = tokio::time::timeout(timeout, woken).await {
                return Ok(Some(record));
            }
        }
        store.get(&task_id.text()).await
    }
}

#[cfg(test)]
mod tests;
