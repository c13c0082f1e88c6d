//! The record tables of one shard: finished records (in expiry order, one allocation
//! each) and pending ones, keyed by packed UUID or by text.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::Output;
use foldhash::fast::RandomState;
use hashbrown::HashTable;

use super::super::keys::Key;
use super::super::owners::{Owners, NO_OWNER};
use crate::TaskRecord;

/// How a finished task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    Success,
    Failed,
}

/// A finished task's record.
#[derive(Debug)]
pub(super) struct Done<K> {
    /// Its id, to take it out of the index when it leaves the front of the ring.
    pub(super) key: K,
    /// Accepted at, milliseconds since the Unix epoch.
    pub(super) created_at: u64,
    /// The worker's output on success (its stored form, [`Output::encode`]), the reason on
    /// failure (UTF-8).
    pub(super) body: Box<[u8]>,
    /// Result stored this many milliseconds after `created_at` (0 if the clock went back).
    pub(super) completed_after_ms: u32,
    /// The second of the store's clock from which the record is gone.
    pub(super) expires: u32,
    /// The owner's number in the shard's [`Owners`].
    pub(super) owner: u32,
    /// How it ended.
    pub(super) ended: Ended,
}

impl<K> Done<K> {
    /// The record as the store's readers see it.
    fn record(&self, owners: &Owners) -> TaskRecord {
        let (status, output, error) = match self.ended {
            // Written by this store from an output: it reads back.
            Ended::Success => (TaskStatus::Success, Output::decode(&self.body), None),
            Ended::Failed => (
                TaskStatus::Failed,
                None,
                Some(String::from_utf8_lossy(&self.body).into_owned()),
            ),
        };
        TaskRecord {
            status,
            output,
            error,
            created_at: self.created_at,
            completed_at: Some(self.created_at + u64::from(self.completed_after_ms)),
            owner: owners.name(self.owner).map(str::to_owned),
        }
    }
}

/// A task not finished yet.
#[derive(Debug)]
pub(super) struct Pending {
    /// Accepted at, milliseconds since the Unix epoch.
    pub(super) created_at: u64,
    /// The second of the store's clock from which the record is gone.
    pub(super) expires: u32,
    /// The owner's number in the shard's [`Owners`].
    pub(super) owner: u32,
    /// Its place in the shard's order of creation: the lowest is the oldest.
    pub(super) seq: u64,
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
pub(super) struct Table<K> {
    /// Tasks not finished yet.
    pub(super) pending: HashMap<K, Pending, RandomState>,
    /// Finished tasks: their sequence numbers in `ring`, hashed by their ids. Every entry
    /// names a record in the ring (one that is `Some`).
    pub(super) index: HashTable<u32>,
    /// Finished tasks, oldest first; `None` where one was removed, or replaced (a FAILED
    /// that a SUCCESS overwrote goes to the back).
    pub(super) ring: Ring<Done<K>>,
    /// The sequence number of the ring's front (wrapping).
    pub(super) head: u32,
    /// Hashes the ids for `index`.
    pub(super) hasher: RandomState,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            pending: HashMap::default(),
            index: HashTable::new(),
            ring: Ring::default(),
            head: 0,
            hasher: RandomState::default(),
        }
    }
}

/// Slots in one chunk of a [`Ring`]: 256 records (14 KiB with packed ids).
pub(super) const CHUNK: usize = 256;

/// A FIFO of slots kept in chunks of [`CHUNK`]: it grows and shrinks a chunk at a time. A
/// `VecDeque` grows by doubling, which copies every record into a buffer twice the size
/// (under the shard's lock) and leaves the old buffers to the allocator, where nothing of
/// their size comes to reuse them; here the chunk emptied at the front is kept for the next
/// one needed at the back.
#[derive(Debug)]
pub(super) struct Ring<T> {
    pub(super) chunks: VecDeque<Box<[Option<T>]>>,
    /// The place of the first slot in the first chunk.
    pub(super) front: usize,
    /// Slots from the first one.
    pub(super) len: usize,
    /// An emptied chunk, for the next one needed.
    pub(super) spare: Option<Box<[Option<T>]>>,
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
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The chunk and the place in it of slot `i` (from the front).
    pub(super) fn place(&self, i: usize) -> (usize, usize) {
        let at = self.front + i;
        (at / CHUNK, at % CHUNK)
    }

    pub(super) fn get(&self, i: usize) -> Option<&Option<T>> {
        if i >= self.len {
            return None;
        }
        let (chunk, at) = self.place(i);
        self.chunks.get(chunk)?.get(at)
    }

    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut Option<T>> {
        if i >= self.len {
            return None;
        }
        let (chunk, at) = self.place(i);
        self.chunks.get_mut(chunk)?.get_mut(at)
    }

    pub(super) fn front(&self) -> Option<&Option<T>> {
        self.get(0)
    }

    pub(super) fn push_back(&mut self, value: T) {
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
    pub(super) fn pop_front(&mut self) -> Option<Option<T>> {
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
pub(super) fn id_of<K: Key>(key: &K) -> &K::Ref {
    key.borrow()
}

/// What [`Table::complete`] did.
pub(super) enum Stored {
    /// Nothing: the record already had a final result that this one may not replace.
    Kept,
    /// The result is stored; the count of records changed by this much (0 or 1).
    Stored(usize),
}

impl<K: Key> Table<K> {
    pub(super) fn len(&self) -> usize {
        self.pending.len() + self.index.len()
    }

    /// The sequence number of `key`'s finished record.
    pub(super) fn find(&self, key: &K::Ref) -> Option<u32> {
        let (ring, head) = (&self.ring, self.head);
        self.index
            .find(self.hasher.hash_one(key), |&seq| {
                ring.get(seq.wrapping_sub(head) as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|d| id_of(&d.key) == key)
            })
            .copied()
    }

    /// Whether `key`'s task is pending, and if not, the sequence number of its finished
    /// record: a pending task has none (creating a record takes any finished one away), so
    /// the index, seldom in cache, is not looked at for one.
    pub(super) fn locate(&self, key: &K::Ref) -> (bool, Option<u32>) {
        if self.pending.contains_key(key) {
            (true, None)
        } else {
            (false, self.find(key))
        }
    }

    /// Takes `key`'s entry (naming `seq`) out of the index.
    pub(super) fn unindex(&mut self, key: &K::Ref, seq: u32) {
        if let Ok(entry) = self
            .index
            .find_entry(self.hasher.hash_one(key), |&s| s == seq)
        {
            entry.remove();
        }
    }

    /// The ring's slot of sequence number `seq`.
    pub(super) fn slot(&mut self, seq: u32) -> Option<&mut Option<Done<K>>> {
        self.ring.get_mut(seq.wrapping_sub(self.head) as usize)
    }

    pub(super) fn done(&self, key: &K::Ref) -> Option<&Done<K>> {
        let seq = self.find(key)?;
        self.ring
            .get(seq.wrapping_sub(self.head) as usize)?
            .as_ref()
    }

    /// Puts a finished record at the back of the ring; its id is in the index at `indexed`
    /// (the sequence number of its record before, now replaced), or not yet.
    pub(super) fn push(&mut self, done: Done<K>, indexed: Option<u32>) {
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

    pub(super) fn get(&self, key: &K::Ref, now: u32, owners: &Owners) -> Option<TaskRecord> {
        if let Some(d) = self.done(key).filter(|d| d.expires > now) {
            return Some(d.record(owners));
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
    pub(super) fn create(&mut self, key: &K::Ref, pending: Pending, owners: &mut Owners) -> usize {
        let replaced = self.remove(key, owners);
        self.pending.insert(K::own(key), pending);
        usize::from(!replaced)
    }

    /// Records a pending task whose id has no finished record (a new one): its finished
    /// records are not looked at. Returns how many records were added (0 if it replaced a
    /// pending one).
    pub(super) fn create_new(
        &mut self,
        key: &K::Ref,
        pending: Pending,
        owners: &mut Owners,
    ) -> usize {
        debug_assert!(self.find(key).is_none(), "a new id has a finished record");
        match self.pending.insert(K::own(key), pending) {
            Some(replaced) => {
                owners.release(replaced.owner);
                0
            }
            None => 1,
        }
    }

    /// The record of the task finished last: the one [`Table::complete`] just stored, read
    /// as [`Table::get`] would (for whoever waits for it).
    pub(super) fn last_done(&self, owners: &Owners) -> Option<TaskRecord> {
        let last = self.ring.len().checked_sub(1)?;
        self.ring.get(last)?.as_ref().map(|d| d.record(owners))
    }

    /// Stores a final result, under the rules of [`ResultStore::complete`]; `indexed` is
    /// what [`Table::find`] gives for `key` (looked up by the caller, which needs it first).
    pub(super) fn complete(
        &mut self,
        key: &K::Ref,
        completion: (Ended, Box<[u8]>, u64),
        expires: u32,
        indexed: Option<u32>,
    ) -> Stored {
        let (ended, body, completed_at) = completion;
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
    pub(super) fn remove(&mut self, key: &K::Ref, owners: &mut Owners) -> bool {
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
    pub(super) fn oldest_done(&mut self) -> Option<u32> {
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
    pub(super) fn pop_oldest_done(&mut self, owners: &mut Owners) -> bool {
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
    pub(super) fn oldest_pending(&self) -> Option<(u64, &K)> {
        self.pending
            .iter()
            .map(|(key, p)| (p.seq, key))
            .min_by_key(|(seq, _)| *seq)
    }

    /// Removes every record expired at `now`; returns how many went.
    pub(super) fn sweep(&mut self, now: u32, owners: &mut Owners) -> usize {
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
