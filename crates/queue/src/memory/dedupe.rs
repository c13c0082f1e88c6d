//! The in-process dedupe cache: sharded maps with a TTL and a cap, swept on write.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{Dedupe, StoreError};

/// Shards, picked by the hash's first hex digit.
const SHARDS: usize = 16;

/// Input hash → (task id, expiry). Entries older than the TTL are swept on every claim; past
/// `capacity` entries new inputs are simply not recorded (they still run, undeduplicated), so
/// memory stays bounded however many distinct inputs arrive.
#[derive(Debug)]
pub struct MemoryDedupe {
    /// The shards.
    shards: Vec<Mutex<Shard>>,
    /// How long an entry lives.
    ttl: Duration,
    /// Most entries per shard.
    per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<String, (String, Instant)>,
    /// `(expires_at, hash)` in insertion order, which is expiry order under one TTL.
    order: VecDeque<(Instant, String)>,
}

impl MemoryDedupe {
    /// A cache whose entries live `ttl`, holding at most about `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        MemoryDedupe {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            ttl,
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, hash: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = hash
            .get(..1)
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .unwrap_or(0)
            % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Shard {
    fn sweep(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(at, _)| *at <= now) {
            let (at, hash) = self
                .order
                .pop_front()
                .expect("front() was Some just above. This is a bug.");
            if self.entries.get(&hash).is_some_and(|(_, e)| *e == at) {
                self.entries.remove(&hash);
            }
        }
    }
}

#[async_trait]
impl Dedupe for MemoryDedupe {
    async fn claim(&self, input_sha256: &str, task_id: &str) -> Result<Option<String>, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(input_sha256);
        shard.sweep(now);
        if let Some((existing, _)) = shard.entries.get(input_sha256) {
            return Ok(Some(existing.clone()));
        }
        if shard.entries.len() < self.per_shard {
            let expires = now + self.ttl;
            shard
                .entries
                .insert(input_sha256.to_owned(), (task_id.to_owned(), expires));
            shard.order.push_back((expires, input_sha256.to_owned()));
        }
        Ok(None)
    }

    async fn release(&self, input_sha256: &str, task_id: &str) -> Result<(), StoreError> {
        let mut shard = self.shard(input_sha256);
        if shard
            .entries
            .get(input_sha256)
            .is_some_and(|(id, _)| id == task_id)
        {
            shard.entries.remove(input_sha256);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn first_claim_wins_until_the_ttl_passes() {
        let d = MemoryDedupe::new(Duration::from_secs(300), 1000);
        assert_eq!(d.claim("a1", "t1").await.expect("claim"), None);
        assert_eq!(d.claim("a1", "t2").await.expect("claim"), Some("t1".into()));
        tokio::time::advance(Duration::from_secs(300)).await;
        assert_eq!(d.claim("a1", "t3").await.expect("claim"), None);
        d.release("a1", "other").await.expect("release");
        assert_eq!(d.claim("a1", "t4").await.expect("claim"), Some("t3".into()));
        d.release("a1", "t3").await.expect("release");
        assert_eq!(d.claim("a1", "t5").await.expect("claim"), None);
    }

    #[tokio::test]
    async fn past_capacity_new_inputs_are_not_recorded() {
        let d = MemoryDedupe::new(Duration::from_secs(300), SHARDS);
        assert_eq!(d.claim("a1", "t1").await.expect("claim"), None);
        assert_eq!(
            d.claim("a2", "t2").await.expect("claim"),
            None,
            "shard a is full"
        );
        assert_eq!(
            d.claim("a2", "t3").await.expect("claim"),
            None,
            "so a2 was not kept"
        );
        assert_eq!(d.claim("a1", "t4").await.expect("claim"), Some("t1".into()));
    }
}
