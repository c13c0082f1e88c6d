//! The one place a result is written on Redis: a batch's results are stored (a SUCCESS is
//! final), the notices published to the gateways that wait, then the batch's stream entries
//! acknowledged and deleted, atomically, the acknowledgement last: one call per node
//! (`crate::topology`). On a cluster the call is the settle script; on a standalone Redis it
//! is a transaction in which plain commands write the successes whose record heads the
//! batcher knows (nearly all of them) and the script the rest and the acknowledgement (see
//! [`Settler::transaction`]). Where a slot moved since admission and parted an entry from
//! some of its tasks' records (or the entry of a task is not known here), the results are
//! written first and the entries acknowledged in a second step, once all are written. The
//! batcher settles its batches with it, the claimer its dead letters, and the result store
//! any completion handed to it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::Output;
use batchgate_store::{Completion, Outcome};
use redis::{RedisResult, Script, Value};
use tracing::warn;

use crate::conn::{bounded, unless_script_lost, RedisConn};
use crate::entry::{Heads, Held};
use crate::keys::{Keys, GROUP};
use crate::leases::Ack;
use crate::notify::{pack_notices, Notice, Notifier};
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
    /// This process's own gateway, if it has one (`serve` on Redis): its waiters and its
    /// name on the notification bus. Its notices are handed to its waiters once stored,
    /// instead of being published to Redis and read back (see [`Settler::transaction`]).
    local: Option<(Arc<Notifier>, String)>,
}

/// One script call's share of the work.
#[derive(Default)]
struct Group<'a> {
    /// Per result: its record's partition, the completion, its record's head if known here.
    completions: Vec<(usize, &'a Completion, Option<String>)>,
    /// Per partition: the entry ids, the tasks they held, their groups' messages.
    acks: BTreeMap<usize, (Vec<&'a str>, usize, Vec<&'a str>)>,
}

impl Group<'_> {
    /// A partition of the group, whose slot routes the call.
    fn partition(&self) -> Option<usize> {
        self.completions
            .first()
            .map(|(p, _, _)| *p)
            .or_else(|| self.acks.keys().next().copied())
    }
}

/// Whether a settle must write its results before, and apart from, its acknowledgements:
/// when some result's record is not on the node of the stream entry its task came from (a
/// slot moved since the admission put them together), or that entry is not known here. The
/// calls of one step run together, each atomic on its node; an entry acknowledged in the
/// same call as its tasks' results needs them on its node.
fn results_first(record_nodes: &[usize], streams: &[Option<usize>]) -> bool {
    record_nodes
        .iter()
        .zip(streams)
        .any(|(record, stream)| *stream != Some(*record))
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
            local: None,
        }
    }

    /// Wakes the waiters of this process's gateway `name` through `notifier` directly.
    pub(crate) fn with_local_gateway(mut self, notifier: Arc<Notifier>, name: String) -> Self {
        self.local = Some((notifier, name));
        self
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
    /// calls that did not happen leave their entries pending, to be delivered again; an
    /// entry is never acknowledged by a call that ran while its tasks' results were not
    /// written.
    pub(crate) async fn settle(
        &self,
        completions: &[Completion],
        acks: &[Ack],
    ) -> RedisResult<usize> {
        let receipts: Vec<&Ack> = acks
            .iter()
            .filter(|r| r.partition < self.keys.partitions())
            .collect();
        let held: Vec<Option<Held>> = completions
            .iter()
            .map(|c| self.heads.take(&c.task_id))
            .collect();
        let completed: Vec<usize> = completions
            .iter()
            .map(|c| self.keys.partition_of(&c.task_id))
            .collect();
        let came_from: Vec<usize> = held.iter().flatten().map(|h| h.stream).collect();
        let partitions: Vec<usize> = completed
            .iter()
            .copied()
            .chain(receipts.iter().map(|r| r.partition))
            .chain(came_from.iter().copied())
            .collect();
        let nodes = self.topology.nodes(&partitions).await;
        let (record_nodes, rest) = nodes.split_at(completed.len());
        let (ack_nodes, stream_nodes) = rest.split_at(receipts.len());
        let mut stream_nodes = stream_nodes.iter();
        let streams: Vec<Option<usize>> = held
            .iter()
            .map(|h| h.as_ref().and_then(|_| stream_nodes.next().copied()))
            .collect();
        let mut results: BTreeMap<usize, Group<'_>> = BTreeMap::new();
        for (((c, p), node), h) in completions
            .iter()
            .zip(&completed)
            .zip(record_nodes)
            .zip(held)
        {
            let head = h.map(|h| h.head);
            results
                .entry(*node)
                .or_default()
                .completions
                .push((*p, c, head));
        }
        let apart = self.cluster && !receipts.is_empty() && results_first(record_nodes, &streams);
        let mut acknowledged: BTreeMap<usize, Group<'_>> = BTreeMap::new();
        let ack_groups = if apart {
            &mut acknowledged
        } else {
            &mut results
        };
        for (r, node) in receipts.iter().zip(ack_nodes) {
            let (ids, tasks, messages) = ack_groups
                .entry(*node)
                .or_default()
                .acks
                .entry(r.partition)
                .or_default();
            ids.push(&r.entry_id);
            *tasks += r.tasks;
            messages.extend(r.group.as_deref());
        }
        let written = self.run(results).await?;
        // Apart: the acknowledgements once every result is written.
        self.run(acknowledged).await?;
        Ok(written)
    }

    /// Runs one call per group, together; fails if any failed.
    async fn run(&self, groups: BTreeMap<usize, Group<'_>>) -> RedisResult<usize> {
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

    /// One node's share: on a cluster, the script alone; on a standalone Redis, a
    /// transaction (see [`Settler::transaction`]).
    async fn call(&self, group: Group<'_>) -> RedisResult<usize> {
        let Some(routing) = group.partition() else {
            return Ok(0);
        };
        let mut fast = Vec::new();
        let mut slow = Vec::new();
        for (_, c, head) in group.completions {
            // The final record whole when its head is known here, else status and tail.
            match (&c.outcome, head) {
                // A transaction needs the keys of one slot; a cluster spreads partitions
                // over slots, so it runs the script alone.
                (Outcome::Success(output), Some(head)) if !self.cluster => fast.push(Written {
                    task_id: &c.task_id,
                    output,
                    completed_at: c.completed_at,
                    key: self.keys.result(&c.task_id),
                    record: record::final_record(
                        'S',
                        Some(&head),
                        c.completed_at,
                        &output.stored(),
                    ),
                    gateway: c.reply_to.as_deref().unwrap_or_default(),
                }),
                (_, head) => slow.push((c, head)),
            }
        }
        let script = self.script_call(routing, &slow, &group.acks);
        if fast.is_empty() {
            return self.run_script(&script).await;
        }
        self.transaction(&fast, script).await
    }

    /// Runs the script's call; a script Redis lost (a restart) is loaded again.
    async fn run_script(&self, call: &redis::Cmd) -> RedisResult<usize> {
        let mut conn = self.conn.clone();
        let first = bounded(self.op_timeout, call.query_async(&mut conn)).await;
        unless_script_lost(first, &mut conn, &self.script, call, self.op_timeout).await
    }

    /// The settle script's call for `completions` (with the record heads known) and the
    /// entries `acks` names.
    fn script_call(
        &self,
        routing: usize,
        completions: &[(&Completion, Option<String>)],
        acks: &BTreeMap<usize, (Vec<&str>, usize, Vec<&str>)>,
    ) -> redis::Cmd {
        let mut call = redis::cmd("EVALSHA");
        call.arg(self.script.get_hash())
            .arg(1)
            .arg(self.keys.stream(routing))
            .arg(self.ttl_ms())
            .arg(self.publish())
            .arg(self.keys.notify_prefix(self.cluster.then_some(routing)))
            .arg(GROUP)
            .arg(completions.len());
        for (c, head) in completions {
            let (status, value) = match &c.outcome {
                Outcome::Success(output) => ('S', output.stored()),
                Outcome::Failed(error) => ('F', Cow::Borrowed(error.as_bytes())),
            };
            let record = record::final_record(status, head.as_deref(), c.completed_at, &value);
            call.arg(self.keys.result(&c.task_id)).arg(record);
            match head {
                Some(head) => call.arg(head.len()),
                None => call.arg(""),
            };
            call.arg(c.reply_to.as_deref().unwrap_or_default());
        }
        for (&p, (ids, tasks, messages)) in acks {
            call.arg(self.keys.stream(p))
                .arg(ids.len())
                .arg(*tasks)
                .arg(messages.len())
                .arg(ids.as_slice())
                .arg(messages.as_slice());
        }
        call
    }

    fn publish(&self) -> &'static str {
        if self.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// A standalone Redis: the successes whose record heads are known are written by plain
    /// commands in one `MULTI`/`EXEC` with their notices and the script, which writes the
    /// rest (failures, unknown heads) and acknowledges, last. A command inside a script
    /// costs Redis several times what the same command costs in a pipeline (the script
    /// converts its arguments and reply, and hashes every string it is given), and these
    /// are all but a few of a batch's results.
    ///
    /// The transaction is atomic like the script: nothing else runs between its commands,
    /// and Redis refuses it whole, before running any of it, when it is out of memory (the
    /// one way a `SET` with these arguments fails). `SET … GET` hands back what each record
    /// held, so the rare cases the script would have decided on it are put right after,
    /// in a second step: a record that was already a SUCCESS (a redelivered task computed
    /// twice) is put back as it was, since the first SUCCESS is final (its waiters were
    /// woken by the first); a pending record that other gateways watch (kind `W`) has its notice sent to
    /// them too. If the script's call fails (or Redis lost the script), the results are
    /// written but nothing is acknowledged: the entries are delivered again, never
    /// acknowledged without their results.
    ///
    /// The notices of this process's own gateway (`serve` on Redis: gateway and batcher in
    /// one process) are not published: once the transaction has run, its waiters are handed
    /// them here, each with the record that stays. A notice through Redis costs Redis the
    /// `PUBLISH` and this process reading it back and parsing it.
    async fn transaction(&self, fast: &[Written<'_>], script: redis::Cmd) -> RedisResult<usize> {
        let ttl = self.ttl_ms();
        let channel = self.keys.notify_prefix(None);
        let local = self.local.as_ref().map(|(_, name)| name.as_str());
        let mut pipe = redis::Pipeline::with_capacity(fast.len() + 4);
        pipe.atomic().ignore_errors();
        for w in fast {
            // Sized once: built up argument by argument, a command's two buffers were
            // reallocated half a dozen times.
            let mut set = redis::Cmd::with_capacity(6, w.key.len() + w.record.len() + 32);
            set.arg("SET")
                .arg(&w.key)
                .arg(&w.record)
                .arg("GET")
                .arg("PX")
                .arg(ttl);
            pipe.add_command(set);
        }
        let notices = fast
            .iter()
            .filter(|w| Some(w.gateway) != local)
            .map(|w| (w.gateway, w.key.as_bytes(), w.record.as_slice()));
        for (gateway, items) in by_gateway(notices) {
            pipe.cmd(self.publish())
                .arg(format!("{channel}{gateway}"))
                .arg(pack_notices(&items))
                .ignore();
        }
        pipe.add_command(script.clone());
        let mut conn = self.conn.clone();
        let replies: Vec<Value> = bounded(self.op_timeout, pipe.query_async(&mut conn)).await?;
        if replies.len() != fast.len() + 1 {
            return Err(unexpected(format!(
                "the settle transaction answered {} replies for {}",
                replies.len(),
                fast.len() + 1
            )));
        }
        let (olds, script_reply) = replies.split_at(fast.len());
        let mut written = 0;
        let mut restore = Vec::new();
        let mut watched = Vec::new();
        for (w, old) in fast.iter().zip(olds) {
            match old {
                // Not expected: a `SET` with these arguments fails only when Redis is out of
                // memory, and then Redis refuses the whole transaction.
                Value::ServerError(error) => {
                    return Err(unexpected(format!("a result was not written: {error:?}")))
                }
                Value::BulkString(old) => match old.first() {
                    Some(b'S') => restore.push((w, old.as_slice())),
                    Some(b'W') => {
                        written += 1;
                        watched.push((w, old.as_slice()));
                    }
                    _ => written += 1,
                },
                _ => written += 1,
            }
        }
        if let Some((notifier, _)) = &self.local {
            // Stored: this gateway's waiters get the record that stays, the first SUCCESS
            // where there was one already (put back below).
            notifier.deliver(fast.iter().zip(olds).filter_map(|(w, old)| {
                if Some(w.gateway) != local {
                    return None;
                }
                match old {
                    Value::BulkString(old) if old.first() == Some(&b'S') => {
                        Notice::of(w.task_id.to_owned(), old)
                    }
                    // The record just written: its notice from what it was made of.
                    _ => Some(Notice {
                        task_id: w.task_id.to_owned(),
                        status: TaskStatus::Success,
                        output: Some(w.output.clone()),
                        error: None,
                        completed_at: w.completed_at,
                    }),
                }
            }));
        }
        if !restore.is_empty() || !watched.is_empty() {
            // The batch is stored and (unless the script failed, below) acknowledged: a
            // failure here is not the settle's. A SUCCESS not put back leaves the later
            // SUCCESS of the same task; a watcher not told reads the record when it asks again.
            if let Err(error) = self.put_right(&restore, &watched).await {
                warn!(%error, "settle: a SUCCESS already stored or a watcher's notice was not put right");
            }
        }
        let scripted = match &script_reply[0] {
            Value::ServerError(error) if error.kind() == Some(redis::ServerErrorKind::NoScript) => {
                // Redis lost the script (a restart): load it and run it alone.
                self.run_script(&script).await?
            }
            Value::ServerError(error) => {
                return Err(unexpected(format!("the settle script failed: {error:?}")))
            }
            reply => redis::from_redis_value::<usize>(reply.clone())?,
        };
        Ok(written + scripted)
    }

    /// What [`Settler::transaction`] puts right after it ran: records that were a SUCCESS
    /// already get it back, and the gateways that watch a pending record (other than the one
    /// notified) get their notices.
    async fn put_right(
        &self,
        restore: &[(&Written<'_>, &[u8])],
        watched: &[(&Written<'_>, &[u8])],
    ) -> RedisResult<()> {
        let channel = self.keys.notify_prefix(None);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (w, old) in restore {
            pipe.cmd("SET")
                .arg(&w.key)
                .arg(*old)
                .arg("PX")
                .arg(self.ttl_ms())
                .ignore();
        }
        let notices = watched.iter().flat_map(|(w, old)| {
            record::watchers(old)
                .filter(move |other| *other != w.gateway)
                .map(move |other| (other, w.key.as_bytes(), w.record.as_slice()))
        });
        for (gateway, items) in by_gateway(notices) {
            pipe.cmd(self.publish())
                .arg(format!("{channel}{gateway}"))
                .arg(pack_notices(&items))
                .ignore();
        }
        let mut conn = self.conn.clone();
        bounded(self.op_timeout, pipe.query_async::<()>(&mut conn)).await
    }
}

/// A success the transaction writes: its task, its record's key, the final record, the
/// gateway to notify ('' for none).
struct Written<'a> {
    task_id: &'a str,
    /// The result the record holds, and when it was stored (for the local hand-over).
    output: &'a Output,
    completed_at: u64,
    key: String,
    record: Vec<u8>,
    gateway: &'a str,
}

/// Notices by gateway, from (gateway, record key, record) triples: for each gateway the
/// items of its message, each result's key then its record. '' is nobody.
fn by_gateway<'a>(
    notices: impl Iterator<Item = (&'a str, &'a [u8], &'a [u8])>,
) -> BTreeMap<&'a str, Vec<&'a [u8]>> {
    let mut by_gateway: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
    for (gateway, key, record) in notices {
        if !gateway.is_empty() {
            by_gateway.entry(gateway).or_default().extend([key, record]);
        }
    }
    by_gateway
}

fn unexpected(why: String) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "settle", why))
}

#[cfg(test)]
mod tests {
    use super::results_first;

    #[test]
    fn results_go_first_when_an_entry_is_not_on_its_records_node() {
        // Every task's entry on its record's node: one step.
        assert!(!results_first(&[0, 1, 2], &[Some(0), Some(1), Some(2)]));
        assert!(!results_first(&[], &[]));
        // A record whose slot moved to node 1 while its entry stayed on node 0.
        assert!(results_first(&[0, 1], &[Some(0), Some(0)]));
        // An entry not known here.
        assert!(results_first(&[0], &[None]));
    }
}
