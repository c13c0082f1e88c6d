//! Each caller's share of the gateway: how many API requests one caller (a token's subject)
//! has in flight, so no one caller can hold every slot of the gateway-wide limit.
//!
//! A request counts from when its headers are read — before its body, so slow bodies count —
//! until its answer is written or the client goes away. Only callers with requests in flight
//! have an entry, so the table holds at most as many entries as the gateway-wide limit.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

/// Shards of the table: requests of different callers rarely wait on one lock.
const SHARDS: usize = 16;

/// Requests in flight per caller.
#[derive(Debug)]
pub struct CallerSlots {
    /// Most requests one caller may have in flight.
    max_per_caller: usize,
    /// Picks a caller's shard; random per process, so callers cannot aim at one shard.
    hasher: RandomState,
    /// Caller → requests in flight (never 0: an entry goes when its last request ends).
    shards: Vec<Mutex<HashMap<String, usize>>>,
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
        let shard = self.shard_of(caller);
        let mut table = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        match table.get_mut(caller) {
            Some(n) if *n >= self.max_per_caller => return None,
            Some(n) => *n += 1,
            None if self.max_per_caller == 0 => return None,
            None => {
                table.insert(caller.to_owned(), 1);
            }
        }
        Some(CallerSlot {
            slots: self.clone(),
            shard,
            caller: caller.to_owned(),
        })
    }

    /// Requests of `caller` in flight now.
    pub fn in_flight(&self, caller: &str) -> usize {
        let table = self.shards[self.shard_of(caller)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        table.get(caller).copied().unwrap_or(0)
    }

    fn shard_of(&self, caller: &str) -> usize {
        (self.hasher.hash_one(caller) as usize) % SHARDS
    }
}

/// One request's place in its caller's share; dropping it frees the place.
#[derive(Debug)]
pub struct CallerSlot {
    slots: Arc<CallerSlots>,
    shard: usize,
    caller: String,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut table = self.slots.shards[self.shard]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = table.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.caller);
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
}
