//! The in-process dedupe cache: sharded maps with a TTL, bounded by evicting the oldest entry.
//!
//! Compact for the same reason as the result store: an entry lives for the dedupe TTL (5
//! minutes: ~3 million entries at 10,000 distinct inputs/s). An entry is the input's SHA-256
//! as 32 bytes (any other key stays text, in a table of its own), the task id as 16 bytes
//! when it is a canonical UUID, and its expiry in seconds of the cache's clock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use foldhash::fast::RandomState;
use tokio::time::Instant;

use super::keys::{pack_sha256, Key, TaskId};
use crate::{Dedupe, StoreError};

/// Shards of a large cache, picked by the hash's first hex digit.
const SHARDS: usize = 16;
/// Fewest entries a shard is made for: a small cache has fewer shards (one below this), so
/// that its eviction order is close to the cache's oldest-first.
const MIN_PER_SHARD: usize = 4096;

/// One input's entry.
#[derive(Debug)]
struct Entry {
    /// The task that runs the input.
    task: TaskId,
    /// The second of the cache's clock from which the entry is gone.
    expires: u32,
}

/// The entries whose keys have one form (packed SHA-256, or text).
#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry, RandomState>,
    /// Keys in the order they were claimed, with their expiry: with one TTL for all, that is
    /// expiry order, and the front is the oldest. A released entry leaves a stale line,
    /// recognised (no entry, or another expiry) and skipped.
    order: VecDeque<(u32, K)>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            entries: HashMap::default(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Key> Table<K> {
    /// Drops stale lines from the front; the expiry of the oldest entry, if any.
    fn oldest(&mut self) -> Option<u32> {
        while let Some((expires, key)) = self.order.front() {
            if self
                .entries
                .get::<K>(key)
                .is_some_and(|e| e.expires == *expires)
            {
                return Some(*expires);
            }
            self.order.pop_front();
        }
        None
    }

    /// Removes the oldest entry; whether there was one.
    fn pop_oldest(&mut self) -> bool {
        if self.oldest().is_none() {
            return false;
        }
        match self.order.pop_front() {
            Some((_, key)) => self.entries.remove::<K>(&key).is_some(),
            None => false,
        }
    }

    /// Removes the entries expired at `now`. The front line's own expiry is read first: a
    /// line is never older than its entry, so while it has not passed nothing has, and the
    /// map (whose front entry is anywhere in memory, seldom in cache) is not looked at.
    fn sweep(&mut self, now: u32) {
        while self
            .order
            .front()
            .is_some_and(|(expires, _)| *expires <= now)
        {
            // The front line has passed: it is stale (skipped) or its entry has expired.
            if self.oldest().is_some_and(|expires| expires <= now) {
                self.pop_oldest();
            }
        }
    }

    /// The task that holds `key`, if any.
    fn holder(&self, key: &K::Ref) -> Option<String> {
        self.entries.get(key).map(|e| e.task.text())
    }

    /// Claims `key`, which no task holds, for `task_id`.
    fn insert(&mut self, key: &K::Ref, task_id: &str, expires: u32) {
        let task = TaskId::new(task_id);
        self.entries.insert(K::own(key), Entry { task, expires });
        self.order.push_back((expires, K::own(key)));
    }

    fn release(&mut self, key: &K::Ref, task_id: &str) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.task == TaskId::new(task_id))
        {
            self.entries.remove(key);
        }
    }
}

/// One shard: hex SHA-256 keys packed, any other key as text.
#[derive(Debug, Default)]
struct Shard {
    hashes: Table<[u8; 32]>,
    texts: Table<Box<str>>,
}

impl Shard {
    fn len(&self) -> usize {
        self.hashes.entries.len() + self.texts.entries.len()
    }

    /// Removes the oldest entry of either table; whether there was one.
    fn evict_oldest(&mut self) -> bool {
        match (self.hashes.oldest(), self.texts.oldest()) {
            (Some(h), Some(t)) if t < h => self.texts.pop_oldest(),
            (Some(_), _) => self.hashes.pop_oldest(),
            (None, Some(_)) => self.texts.pop_oldest(),
            (None, None) => false,
        }
    }
}

/// Input hash → task id, for a TTL, in about `capacity` entries: past it, the oldest entry
/// of the shard is evicted (counted in [`MemoryDedupe::evicted`]) so that the newest inputs
/// are always deduplicated, and memory stays bounded however many distinct inputs arrive.
#[derive(Debug)]
pub struct MemoryDedupe {
    /// The shards.
    shards: Vec<Mutex<Shard>>,
    /// How long an entry lives.
    ttl: Duration,
    /// Most entries per shard.
    per_shard: usize,
    /// Second 0 of the cache's clock, in which expiries are kept.
    epoch: Instant,
    /// Entries evicted to make room, since the start.
    evicted: AtomicU64,
}

impl MemoryDedupe {
    /// A cache whose entries live `ttl`, holding about `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        let shards = (capacity / MIN_PER_SHARD).clamp(1, SHARDS);
        MemoryDedupe {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            ttl,
            per_shard: capacity.div_ceil(shards).max(1),
            epoch: Instant::now(),
            evicted: AtomicU64::new(0),
        }
    }

    /// Entries evicted to make room for newer ones, since the cache was made.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn shard(&self, hash: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = hash
            .get(..1)
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or(0)
            % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The second of the cache's clock that `at` falls in.
    fn second(&self, at: Instant) -> u32 {
        let secs = at.saturating_duration_since(self.epoch).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// The expiry of an entry claimed at `now`, rounded up to the second.
    fn expiry(&self, now: Instant) -> u32 {
        let end = now.saturating_duration_since(self.epoch) + self.ttl;
        let secs = end.as_secs() + u64::from(end.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }
}

impl MemoryDedupe {
    /// [`Dedupe::claim`], done at once (no future: an in-process intake calls it directly).
    pub fn claim_now(&self, input_sha256: &str, task_id: &str) -> Option<String> {
        let now = Instant::now();
        let (second, expires) = (self.second(now), self.expiry(now));
        let mut shard = self.shard(input_sha256);
        shard.hashes.sweep(second);
        shard.texts.sweep(second);
        let packed = pack_sha256(input_sha256);
        // One look-up of the key in the map (seldom in cache: its place is the hash's), and
        // the insert finds the same place again.
        let holder = match &packed {
            Some(key) => shard.hashes.holder(key),
            None => shard.texts.holder(input_sha256),
        };
        if holder.is_some() {
            return holder;
        }
        while shard.len() >= self.per_shard && shard.evict_oldest() {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        match &packed {
            Some(key) => shard.hashes.insert(key, task_id, expires),
            None => shard.texts.insert(input_sha256, task_id, expires),
        }
        None
    }

    /// [`Dedupe::release`], done at once.
    pub fn release_now(&self, input_sha256: &str, task_id: &str) {
        let mut shard = self.shard(input_sha256);
        match pack_sha256(input_sha256) {
            Some(key) => shard.hashes.release(&key, task_id),
            None => shard.texts.release(input_sha256, task_id),
        }
    }
}

#[async_trait]
impl Dedupe for MemoryDedupe {
    async fn claim(&self, input_sha256: &str, task_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.claim_now(input_sha256, task_id))
    }

    async fn release(&self, input_sha256: &str, task_id: &str) -> Result<(), StoreError> {
        self.release_now(input_sha256, task_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn id(n: u32) -> String {
        format!("{n:08x}-abcd-4000-8000-00000000000f")
    }

    #[tokio::test(start_paused = true)]
    async fn first_claim_wins_until_the_ttl_passes() {
        for key in ["a1".to_owned(), hash(0xa1)] {
            let d = MemoryDedupe::new(Duration::from_secs(300), 1000);
            assert_eq!(d.claim(&key, "t1").await.expect("claim"), None);
            assert_eq!(d.claim(&key, "t2").await.expect("claim"), Some("t1".into()));
            tokio::time::advance(Duration::from_secs(300)).await;
            assert_eq!(d.claim(&key, &id(3)).await.expect("claim"), None);
            d.release(&key, "other").await.expect("release");
            assert_eq!(d.claim(&key, "t4").await.expect("claim"), Some(id(3)));
            d.release(&key, &id(3)).await.expect("release");
            assert_eq!(d.claim(&key, "t5").await.expect("claim"), None);
        }
    }

    #[tokio::test]
    async fn past_capacity_the_oldest_entries_are_evicted() {
        let d = MemoryDedupe::new(Duration::from_secs(300), 3);
        for n in 0..3 {
            assert_eq!(d.claim(&hash(n), &id(n.into())).await.expect("claim"), None);
        }
        assert_eq!(d.evicted(), 0);
        // A fourth input evicts the first; a fifth (as text) the second.
        assert_eq!(d.claim(&hash(3), &id(3)).await.expect("claim"), None);
        assert_eq!(d.claim("text-key", "t4").await.expect("claim"), None);
        assert_eq!(d.evicted(), 2);
        // The newest are still deduplicated; the evicted ones are claimed anew (evicting more).
        assert_eq!(d.claim(&hash(2), "x").await.expect("claim"), Some(id(2)));
        assert_eq!(d.claim(&hash(3), "x").await.expect("claim"), Some(id(3)));
        assert_eq!(
            d.claim("text-key", "x").await.expect("claim"),
            Some("t4".into())
        );
        assert_eq!(d.claim(&hash(0), "new").await.expect("claim"), None);
        assert_eq!(d.evicted(), 3);
        assert_eq!(
            d.claim(&hash(2), "x").await.expect("claim"),
            None,
            "2 was next"
        );
    }
}
