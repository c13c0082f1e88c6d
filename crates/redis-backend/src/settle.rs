//! The one place a result is written on Redis: the settle script stores a batch's results
//! (a SUCCESS is final), publishes the notices to the gateways that wait, then acknowledges
//! and deletes the batch's stream entries, atomically, the acknowledgement last. The batcher
//! settles its batches with it, the claimer its dead letters, and the result store any
//! completion handed to it.

use std::collections::BTreeMap;
use std::time::Duration;

use batchgate_queue::{Completion, Outcome, Receipt};
use redis::{RedisResult, Script};

use crate::conn::{bounded, RedisConn};
use crate::keys::{Keys, GROUP};
use crate::notify::Notice;

/// Stores results and acknowledges entries, one script call per partition on a cluster and
/// one per batch on a standalone Redis. Cloning is shallow.
#[derive(Clone)]
pub(crate) struct Settler {
    /// Shared multiplexed connection.
    conn: RedisConn,
    /// Key and channel names.
    keys: Keys,
    /// Lifetime of a stored result.
    ttl: Duration,
    /// Cluster: one call per partition, sharded pub/sub.
    cluster: bool,
    /// Bound on one call.
    op_timeout: Duration,
    /// The script.
    script: Script,
}

/// One script call's share of the work.
#[derive(Default)]
struct Group<'a> {
    completions: Vec<&'a Completion>,
    acks: BTreeMap<usize, Vec<&'a str>>,
}

impl Settler {
    pub(crate) fn new(
        conn: RedisConn,
        keys: Keys,
        ttl: Duration,
        cluster: bool,
        op_timeout: Duration,
    ) -> Self {
        Settler {
            conn,
            keys,
            ttl,
            cluster,
            op_timeout,
            script: Script::new(include_str!("lua/settle.lua")),
        }
    }

    /// A stored result's lifetime, in milliseconds (at least 1: `PEXPIRE 0` would delete).
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis().max(1) as u64
    }

    /// Stores `completions` and acknowledges `receipts`; returns how many results were
    /// written (a result already final is left as it is). On an error, the calls that did
    /// not happen leave their entries pending, to be delivered again.
    pub(crate) async fn settle(
        &self,
        completions: &[Completion],
        receipts: &[Receipt],
    ) -> RedisResult<usize> {
        let mut groups: BTreeMap<Option<usize>, Group<'_>> = BTreeMap::new();
        let group_of = |p: usize| self.cluster.then_some(p);
        for c in completions {
            let p = self.keys.partition_of(&c.task_id);
            groups.entry(group_of(p)).or_default().completions.push(c);
        }
        for r in receipts
            .iter()
            .filter(|r| r.partition < self.keys.partitions())
        {
            groups
                .entry(group_of(r.partition))
                .or_default()
                .acks
                .entry(r.partition)
                .or_default()
                .push(&r.entry_id);
        }
        let calls = groups
            .into_iter()
            .map(|(partition, group)| self.call(partition, group));
        let mut written = 0;
        for result in futures_util::future::join_all(calls).await {
            written += result?;
        }
        Ok(written)
    }

    async fn call(&self, partition: Option<usize>, group: Group<'_>) -> RedisResult<usize> {
        let mut call = self.script.prepare_invoke();
        for c in &group.completions {
            call.key(self.keys.result(&c.task_id));
        }
        for &p in group.acks.keys() {
            call.key(self.keys.stream(p));
        }
        call.arg(self.ttl_ms())
            .arg(if self.cluster { "SPUBLISH" } else { "PUBLISH" })
            .arg(self.keys.notify_prefix(partition))
            .arg(GROUP)
            .arg(group.completions.len());
        for c in &group.completions {
            let (status, value) = match &c.outcome {
                Outcome::Success(output) => ("S", output),
                Outcome::Failed(error) => ("F", error),
            };
            let notice = serde_json::to_string(&Notice::of(c))
                .expect("a notice of strings and numbers serializes. This is a bug.");
            call.arg(status)
                .arg(value)
                .arg(c.completed_at)
                .arg(c.reply_to.as_deref().unwrap_or_default())
                .arg(notice);
        }
        for ids in group.acks.values() {
            call.arg(ids.len()).arg(ids.as_slice());
        }
        let mut conn = self.conn.clone();
        bounded(self.op_timeout, call.invoke_async(&mut conn)).await
    }
}
