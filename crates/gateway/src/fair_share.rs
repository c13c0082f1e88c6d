//! Each caller's share of the gateway: how many API requests one caller (a token's subject)
//! has in flight, so no one caller can hold every slot of the gateway-wide limit.
//!
//! A request counts from when its headers are read — before its body, so slow bodies count —
//! until its answer is written or the client goes away. Only callers with requests in flight
//! have an entry, so the table holds at most as many entries as the gateway-wide limit.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::HashTable;

/// Shards of the table: requests of different callers rarely wait on one lock.
const SHARDS: usize = 16;

/// Requests in flight per caller.
///
/// Per request: one hash of the caller and one lock of its shard when the request starts;
/// when it ends, one atomic decrement, and the lock again only if that was the caller's last
/// request (to remove its entry).
#[derive(Debug)]
pub struct CallerSlots {
    /// Most requests one caller may have in flight.
    max_per_caller: usize,
    /// Hashes callers, for their shard and their place in it; random per process, so callers
    /// cannot aim at one shard or one bucket.
    hasher: RandomState,
    /// Caller → requests in flight (never 0 under the lock: an entry goes when its last
    /// request ends).
    shards: Vec<Mutex<HashTable<Entry>>>,
}

/// One caller with requests in flight.
#[derive(Debug)]
struct Entry {
    /// The caller's hash by [`CallerSlots::hasher`].
    hash: u64,
    caller: Arc<str>,
    /// Requests in flight. Raised only under the shard's lock (so the cap holds), lowered
    /// without it.
    in_flight: Arc<AtomicUsize>,
}

impl CallerSlots {
    /// A table allowing `max_per_caller` requests in flight to each caller.
    pub fn new(max_per_caller: usize) -> Self {
        CallerSlots {
            max_per_caller,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// The most requests one caller may have in flight.
    pub fn max_per_caller(&self) -> usize {
        self.max_per_caller
    }

    /// Counts one more request of `caller`, unless it has its most in flight already: then
    /// `None`. The request counts until the slot is dropped.
    pub fn try_enter(self: &Arc<Self>, caller: &str) -> Option<CallerSlot> {
        if self.max_per_caller == 0 {
            return None;
        }
        let hash = self.hasher.hash_one(caller);
        let mut table = self.shard(hash);
        let in_flight = match table.find(hash, |e| *e.caller == *caller) {
            Some(entry) => {
                // Lowered concurrently only, so a count under the cap stays under it until
                // the increment below.
                if entry.in_flight.load(Ordering::Acquire) >= self.max_per_caller {
                    return None;
                }
                entry.in_flight.fetch_add(1, Ordering::AcqRel);
                entry.in_flight.clone()
            }
            None => {
                let in_flight = Arc::new(AtomicUsize::new(1));
                table.insert_unique(
                    hash,
                    Entry {
                        hash,
                        caller: Arc::from(caller),
                        in_flight: in_flight.clone(),
                    },
                    |e| e.hash,
                );
                in_flight
            }
        };
        Some(CallerSlot {
            slots: self.clone(),
            hash,
            in_flight,
        })
    }

    /// Requests of `caller` in flight now.
    pub fn in_flight(&self, caller: &str) -> usize {
        let hash = self.hasher.hash_one(caller);
        self.shard(hash)
            .find(hash, |e| *e.caller == *caller)
            .map_or(0, |e| e.in_flight.load(Ordering::Acquire))
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, HashTable<Entry>> {
        // The top bits pick the shard; the table uses the low ones for its buckets.
        let shard = (hash >> 60) as usize % SHARDS;
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request's place in its caller's share; dropping it frees the place.
#[derive(Debug)]
pub struct CallerSlot {
    slots: Arc<CallerSlots>,
    hash: u64,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // Possibly the caller's last request: remove its entry, unless another request came
        // in since (it raised the count under this lock).
        let mut table = self.slots.shard(self.hash);
        if let Ok(entry) =
            table.find_entry(self.hash, |e| Arc::ptr_eq(&e.in_flight, &self.in_flight))
        {
            if entry.get().in_flight.load(Ordering::Acquire) == 0 {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_share_and_no_more_while_others_get_theirs() {
        let slots = Arc::new(CallerSlots::new(2));
        let a1 = slots.try_enter("mallory").expect("first");
        let a2 = slots.try_enter("mallory").expect("second");
        assert!(slots.try_enter("mallory").is_none(), "a third is refused");
        let b = slots.try_enter("alice").expect("alice has her own share");
        assert_eq!(slots.in_flight("mallory"), 2);
        drop(a1);
        let a3 = slots.try_enter("mallory").expect("a freed place is reused");
        drop((a2, a3, b));
        assert_eq!(slots.in_flight("mallory"), 0);
        let empty = slots
            .shards
            .iter()
            .all(|s| s.lock().expect("lock").is_empty());
        assert!(empty, "callers with nothing in flight leave no entry");
    }

    #[test]
    fn concurrent_callers_never_pass_their_share_and_leave_no_entry() {
        let slots = Arc::new(CallerSlots::new(3));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let slots = slots.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..20_000u32 {
                        let caller = if (i + t) % 2 == 0 { "mallory" } else { "alice" };
                        if let Some(slot) = slots.try_enter(caller) {
                            held.push(slot);
                        }
                        assert!(slots.in_flight("mallory") <= 3, "mallory passed her share");
                        if i % 3 == 0 {
                            held.clear();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
        assert_eq!(slots.in_flight("mallory"), 0);
        assert_eq!(slots.in_flight("alice"), 0);
        let empty = slots
            .shards
            .iter()
            .all(|s| s.lock().expect("lock").is_empty());
        assert!(empty, "every caller's last request removed its entry");
    }
}
