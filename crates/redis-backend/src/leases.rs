//! What a live batcher keeps alive: the entries it holds, and its heartbeat.
//!
//! From the moment Redis delivers an entry to this batcher (in the local channel, in a batch,
//! at the worker) until it is settled or abandoned, the batcher renews the entry's idle time
//! (`XCLAIM … JUSTID` to itself), and it keeps a heartbeat key with a TTL of one visibility
//! timeout. Other batchers claim only entries whose batcher's heartbeat is gone, so a batch
//! slower than the visibility timeout is never run twice while its batcher lives; once it
//! dies, renewal and heartbeat stop and its entries are claimed.
//!
//! Renewal runs in a loop of its own, one partition's failure never holding up the others,
//! and never behind a claim sweep.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use batchgate_queue::Receipt;
use redis::streams::StreamId;
use redis::{RedisResult, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::conn::{bounded, RedisConn};
use crate::entry::group_key;
use crate::keys::{Keys, GROUP};

/// How often (in renewal rounds) Redis's clock is read again.
const CLOCK_EVERY: u64 = 30;

/// An entry to acknowledge: every task it held is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) partition: usize,
    pub(crate) entry_id: String,
    /// Tasks the entry held, taken off the stream's task count.
    pub(crate) tasks: usize,
    /// The key of its group's messages, deleted with it.
    pub(crate) group: Option<String>,
}

/// One held entry: an entry holds one task or a group of them, each handed out on its own.
#[derive(Debug)]
struct Lease {
    /// Tasks of the entry handed out and not finished or given back yet.
    held: usize,
    /// Tasks the entry holds.
    tasks: usize,
    /// A task of it was given back: the entry must come back whole (never acknowledged here).
    spoiled: bool,
    /// The key of its group's messages.
    group: Option<String>,
}

/// Entries this batcher holds, by partition, with how many of their tasks are still out.
/// Cloning is shallow.
#[derive(Clone, Default)]
pub(crate) struct Leases(Arc<Mutex<HashMap<usize, HashMap<String, Lease>>>>);

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, HashMap<String, Lease>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds an entry whose `tasks` tasks are all being handed out.
    pub(crate) fn hold(&self, partition: usize, entry: &StreamId, tasks: usize) {
        self.lock().entry(partition).or_default().insert(
            entry.id.clone(),
            Lease {
                held: tasks,
                tasks,
                spoiled: false,
                group: group_key(entry),
            },
        );
    }

    pub(crate) fn holds(&self, partition: usize, entry_id: &str) -> bool {
        self.lock()
            .get(&partition)
            .is_some_and(|ids| ids.contains_key(entry_id))
    }

    /// Tasks whose results are being stored: gives back the entries all of whose tasks are
    /// now finished (and none given back), to acknowledge with those results. An entry with
    /// tasks still out stays held; one that had a task given back is released unacknowledged,
    /// to be delivered again whole.
    pub(crate) fn finish(&self, receipts: &[Receipt]) -> Vec<Ack> {
        self.settle(receipts, false)
    }

    /// Tasks handed out to nobody (the batcher is gone): their entries will not be
    /// acknowledged by this batcher, and stop being renewed once no task of them is out, so
    /// that they lapse to a claimer and come back whole.
    pub(crate) fn give_back(&self, receipts: &[Receipt]) {
        self.settle(receipts, true);
    }

    /// Tasks already counted by [`Leases::finish`] whose results could not be stored after
    /// all: their entries, where still held, will not be acknowledged by this batcher (the
    /// ones finished already were not acknowledged either: the call failed).
    pub(crate) fn spoil(&self, receipts: &[Receipt]) {
        let mut held = self.lock();
        for r in receipts {
            if let Some(lease) = held
                .get_mut(&r.partition)
                .and_then(|ids| ids.get_mut(&r.entry_id))
            {
                lease.spoiled = true;
            }
        }
    }

    fn settle(&self, receipts: &[Receipt], spoil: bool) -> Vec<Ack> {
        let mut acks = Vec::new();
        let mut held = self.lock();
        for r in receipts {
            let Some(ids) = held.get_mut(&r.partition) else {
                continue;
            };
            let Some(lease) = ids.get_mut(&r.entry_id) else {
                continue;
            };
            lease.spoiled |= spoil;
            lease.held = lease.held.saturating_sub(1);
            if lease.held == 0 {
                if !lease.spoiled {
                    acks.push(Ack {
                        partition: r.partition,
                        entry_id: r.entry_id.clone(),
                        tasks: lease.tasks,
                        group: lease.group.take(),
                    });
                }
                ids.remove(&r.entry_id);
            }
        }
        acks
    }

    fn snapshot(&self) -> Vec<(usize, Vec<String>)> {
        self.lock()
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(p, ids)| (*p, ids.keys().cloned().collect()))
            .collect()
    }
}

/// The offset of Redis's clock from this process's, in milliseconds, to read stream entry
/// ids (Redis's time) on this process's clock. Cloning is shallow.
#[derive(Clone, Default)]
pub(crate) struct Clock(Arc<AtomicI64>);

impl Clock {
    /// When an entry stamped `redis_ms` (Redis's clock) was added, on this process's clock.
    pub(crate) fn local(&self, redis_ms: u64) -> SystemTime {
        let local = redis_ms as i64 - self.0.load(Ordering::Relaxed);
        UNIX_EPOCH + Duration::from_millis(local.max(0) as u64)
    }

    /// The Redis time of a moment of this process's clock, in milliseconds.
    pub(crate) fn redis_ms(&self, at: SystemTime) -> u64 {
        let local = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        (local + self.0.load(Ordering::Relaxed)).max(0) as u64
    }

    /// Reads Redis's clock (`TIME`) and takes the offset at the round trip's middle.
    pub(crate) async fn sync(&self, conn: &mut RedisConn, limit: Duration) -> RedisResult<()> {
        let before = SystemTime::now();
        let (secs, micros): (i64, i64) =
            bounded(limit, redis::cmd("TIME").query_async(conn)).await?;
        let after = SystemTime::now();
        let mid = before + after.duration_since(before).unwrap_or_default() / 2;
        let local = mid
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        self.0
            .store(secs * 1000 + micros / 1000 - local, Ordering::Relaxed);
        Ok(())
    }
}

/// Renews the heartbeat and the leases every third of the visibility timeout.
pub(crate) struct Renewer {
    pub(crate) conn: RedisConn,
    pub(crate) keys: Keys,
    pub(crate) consumer: String,
    pub(crate) visibility_timeout: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) leases: Leases,
    pub(crate) clock: Clock,
    pub(crate) stop: CancellationToken,
}

impl Renewer {
    pub(crate) fn every(visibility_timeout: Duration) -> Duration {
        (visibility_timeout / 3).max(Duration::from_millis(50))
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(Self::every(self.visibility_timeout));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round = 0u64;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if round % CLOCK_EVERY == 0 {
                if let Err(error) = self.clock.sync(&mut self.conn, self.op_timeout).await {
                    debug!(%error, "reading Redis's clock failed");
                }
            }
            round += 1;
            if let Err(error) = self.beat().await {
                warn!(%error, "heartbeat failed; our entries may be claimed by others");
            }
            self.renew().await;
        }
    }

    async fn beat(&mut self) -> RedisResult<()> {
        let ttl = self.visibility_timeout.as_millis().max(1) as u64;
        bounded(
            self.op_timeout,
            redis::cmd("SET")
                .arg(self.keys.alive(&self.consumer))
                .arg(1)
                .arg("PX")
                .arg(ttl)
                .exec_async(&mut self.conn),
        )
        .await
    }

    /// Resets the idle time of every entry we hold (JUSTID: delivery counts stay), every
    /// partition on its own.
    async fn renew(&self) {
        let renewals = self.leases.snapshot().into_iter().map(|(partition, ids)| {
            let mut conn = self.conn.clone();
            let stream = self.keys.stream(partition);
            async move {
                let renewed: RedisResult<Value> = bounded(
                    self.op_timeout,
                    redis::cmd("XCLAIM")
                        .arg(stream)
                        .arg(GROUP)
                        .arg(&self.consumer)
                        .arg(0)
                        .arg(&ids)
                        .arg("JUSTID")
                        .query_async(&mut conn),
                )
                .await;
                if let Err(error) = renewed {
                    warn!(%error, partition, "renewing leases failed; slow batches may run twice");
                }
            }
        });
        futures_util::future::join_all(renewals).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> StreamId {
        StreamId {
            id: id.to_owned(),
            ..StreamId::default()
        }
    }

    fn receipt(id: &str) -> Receipt {
        Receipt {
            partition: 0,
            entry_id: id.to_owned(),
        }
    }

    #[test]
    fn an_entry_is_acknowledged_with_its_last_task() {
        let leases = Leases::default();
        leases.hold(0, &entry("1-0"), 3);
        assert!(leases.finish(&[receipt("1-0"), receipt("1-0")]).is_empty());
        assert!(leases.holds(0, "1-0"), "a task is still out");
        let acks = leases.finish(&[receipt("1-0")]);
        assert_eq!(acks.len(), 1);
        assert_eq!((acks[0].entry_id.as_str(), acks[0].tasks), ("1-0", 3));
        assert!(!leases.holds(0, "1-0"));
        assert!(leases.finish(&[receipt("1-0")]).is_empty(), "once only");
    }

    #[test]
    fn an_entry_with_a_failed_settle_or_a_task_given_back_is_never_acknowledged() {
        let leases = Leases::default();
        leases.hold(0, &entry("1-0"), 2);
        // The first task's settle counted it, then failed.
        assert!(leases.finish(&[receipt("1-0")]).is_empty());
        leases.spoil(&[receipt("1-0")]);
        assert!(leases.finish(&[receipt("1-0")]).is_empty(), "spoiled");
        assert!(
            !leases.holds(0, "1-0"),
            "released, to lapse and come back whole"
        );

        leases.hold(0, &entry("2-0"), 2);
        leases.give_back(&[receipt("2-0")]);
        assert!(leases.holds(0, "2-0"), "renewed while a task of it is out");
        assert!(leases.finish(&[receipt("2-0")]).is_empty());
        assert!(!leases.holds(0, "2-0"));
    }
}
