//! Admission on Redis, paid per group of tasks rather than per task: admissions are gathered
//! for at most [`GATHER_WINDOW`] ([`CLUSTER_GATHER_WINDOW`] on a cluster) or [`GATHER_MAX`]
//! tasks and written with one script call per node (one in all on a standalone Redis, one
//! per master on a cluster: see `crate::topology`). Inside the script each task is handled
//! on its own — dedupe claim, capacity, pending record — so one refused task
//! refuses only itself; the tasks a call admits then share one stream entry (`crate::entry`),
//! in the stream of one of the node's partitions, whatever the partitions of their records.
//!
//! With dedupe on, the gateway gives the task an id whose partition byte is the input hash's
//! (see `Keys::partition_of`), so the dedupe entry and the result share a slot. The entry may
//! be in another slot of the same node: the settle of its tasks writes their results before
//! it acknowledges the entry, in one call where they still share a node, in two steps where
//! a slot has moved since (`crate::settle`).

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::task::Task;
use batchgate_queue::{AdmitError, Admitted, AdmittedOwned, Intake, QueueError, QuietReply};
use batchgate_store::StoreError;
use redis::Script;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

use crate::conn::{bounded, unless_script_lost, RedisConn};
use crate::describe;
use crate::entry::{frame_length, unframe};
use crate::keys::{KeyArg, Keys};
use crate::local_groups::LocalGroups;
use crate::record;
use crate::topology::Topology;

/// Longest an admission waits for others to share its script call (longer only while every
/// write slot is busy). A group is paid for once along the whole path: its call, its stream
/// entry, a read, a fetch of its messages, a share of a settle, and the wake-ups of each;
/// twice the tasks a group cut the CPU of two gateways, two batchers and Redis by about a
/// tenth at 3,000–4,000 requests/s (BENCHMARKS.md). The wait is not added to the batch's:
/// the entry says how long the group's oldest task waited, and the batcher's window counts
/// it as waited already (`crate::entry::waited`).
pub const GATHER_WINDOW: Duration = Duration::from_millis(10);
/// The same on a cluster. A gathered group is one call, and one stream entry, per master:
/// over three masters a group would make entries of a third of the tasks, so the window is
/// three times as long and a call carries about what one to a standalone Redis does (30 ms
/// instead of 15 cut a cluster deployment's CPU by 13% at 3,000 requests/s: BENCHMARKS.md).
/// Within the batch window (50 ms by default), which counts it as waited.
pub const CLUSTER_GATHER_WINDOW: Duration = Duration::from_millis(30);
/// Most tasks in one gathered group.
pub const GATHER_MAX: usize = 256;
/// Admissions waiting to be gathered; past it, `admit` waits (the HTTP layer bounds callers).
const BACKLOG: usize = 16_384;
/// Group writes under way at once (each one call, or one per master on a cluster).
const WRITES_IN_FLIGHT: usize = 2;
/// Bytes of a task's admission arguments besides its id (twice: itself, and in its record's
/// key) and pending record, at most: the prefix and tag of its record's key and its dedupe
/// entry's whole key (a 64-digit hash), with room for long prefixes.
const ARGS_BESIDE_IDS: usize = 160;

/// The Redis intake. Cloning is shallow; the gatherer stops when the last clone goes.
#[derive(Clone)]
pub struct RedisIntake {
    /// To the gatherer.
    tx: mpsc::Sender<Admission>,
    /// Bound on the wait for room in a full backlog.
    limit: Duration,
    /// Where the writer keeps the groups it stores, for this process's own reads.
    local: LocalGroups,
}

/// One task waiting to be admitted.
struct Admission {
    partition: usize,
    /// The task itself, until it moves to the local groups (see [`Writer::call`]); encoded
    /// straight into its group's command (see [`Group`]).
    task: Option<Task>,
    /// The task's pending record.
    pending: String,
    dedupe: Option<String>,
    reply: Reply,
    /// When it was handed to the gatherer: its group's entry carries how long the oldest
    /// waited to be written (see `crate::entry::waited`).
    at: tokio::time::Instant,
}

/// Where an admission's answer goes.
enum Reply {
    /// To a caller awaiting it ([`Intake::admit_owned`]).
    Awaited(oneshot::Sender<Result<AdmittedOwned, AdmitError>>),
    /// To a caller that waits for the result instead ([`Intake::admit_quietly`]).
    Quiet(QuietReply),
}

impl Reply {
    fn send(self, answer: Result<AdmittedOwned, AdmitError>) {
        match self {
            Reply::Awaited(tx) => {
                let _ = tx.send(answer);
            }
            Reply::Quiet(reply) => reply.send(answer),
        }
    }
}

impl Admission {
    /// The task's id ('' once the task has moved to the local groups).
    fn id(&self) -> &str {
        self.task.as_ref().map_or("", |t| t.task_id.as_str())
    }

    /// How the admission went, given what the script answered for this task: a duplicate
    /// gets its task back (if it moved to the local groups, decoded from `stored`: its
    /// message in the command that stored its group).
    fn answer<'m>(
        &mut self,
        answer: Result<Admitted, AdmitError>,
        stored: impl FnOnce() -> Option<&'m [u8]>,
    ) -> Result<AdmittedOwned, AdmitError> {
        match answer? {
            Admitted::Enqueued { dedupe_bypassed } => {
                Ok(AdmittedOwned::Enqueued { dedupe_bypassed })
            }
            Admitted::Duplicate(existing) => {
                let task = match self.task.take() {
                    Some(task) => task,
                    None => {
                        let message = stored()
                            .ok_or_else(|| unavailable("a duplicate's task: no message stored"))?;
                        Task::from_bytes(message)
                            .map_err(|e| unavailable(format!("a duplicate's task: {e}")))?
                    }
                };
                Ok(AdmittedOwned::Duplicate { existing, task })
            }
        }
    }
}

/// What the gatherer needs to write a group.
struct Writer {
    conn: RedisConn,
    keys: Keys,
    script: Script,
    /// Each partition's share of the queue's capacity.
    per_partition: usize,
    result_ttl: Duration,
    dedupe_ttl: Duration,
    op_timeout: Duration,
    /// Which partitions share a node: one call per node.
    topology: Topology,
    /// Capacity of the whole queue, for the error.
    capacity: usize,
    /// This intake's name among writers, random, for the keys of its groups' messages.
    name: u64,
    /// Groups written so far: with `name`, names each group's messages.
    groups: AtomicU64,
    /// Where each group's tasks are kept too, once this process reads streams.
    local: LocalGroups,
    /// Whether partitions may live on different nodes (then a call's tasks may be refused
    /// for a moved slot and written again).
    cluster: bool,
}

impl RedisIntake {
    /// An intake over `conn`; `cluster` says whether partitions may live on different nodes.
    /// Starts the gatherer (needs a Tokio runtime).
    pub fn new(
        conn: RedisConn,
        keys: Keys,
        capacity: usize,
        result_ttl: Duration,
        dedupe_ttl: Duration,
        op_timeout: Duration,
        cluster: bool,
    ) -> Self {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let local = LocalGroups::default();
        let writer = Writer {
            per_partition: capacity.div_ceil(keys.partitions()).max(1),
            topology: Topology::new(conn.clone(), keys.clone(), cluster, op_timeout),
            conn,
            keys,
            script: Script::new(include_str!("lua/admit.lua")),
            result_ttl,
            dedupe_ttl,
            op_timeout,
            capacity,
            name: RandomState::new().build_hasher().finish(),
            groups: AtomicU64::new(0),
            local: local.clone(),
            cluster,
        };
        let window = gather_window(cluster);
        tokio::spawn(gather(rx, Arc::new(writer), window));
        RedisIntake {
            tx,
            // A full backlog has room again once the gatherer takes the next group: after a
            // gathering window and a wait for a write slot (a write is bounded by
            // `op_timeout`).
            limit: op_timeout * 2 + window * 2,
            local,
        }
    }

    /// The groups this intake keeps for the reads of a queue in the same process, which
    /// takes them with [`RedisQueue::with_local_groups`](crate::RedisQueue::with_local_groups)
    /// (nothing is kept until that queue reads).
    pub fn local_groups(&self) -> LocalGroups {
        self.local.clone()
    }
}

/// A partition's tasks as one argument: their messages, each framed by its length
/// (`crate::entry::frame`), written straight into the command rather than gathered first.
struct Group<'a>(&'a [Admission]);

impl redis::ToRedisArgs for Group<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        let mut arg = out.writer_for_next_arg();
        for a in self.0 {
            // Writing into the command's buffer cannot fail. A group is written before its
            // tasks move to the local groups (a retry writes clones), so each task is here;
            // were one not, its empty frame would fail it when read, not its neighbours.
            let len = a.task.as_ref().map_or(0, Task::encoded_len);
            let _ = arg.write_all(&frame_length(len));
            if let Some(task) = &a.task {
                let _ = task.write_to(&mut arg);
            }
        }
    }
}

/// The message of the `position`-th task of the group that `pipe`'s first command stores.
fn stored_message(pipe: &redis::Pipeline, position: usize) -> Option<&[u8]> {
    let set = pipe.cmd_iter().next()?;
    match set.args_iter().nth(2)? {
        redis::Arg::Simple(group) => unframe(group, "admission").into_iter().nth(position),
        _ => None,
    }
}

/// Why a task that never reached the gatherer was refused.
const BACKLOG_FULL: &str = "admission backlog full or closed";

fn unavailable(why: impl Into<String>) -> AdmitError {
    AdmitError::Queue(QueueError::Unavailable(why.into()))
}

#[async_trait]
impl Intake for RedisIntake {
    async fn admit(
        &self,
        task: &Task,
        created_at: u64,
        input_sha256: Option<&str>,
    ) -> Result<Admitted, AdmitError> {
        Ok(self
            .admit_owned(task.clone(), created_at, input_sha256)
            .await?
            .into())
    }

    async fn admit_owned(
        &self,
        task: Task,
        created_at: u64,
        input_sha256: Option<&str>,
    ) -> Result<AdmittedOwned, AdmitError> {
        let (reply, answer) = oneshot::channel();
        self.hand_over(task, created_at, input_sha256, Reply::Awaited(reply))
            .await?;
        // No timer of its own (one a task cost more than the rest of the hand-off): the
        // answer comes within a bound, since every wait on the way is bounded. The gatherer
        // waits at most its window, then for a write slot, which a write frees within its
        // Redis calls' `op_timeout`s; the write's own calls are bounded the same way. If the
        // gatherer is gone, the answer's sender goes with it.
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(unavailable("admission dropped")),
        }
    }

    fn answers_quietly(&self) -> bool {
        true
    }

    async fn admit_quietly(
        &self,
        task: Task,
        created_at: u64,
        input_sha256: Option<&str>,
        answer: QuietReply,
    ) {
        // A refused hand-over has answered through the reply already (or, timed out with the
        // admission inside the send, answers as the reply is dropped): nothing more to do.
        if let Err(refused) = self
            .hand_over(task, created_at, input_sha256, Reply::Quiet(answer))
            .await
        {
            debug!(%refused, "admission not handed over");
        }
    }
}

impl RedisIntake {
    /// Hands a task to the gatherer; its answer goes to `reply`.
    async fn hand_over(
        &self,
        task: Task,
        created_at: u64,
        input_sha256: Option<&str>,
        reply: Reply,
    ) -> Result<(), AdmitError> {
        let admission = Admission {
            partition: 0,
            pending: record::pending(created_at, task.owner.as_deref()),
            task: Some(task),
            dedupe: input_sha256.map(str::to_owned),
            reply,
            at: tokio::time::Instant::now(),
        };
        // Nearly always there is room: only a full backlog waits, and only that wait needs a
        // timer (a timer a task cost more than the send).
        let refused = match self.tx.try_send(admission) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(admission)) => {
                match tokio::time::timeout(self.limit, self.tx.send(admission)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(mpsc::error::SendError(admission))) => admission,
                    Err(_) => return Err(unavailable(BACKLOG_FULL)),
                }
            }
            Err(mpsc::error::TrySendError::Closed(admission)) => admission,
        };
        let why = unavailable(BACKLOG_FULL);
        refused.reply.send(Err(unavailable(BACKLOG_FULL)));
        Err(why)
    }
}

/// How long a group gathers: [`GATHER_WINDOW`], or [`CLUSTER_GATHER_WINDOW`] on a cluster.
fn gather_window(cluster: bool) -> Duration {
    if cluster {
        CLUSTER_GATHER_WINDOW
    } else {
        GATHER_WINDOW
    }
}

/// Where gathered groups go: the Redis writer, or a test's record of them.
trait Groups: Send + Sync + 'static {
    fn write(&self, group: Vec<Admission>) -> impl std::future::Future<Output = ()> + Send;
}

impl Groups for Writer {
    fn write(&self, group: Vec<Admission>) -> impl std::future::Future<Output = ()> + Send {
        Writer::write(self, group)
    }
}

/// Gathers admissions for up to `window` ([`gather_window`]) after the first of a group,
/// then writes the group without waiting for the write, so the next group gathers
/// meanwhile. While every write slot is taken it goes on gathering (up to [`GATHER_MAX`]):
/// the busier Redis is, the more tasks each call carries.
async fn gather<W: Groups>(mut rx: mpsc::Receiver<Admission>, writer: Arc<W>, window: Duration) {
    let in_flight = Arc::new(Semaphore::new(WRITES_IN_FLIGHT));
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else { return };
        let mut group = vec![first];
        // The window is slept through, not watched: admissions that come meanwhile wait in
        // the channel and are taken when it ends, so that each does not wake the gatherer (a
        // wake-up a task, often of the runtime's other thread). A backlog that fills a group
        // already is written at once.
        let until = tokio::time::Instant::now() + window;
        open = take_waiting(&mut rx, &mut group);
        if open && group.len() < GATHER_MAX {
            tokio::time::sleep_until(until).await;
            open = take_waiting(&mut rx, &mut group);
        }
        let permit = loop {
            if group.len() >= GATHER_MAX || !open {
                break in_flight.clone().acquire_owned().await;
            }
            tokio::select! {
                biased;
                permit = in_flight.clone().acquire_owned() => break permit,
                next = rx.recv() => match next {
                    Some(a) => group.push(a),
                    None => open = false,
                },
            }
        };
        let Ok(permit) = permit else { return };
        debug!(tasks = group.len(), "admission group gathered");
        let writer = writer.clone();
        tokio::spawn(async move {
            writer.write(group).await;
            drop(permit);
        });
    }
}

/// Adds the admissions already waiting to `group`, up to [`GATHER_MAX`] in all; `false` once
/// the channel is closed.
fn take_waiting(rx: &mut mpsc::Receiver<Admission>, group: &mut Vec<Admission>) -> bool {
    while group.len() < GATHER_MAX {
        match rx.try_recv() {
            Ok(a) => group.push(a),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

impl Writer {
    /// Writes a group: one call per node, the calls under way together. Tasks refused because
    /// their node was not the one the map said (a slot moved) are written once more, by the
    /// map read again.
    async fn write(&self, group: Vec<Admission>) {
        let mut group: Vec<Admission> = group
            .into_iter()
            .filter_map(|mut a| {
                a.partition = self.keys.partition_of(a.id());
                match &a.dedupe {
                    Some(hash) if self.keys.partition_of(hash) != a.partition => {
                        // Ids are made to match their input's partition; a mismatch is a
                        // caller bug, and the task's keys would span slots.
                        let why = format!("task {} is not in its input's partition", a.id());
                        a.reply
                            .send(Err(AdmitError::Store(StoreError::Unavailable(why))));
                        None
                    }
                    _ => Some(a),
                }
            })
            .collect();
        for attempt in 0..2 {
            let partitions: Vec<usize> = group.iter().map(|a| a.partition).collect();
            let nodes = self.topology.nodes(&partitions).await;
            let mut calls: BTreeMap<usize, Vec<Admission>> = BTreeMap::new();
            for (a, node) in group.into_iter().zip(nodes) {
                calls.entry(node).or_default().push(a);
            }
            // Only a cluster's slots move: a standalone Redis's call is the last.
            let last = attempt == 1 || !self.cluster;
            let misrouted =
                futures_util::future::join_all(calls.into_values().map(|g| self.call(g, last)))
                    .await;
            group = misrouted.into_iter().flatten().collect();
            if group.is_empty() {
                return;
            }
            self.topology.invalidate();
        }
    }

    /// One script call; gives back the tasks that met another node's key (unless `last`: then
    /// they are refused like any other error).
    async fn call(&self, mut group: Vec<Admission>, last: bool) -> Vec<Admission> {
        // The call's tasks share ONE stream entry, in the stream of one of their partitions
        // (they are all on this node), whichever partitions their records and dedupe entries
        // are in: a group spread over a node's partitions would otherwise be an entry (and a
        // read, an acknowledgement and a delete) per partition, one or two tasks each at
        // moderate rates. The stream is taken in turn among the group's partitions, so that
        // the node's streams share the load. Their messages are stored first as one string,
        // which the entry names (see `crate::entry`), so that they never pass through the
        // script.
        let n = self.groups.fetch_add(1, Ordering::Relaxed);
        let stream = self.stream_of(&group, n);
        let key = self.keys.group(stream, &format!("{:x}-{n:x}", self.name));
        let ttl_ms = self.result_ttl.as_millis().max(1) as u64;
        // Each command's buffer sized once: grown by doubling, the messages (≈ 2 KB a task)
        // were copied again at each step, into fresh pages.
        let framed_len: usize = group
            .iter()
            .map(|a| 4 + a.task.as_ref().map_or(0, Task::encoded_len))
            .sum();
        let mut set = redis::Cmd::with_capacity(5, framed_len + key.len() + 32);
        set.arg("SET")
            .arg(&key)
            .arg(Group(&group))
            .arg("PX")
            .arg(ttl_ms);
        let per_task: usize = group
            .iter()
            .map(|a| 2 * a.id().len() + a.pending.len() + ARGS_BESIDE_IDS)
            .sum();
        // How long the group's oldest task has waited to be written (the window, and a wait
        // for a write slot): the batcher counts it as waited for its batch.
        let waited = group
            .iter()
            .map(|a| a.at.elapsed())
            .max()
            .unwrap_or_default();
        let mut call = redis::Cmd::with_capacity(10 + 4 * group.len(), per_task + 256);
        call.arg("EVALSHA")
            .arg(self.script.get_hash())
            .arg(1)
            .arg(self.keys.stream(stream))
            .arg(self.per_partition)
            .arg(if self.cluster { "0" } else { "1" })
            .arg(self.dedupe_ttl.as_millis().max(1) as u64)
            .arg(self.keys.stream(stream))
            .arg(&key)
            .arg(group.len())
            .arg(waited.as_millis() as u64);
        for a in &group {
            call.arg(KeyArg::Result(&self.keys, a.id()));
            match &a.dedupe {
                Some(hash) => call.arg(KeyArg::Dedupe(&self.keys, hash)),
                None => call.arg(""),
            };
            call.arg(a.id()).arg(&a.pending);
        }
        if self.local.keeping() {
            // Kept before the entry can exist: this process's reader may read it before the
            // call's reply is back. The tasks move to the local groups, unless a moved slot
            // could send them round again (a cluster's first attempt), which needs them.
            let tasks = if last {
                group.iter_mut().filter_map(|a| a.task.take()).collect()
            } else {
                group.iter().filter_map(|a| a.task.clone()).collect()
            };
            self.local.keep(&key, tasks);
        }
        let started = std::time::Instant::now();
        // The pipeline keeps the stored group's command: a duplicate whose task moved to the
        // local groups is decoded from it.
        let mut pipe = redis::pipe();
        pipe.add_command(set).ignore();
        pipe.add_command(call.clone());
        let replies = self.store_and_admit(&pipe, &call).await;
        debug!(
            tasks = group.len(),
            took_us = started.elapsed().as_micros() as u64,
            "admission group written"
        );
        // One line a task (see admit.lua).
        let replies = replies.map(|r| {
            String::from_utf8(r).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
        });
        let admitted_none = match &replies {
            Ok(replies) => !replies.split('\n').any(|r| r == "o"),
            Err(_) => true,
        };
        if admitted_none {
            // No entry names the group (a retry, if any, stores it under a new key).
            self.local.forget(&key);
        }
        let mut again = Vec::new();
        match replies {
            Ok(replies) if replies.split('\n').count() == group.len() => {
                let replies = group.into_iter().zip(replies.split('\n'));
                for (position, (mut a, reply)) in replies.enumerate() {
                    let answer = self.answer(reply);
                    match answer {
                        Err(AdmitError::Queue(QueueError::Unavailable(why)))
                            if !last && Topology::is_misrouted(&why) =>
                        {
                            again.push(a)
                        }
                        answer => {
                            let answer = a.answer(answer, || stored_message(&pipe, position));
                            a.reply.send(answer);
                        }
                    }
                }
            }
            Ok(replies) => {
                let why = format!(
                    "admit script answered {} replies for {} tasks",
                    replies.split('\n').count(),
                    group.len()
                );
                warn!(%why, "admission failed");
                for a in group {
                    a.reply.send(Err(unavailable(why.clone())));
                }
            }
            Err(error) => {
                let why = describe(&error);
                if !last && Topology::is_misrouted(&why) {
                    return group;
                }
                for a in group {
                    a.reply.send(Err(unavailable(why.clone())));
                }
            }
        }
        again
    }

    /// The partition whose stream takes a call's entry: the partitions of `group` in turn
    /// (`n` counts the calls).
    fn stream_of(&self, group: &[Admission], n: u64) -> usize {
        let mut partitions: Vec<usize> = group.iter().map(|a| a.partition).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let turn = n % partitions.len().max(1) as u64;
        partitions.get(turn as usize).copied().unwrap_or_default()
    }

    /// Stores the group's messages and runs the admission script in one round trip: `pipe`
    /// holds the two commands, in order (the string and the stream share a slot, so a cluster
    /// sends both to that slot's node). A script Redis lost (a restart) is loaded again and
    /// `call` run again.
    async fn store_and_admit(
        &self,
        pipe: &redis::Pipeline,
        call: &redis::Cmd,
    ) -> redis::RedisResult<Vec<u8>> {
        let mut conn = self.conn.clone();
        let replies: redis::RedisResult<(Vec<u8>,)> =
            bounded(self.op_timeout, pipe.query_async(&mut conn)).await;
        let first = replies.map(|(r,)| r);
        unless_script_lost(first, &mut conn, &self.script, call, self.op_timeout).await
    }

    fn answer(&self, reply: &str) -> Result<Admitted, AdmitError> {
        match reply.split_at_checked(1) {
            Some(("o", "")) => Ok(Admitted::Enqueued {
                dedupe_bypassed: false,
            }),
            Some(("d", "")) => Err(unavailable("admit script answered dup without an id")),
            Some(("d", existing)) => Ok(Admitted::Duplicate(existing.to_owned())),
            Some(("f", "")) => Err(AdmitError::Queue(QueueError::Full {
                capacity: self.capacity,
            })),
            Some(("e", why)) => Err(unavailable(format!("admission refused by Redis: {why}"))),
            _ => Err(unavailable(format!("admit script answered {reply:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records the size of each group written.
    #[derive(Default)]
    struct Sizes(Mutex<Vec<usize>>);

    impl Groups for Sizes {
        async fn write(&self, group: Vec<Admission>) {
            self.0.lock().unwrap().push(group.len());
        }
    }

    fn admission() -> Admission {
        Admission {
            partition: 0,
            task: None,
            pending: String::new(),
            dedupe: None,
            reply: Reply::Awaited(oneshot::channel().0),
            at: tokio::time::Instant::now(),
        }
    }

    /// Two admissions 12 ms apart, on the paused clock: the sizes of the groups written.
    async fn groups_of_two_arrivals(cluster: bool) -> Vec<usize> {
        let sizes = Arc::new(Sizes::default());
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(gather(rx, sizes.clone(), gather_window(cluster)));
        tx.send(admission()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(12)).await;
        tx.send(admission()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let written = sizes.0.lock().unwrap().clone();
        written
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_that_fills_a_group_is_written_without_waiting_for_the_window() {
        let sizes = Arc::new(Sizes::default());
        let (tx, rx) = mpsc::channel(2 * GATHER_MAX);
        for _ in 0..GATHER_MAX + 10 {
            tx.try_send(admission()).unwrap();
        }
        let started = tokio::time::Instant::now();
        tokio::spawn(gather(rx, sizes.clone(), gather_window(false)));
        // The clock stands still while this task keeps yielding.
        for _ in 0..100 {
            if !sizes.0.lock().unwrap().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(
            *sizes.0.lock().unwrap(),
            vec![GATHER_MAX],
            "a full group does not wait for the window"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*sizes.0.lock().unwrap(), vec![GATHER_MAX, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_gathers_longer() {
        // A cluster's group is one call per master: admissions 12 ms apart still share one.
        assert_eq!(groups_of_two_arrivals(true).await, vec![2]);
        // A standalone Redis writes the first after 10 ms.
        assert_eq!(groups_of_two_arrivals(false).await, vec![1, 1]);
    }
}
