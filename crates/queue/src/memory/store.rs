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

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::api::TaskStatus;
use hashbrown::HashTable;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::bucket;
use super::keys::{pack_uuid, Key};
use super::owners::{Owners, NO_OWNER};

use crate::{Completion, Expectation, Outcome, ResultStore, StoreError, TaskRecord};

/// Shards of a large store; enough that 2 cores' worth of handlers rarely meet on one lock.
const SHARDS: usize = 64;
/// Fewest records a shard is made for: a small store has fewer shards (one below this), so
/// that its eviction order is close to the store's oldest-first.
const MIN_PER_SHARD: usize = 4096;

/// How a finished task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Success,
    Failed,
}

/// A finished task's record.
#[derive(Debug)]
struct Done<K> {
    /// Its id, to take it out of the index when it leaves the front of the ring.
    key: K,
    /// Accepted at, milliseconds since the Unix epoch.
    created_at: u64,
    /// The worker's output on success, the reason on failure: the bytes as produced.
    body: Box<str>,
    /// Result stored this many milliseconds after `created_at` (0 if the clock went back).
    completed_after_ms: u32,
    /// The second of the store's clock from which the record is gone.
    expires: u32,
    /// The owner's number in the shard's [`Owners`].
    owner: u32,
    /// How it ended.
    ended: Ended,
}

/// A task not finished yet.
#[derive(Debug)]
struct Pending {
    /// Accepted at, milliseconds since the Unix epoch.
    created_at: u64,
    /// The second of the store's clock from which the record is gone.
    expires: u32,
    /// The owner's number in the shard's [`Owners`].
    owner: u32,
    /// Its place in the shard's order of creation: the lowest is the oldest.
    seq: u64,
}

/// The records whose ids have one form (packed UUIDs, or text).
///
/// Finished records live in a ring in the order they finished: with one TTL for all, that is
/// expiry order, so the front is the oldest, and expiry and eviction pop from it. An index
/// finds each id's place (a sequence number: the front's is `head`). The ring holds the
/// records themselves, densely, rather than a hash map of them: a hash map's buckets are half
/// empty on average and all of its pages are touched, where the ring's only grow at its end.
/// The index holds only the 4-byte sequence numbers, hashed by the ids the ring's records
/// hold, so an id is stored once.
#[derive(Debug)]
struct Table<K> {
    /// Tasks not finished yet.
    pending: HashMap<K, Pending>,
    /// Finished tasks: their sequence numbers in `ring`, hashed by their ids. Every entry
    /// names a record in the ring (one that is `Some`).
    index: HashTable<u32>,
    /// Finished tasks, oldest first; `None` where one was removed, or replaced (a FAILED
    /// that a SUCCESS overwrote goes to the back).
    ring: Ring<Done<K>>,
    /// The sequence number of the ring's front (wrapping).
    head: u32,
    /// Hashes the ids for `index`.
    hasher: RandomState,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            pending: HashMap::new(),
            index: HashTable::new(),
            ring: Ring::default(),
            head: 0,
            hasher: RandomState::new(),
        }
    }
}

/// Slots in one chunk of a [`Ring`]: 256 records (14 KiB with packed ids).
const CHUNK: usize = 256;

/// A FIFO of slots kept in chunks of [`CHUNK`]: it grows and shrinks a chunk at a time. A
/// `VecDeque` grows by doubling, which copies every record into a buffer twice the size
/// (under the shard's lock) and leaves the old buffers to the allocator, where nothing of
/// their size comes to reuse them; here the chunk emptied at the front is kept for the next
/// one needed at the back.
#[derive(Debug)]
struct Ring<T> {
    chunks: VecDeque<Box<[Option<T>]>>,
    /// The place of the first slot in the first chunk.
    front: usize,
    /// Slots from the first one.
    len: usize,
    /// An emptied chunk, for the next one needed.
    spare: Option<Box<[Option<T>]>>,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Ring {
            chunks: VecDeque::new(),
            front: 0,
            len: 0,
            spare: None,
        }
    }
}

impl<T> Ring<T> {
    fn len(&self) -> usize {
        self.len
    }

    /// The chunk and the place in it of slot `i` (from the front).
    fn place(&self, i: usize) -> (usize, usize) {
        let at = self.front + i;
        (at / CHUNK, at % CHUNK)
    }

    fn get(&self, i: usize) -> Option<&Option<T>> {
        if i >= self.len {
            return None;
        }
        let (chunk, at) = self.place(i);
        self.chunks.get(chunk)?.get(at)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Option<T>> {
        if i >= self.len {
            return None;
        }
        let (chunk, at) = self.place(i);
        self.chunks.get_mut(chunk)?.get_mut(at)
    }

    fn front(&self) -> Option<&Option<T>> {
        self.get(0)
    }

    fn push_back(&mut self, value: T) {
        let (chunk, at) = self.place(self.len);
        if chunk == self.chunks.len() {
            let fresh = self
                .spare
                .take()
                .unwrap_or_else(|| (0..CHUNK).map(|_| None).collect());
            self.chunks.push_back(fresh);
        }
        if let Some(slot) = self.chunks.get_mut(chunk).and_then(|c| c.get_mut(at)) {
            *slot = Some(value);
            self.len += 1;
        }
    }

    /// The front slot, taken out of the ring.
    fn pop_front(&mut self) -> Option<Option<T>> {
        if self.len == 0 {
            return None;
        }
        let front = self.front;
        let taken = self
            .chunks
            .front_mut()
            .and_then(|c| c.get_mut(front))
            .map(Option::take);
        self.front += 1;
        self.len -= 1;
        if self.front == CHUNK {
            // Every slot of the first chunk has been taken: keep it for the back.
            self.spare = self.chunks.pop_front();
            self.front = 0;
        }
        taken
    }
}

/// A key's borrowed form, the one lookups and hashes take.
fn id_of<K: Key>(key: &K) -> &K::Ref {
    key.borrow()
}

/// What [`Table::complete`] did.
enum Stored {
    /// Nothing: the record already had a final result that this one may not replace.
    Kept,
    /// The result is stored; the count of records changed by this much (0 or 1).
    Stored(usize),
}

impl<K: Key> Table<K> {
    fn len(&self) -> usize {
        self.pending.len() + self.index.len()
    }

    fn contains(&self, key: &K::Ref) -> bool {
        self.find(key).is_some() || self.pending.contains_key(key)
    }

    /// The sequence number of `key`'s finished record.
    fn find(&self, key: &K::Ref) -> Option<u32> {
        let (ring, head) = (&self.ring, self.head);
        self.index
            .find(self.hasher.hash_one(key), |&seq| {
                ring.get(seq.wrapping_sub(head) as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|d| id_of(&d.key) == key)
            })
            .copied()
    }

    /// Takes `key`'s entry (naming `seq`) out of the index.
    fn unindex(&mut self, key: &K::Ref, seq: u32) {
        if let Ok(entry) = self
            .index
            .find_entry(self.hasher.hash_one(key), |&s| s == seq)
        {
            entry.remove();
        }
    }

    /// The ring's slot of sequence number `seq`.
    fn slot(&mut self, seq: u32) -> Option<&mut Option<Done<K>>> {
        self.ring.get_mut(seq.wrapping_sub(self.head) as usize)
    }

    fn done(&self, key: &K::Ref) -> Option<&Done<K>> {
        let seq = self.find(key)?;
        self.ring
            .get(seq.wrapping_sub(self.head) as usize)?
            .as_ref()
    }

    /// Puts a finished record at the back of the ring; its id is in the index at `indexed`
    /// (the sequence number of its record before, now replaced), or not yet.
    fn push(&mut self, done: Done<K>, indexed: Option<u32>) {
        let seq = self.head.wrapping_add(self.ring.len() as u32);
        let hash = self.hasher.hash_one(id_of(&done.key));
        self.ring.push_back(done);
        if let Some(old) = indexed {
            if let Some(entry) = self.index.find_mut(hash, |&s| s == old) {
                *entry = seq;
                return;
            }
        }
        let Table {
            index,
            ring,
            head,
            hasher,
            ..
        } = self;
        let head = *head;
        // Growing the index rehashes every entry through the record it names.
        index.insert_unique(hash, seq, |&s| {
            ring.get(s.wrapping_sub(head) as usize)
                .and_then(Option::as_ref)
                .map_or(0, |d| hasher.hash_one(id_of(&d.key)))
        });
    }

    fn get(&self, key: &K::Ref, now: u32, owners: &Owners) -> Option<TaskRecord> {
        if let Some(d) = self.done(key).filter(|d| d.expires > now) {
            let body = Some(String::from(&*d.body));
            let (status, output, error) = match d.ended {
                Ended::Success => (TaskStatus::Success, body, None),
                Ended::Failed => (TaskStatus::Failed, None, body),
            };
            return Some(TaskRecord {
                status,
                output,
                error,
                created_at: d.created_at,
                completed_at: Some(d.created_at + u64::from(d.completed_after_ms)),
                owner: owners.name(d.owner).map(str::to_owned),
            });
        }
        self.pending
            .get(key)
            .filter(|p| p.expires > now)
            .map(|p| TaskRecord {
                owner: owners.name(p.owner).map(str::to_owned),
                ..TaskRecord::pending(p.created_at)
            })
    }

    /// Records a pending task; returns how many records were added (0 if it replaced one).
    fn create(&mut self, key: &K::Ref, pending: Pending, owners: &mut Owners) -> usize {
        let replaced = self.remove(key, owners);
        self.pending.insert(K::own(key), pending);
        usize::from(!replaced)
    }

    /// Stores a final result, under the rules of [`ResultStore::complete`].
    fn complete(
        &mut self,
        key: &K::Ref,
        completion: (Ended, Box<str>, u64),
        expires: u32,
    ) -> Stored {
        let (ended, body, completed_at) = completion;
        let indexed = self.find(key);
        let (created_at, owner, added) = if let Some(seq) = indexed {
            // A SUCCESS is final; a FAILED gives way only to a SUCCESS.
            let Some(slot) = self.slot(seq) else {
                return Stored::Kept;
            };
            if !slot
                .as_ref()
                .is_some_and(|d| d.ended == Ended::Failed && ended == Ended::Success)
            {
                return Stored::Kept;
            }
            let Some(old) = slot.take() else {
                return Stored::Kept;
            };
            (old.created_at, old.owner, 0)
        } else {
            match self.pending.remove(key) {
                // Counted when it was created.
                Some(p) => (p.created_at, p.owner, 0),
                // Unknown (expired, evicted, or never created here): stored all the same.
                None => (completed_at, NO_OWNER, 1),
            }
        };
        let completed_after_ms =
            u32::try_from(completed_at.saturating_sub(created_at)).unwrap_or(u32::MAX);
        self.push(
            Done {
                key: K::own(key),
                created_at,
                body,
                completed_after_ms,
                expires,
                owner,
                ended,
            },
            indexed,
        );
        Stored::Stored(added)
    }

    /// Forgets a record, pending or finished; whether there was one.
    fn remove(&mut self, key: &K::Ref, owners: &mut Owners) -> bool {
        let owner = if let Some(p) = self.pending.remove(key) {
            p.owner
        } else {
            let Some(seq) = self.find(key) else {
                return false;
            };
            self.unindex(key, seq);
            match self.slot(seq).and_then(Option::take) {
                Some(d) => d.owner,
                None => return false,
            }
        };
        owners.release(owner);
        true
    }

    /// Drops removed records from the front of the ring; the expiry of the oldest finished
    /// record, if any.
    fn oldest_done(&mut self) -> Option<u32> {
        loop {
            match self.ring.front()? {
                Some(d) => return Some(d.expires),
                None => {
                    self.ring.pop_front();
                    self.head = self.head.wrapping_add(1);
                }
            }
        }
    }

    /// Removes the oldest finished record; whether there was one.
    fn pop_oldest_done(&mut self, owners: &mut Owners) -> bool {
        if self.oldest_done().is_none() {
            return false;
        }
        let Some(Some(done)) = self.ring.pop_front() else {
            return false;
        };
        let seq = self.head;
        self.head = self.head.wrapping_add(1);
        self.unindex(id_of(&done.key), seq);
        owners.release(done.owner);
        true
    }

    /// The pending record created first.
    fn oldest_pending(&self) -> Option<(u64, &K)> {
        self.pending
            .iter()
            .map(|(key, p)| (p.seq, key))
            .min_by_key(|(seq, _)| *seq)
    }

    /// Removes every record expired at `now`; returns how many went.
    fn sweep(&mut self, now: u32, owners: &mut Owners) -> usize {
        let mut removed = 0;
        while self.oldest_done().is_some_and(|expires| expires <= now) {
            removed += usize::from(self.pop_oldest_done(owners));
        }
        // Pending records are few (bounded by the queue and the batches in flight): a scan.
        self.pending.retain(|_, p| {
            let live = p.expires > now;
            if !live {
                owners.release(p.owner);
                removed += 1;
            }
            live
        });
        removed
    }
}

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
    waiters: HashMap<Box<str>, Vec<oneshot::Sender<()>>>,
    /// Pending records created so far: the next one's `seq`.
    created: u64,
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

    /// Whether the shard holds a record of `task_id`, expired or not.
    fn contains(&self, task_id: &str) -> bool {
        match pack_uuid(task_id) {
            Some(packed) => self.uuids.contains(&packed),
            None => self.texts.contains(task_id),
        }
    }

    /// Whether the shard holds a final result of `task_id`, expired or not.
    fn finished(&self, task_id: &str) -> bool {
        match pack_uuid(task_id) {
            Some(packed) => self.uuids.done(&packed).is_some(),
            None => self.texts.done(task_id).is_some(),
        }
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
            hasher: RandomState::new(),
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
            shard.waiters.retain(|_, senders| {
                senders.retain(|s| !s.is_closed());
                !senders.is_empty()
            });
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
        let added = with_table!(shard, task_id, |table, key| table
            .create(key, pending, owners));
        self.len.fetch_add(added, Ordering::AcqRel);
        Ok(())
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError> {
        let expires = self.expiry(Instant::now());
        for c in completions {
            let (ended, body) = match c.outcome {
                Outcome::Success(out) => (Ended::Success, out),
                Outcome::Failed(err) => (Ended::Failed, err),
            };
            let completion = (ended, body.into_boxed_str(), c.completed_at);
            let mut guard = self.shard(&c.task_id);
            let shard = &mut *guard;
            if !shard.contains(&c.task_id) {
                self.make_room(shard);
            }
            let stored = with_table!(shard, &c.task_id, |table, key| table
                .complete(key, completion, expires));
            if let Stored::Stored(added) = stored {
                self.len.fetch_add(added, Ordering::AcqRel);
                // Dropping the senders wakes every waiter.
                if !shard.waiters.is_empty() {
                    shard.waiters.remove(c.task_id.as_str());
                }
            }
        }
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), StoreError> {
        let mut guard = self.shard(task_id);
        let shard = &mut *guard;
        let owners = &mut shard.owners;
        if with_table!(shard, task_id, |table, key| table.remove(key, owners)) {
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
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
            let (tx, rx) = oneshot::channel();
            shard
                .waiters
                .entry(Box::from(task_id))
                .or_default()
                .push(tx);
            rx
        };
        // Completion drops the sender (an Err here), which is the wake-up; a timeout is too.
        let _ = tokio::time::timeout(timeout, woken).await;
        self.get(task_id).await
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.len.load(Ordering::Acquire))
    }

    /// Registers the waiter at once, before the task's record exists: the completion wakes
    /// it, and the wait reads the store once, when woken (or timed out), not also before.
    fn expect(self: Arc<Self>, task_id: &str, pending: TaskRecord) -> Box<dyn Expectation> {
        drop(pending);
        let (tx, woken) = oneshot::channel();
        let mut shard = self.shard(task_id);
        // A task that has finished already (`watch` expects a task it read as pending, and it
        // may have finished since) will not be completed again: no waiting for it. Dropping
        // the sender makes the wait read the store at once.
        if !shard.finished(task_id) {
            shard
                .waiters
                .entry(Box::from(task_id))
                .or_default()
                .push(tx);
        }
        drop(shard);
        Box::new(Expected {
            store: self,
            task_id: task_id.to_owned(),
            woken,
        })
    }
}

/// A waiter registered by [`MemoryResultStore::expect`].
struct Expected {
    store: Arc<MemoryResultStore>,
    task_id: String,
    /// Resolves (with an error: the sender is dropped) when the result is stored.
    woken: oneshot::Receiver<()>,
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
            let _ = tokio::time::timeout(timeout, woken).await;
        }
        store.get(&task_id).await
    }
}

#[cfg(test)]
mod tests;
