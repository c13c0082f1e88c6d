//! The one place a result is written on Redis: the settle script stores a batch's results
//! (a SUCCESS is final), publishes the notices to the gateways that wait, then acknowledges
//! and deletes the batch's stream entries, atomically, the acknowledgement last: one call per
//! node (`crate::topology`). The batcher settles its batches with it, the claimer its dead
//! letters, and the result store any completion handed to it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use batchgate_protocol::Output;
use batchgate_queue::{Completion, Outcome};
use redis::{RedisResult, Script};

use crate::conn::{bounded, RedisConn};
use crate::entry::Heads;
use crate::keys::{Keys, GROUP};
use crate::leases::Ack;
use crate::record;
use crate::topology::Topology;

/// Stores results and acknowledges entries, one script call per node (one in all on a
/// standalone Redis, one per master on a cluster). Cloning is shallow.
#[derive(Clone)]
pub(crate) struct Settler {
    /// Shared multiplexed connection.
    conn: RedisConn,
    /// Key and channel names.
    keys: Keys,
    /// Lifetime of a stored result.
    ttl: Duration,
    /// Cluster: sharded pub/sub.
    cluster: bool,
    /// Which partitions share a node.
    topology: Topology,
    /// Bound on one call.
    op_timeout: Duration,
    /// The script.
    script: Script,
    /// Record heads of the tasks this process handed out, so their settle need not read
    /// the pending record.
    heads: Heads,
}

/// One script call's share of the work.
#[derive(Default)]
struct Group<'a> {
    completions: Vec<(usize, &'a Completion)>,
    /// Per partition: the entry ids, the tasks they held, their groups' messages.
    acks: BTreeMap<usize, (Vec<&'a str>, usize, Vec<&'a str>)>,
}

impl Group<'_> {
    /// A partition of the group, whose slot routes the call.
    fn partition(&self) -> Option<usize> {
        self.completions
            .first()
            .map(|(p, _)| *p)
            .or_else(|| self.acks.keys().next().copied())
    }
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
            topology: Topology::new(conn.clone(), keys.clone(), cluster, op_timeout),
            conn,
            keys,
            ttl,
            cluster,
            op_timeout,
            script: Script::new(include_str!("lua/settle.lua")),
            heads: Heads::default(),
        }
    }

    /// Where the readers keep the heads of the tasks they hand out.
    pub(crate) fn heads(&self) -> &Heads {
        &self.heads
    }

    /// A stored result's lifetime, in milliseconds (at least 1: `PEXPIRE 0` would delete).
    pub(crate) fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis().max(1) as u64
    }

    /// Stores `completions` and acknowledges the entries `acks` names; returns how many
    /// results were written (a result already final is left as it is). On an error, the
    /// calls that did not happen leave their entries pending, to be delivered again.
    pub(crate) async fn settle(
        &self,
        completions: &[Completion],
        acks: &[Ack],
    ) -> RedisResult<usize> {
        let receipts: Vec<&Ack> = acks
            .iter()
            .filter(|r| r.partition < self.keys.partitions())
            .collect();
        let completed: Vec<usize> = completions
            .iter()
            .map(|c| self.keys.partition_of(&c.task_id))
            .collect();
        let partitions: Vec<usize> = completed
            .iter()
            .copied()
            .chain(receipts.iter().map(|r| r.partition))
            .collect();
        let nodes = self.topology.nodes(&partitions).await;
        let mut groups: BTreeMap<usize, Group<'_>> = BTreeMap::new();
        for ((c, p), node) in completions.iter().zip(&completed).zip(&nodes) {
            groups.entry(*node).or_default().completions.push((*p, c));
        }
        for (r, node) in receipts.iter().zip(&nodes[completed.len()..]) {
            let (ids, tasks, messages) = groups
                .entry(*node)
                .or_default()
                .acks
                .entry(r.partition)
                .or_default();
            ids.push(&r.entry_id);
            *tasks += r.tasks;
            messages.extend(r.group.as_deref());
        }
        let calls = groups.into_values().map(|group| self.call(group));
        let mut written = 0;
        let mut failed = None;
        for result in futures_util::future::join_all(calls).await {
            match result {
                Ok(n) => written += n,
                Err(error) => failed = Some(error),
            }
        }
        match failed {
            Some(error) => {
                // Perhaps a slot moved: read the map again before the next call.
                self.topology.invalidate();
                Err(error)
            }
            None => Ok(written),
        }
    }

    async fn call(&self, group: Group<'_>) -> RedisResult<usize> {
        let Some(routing) = group.partition() else {
            return Ok(0);
        };
        let mut call = self.script.prepare_invoke();
        call.key(self.keys.stream(routing))
            .arg(self.ttl_ms())
            .arg(if self.cluster { "SPUBLISH" } else { "PUBLISH" })
            .arg(self.keys.notify_prefix(self.cluster.then_some(routing)))
            .arg(GROUP)
            .arg(group.completions.len());
        for (_, c) in &group.completions {
            let (status, value) = match &c.outcome {
                Outcome::Success(Output::Text(text)) => ('S', Cow::Borrowed(text.as_bytes())),
                Outcome::Success(output) => ('S', Cow::Owned(output.encode())),
                Outcome::Failed(error) => ('F', Cow::Borrowed(error.as_bytes())),
            };
            // The final record whole when its head is known here, else status and tail.
            let head = self.heads.take(&c.task_id);
            let record = record::final_record(status, head.as_deref(), c.completed_at, &value);
            let head_len = head.map(|h| h.len());
            call.arg(self.keys.result(&c.task_id)).arg(record);
            match head_len {
                Some(len) => call.arg(len),
                None => call.arg(""),
            };
            call.arg(c.reply_to.as_deref().unwrap_or_default());
        }
        for (&p, (ids, tasks, messages)) in &group.acks {
            call.arg(self.keys.stream(p))
                .arg(ids.len())
                .arg(*tasks)
                .arg(messages.len())
                .arg(ids.as_slice())
                .arg(messages.as_slice());
        }
        let mut conn = self.conn.clone();
        bounded(self.op_timeout, call.invoke_async(&mut conn)).await
    }
}
