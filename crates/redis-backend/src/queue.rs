//! The task queue on Redis Streams: one stream per partition, one consumer group.
//!
//! - `enqueue`: a script adds the entry unless the partition holds its share of the capacity.
//! - reading: a reader task blocks in `XREADGROUP` on a connection of its own (one reader for
//!   all partitions on a standalone Redis, one per partition on a cluster, where a command
//!   cannot span slots) and feeds a small local channel (two batches deep), which `read` drains. A full channel stops
//!   the readers, so entries stay in Redis — visible in `depth` — rather than here.
//! - `ack`: `XACK` then `XDEL` in one pipeline per partition: a processed entry leaves the
//!   stream at once, so streams hold only waiting and in-progress tasks and never need a
//!   MAXLEN/MINID trim that could cut a pending entry.
//! - leases: a live batcher renews the idle time of the entries it holds (`XCLAIM … JUSTID`)
//!   every third of the visibility timeout, so a slow batch is never claimed from under it.
//! - recovery: a claimer task looks for entries idle longer than the visibility timeout (their
//!   batcher died), claims them with `XCLAIM`, and feeds them in like new ones; an entry
//!   delivered `max_deliveries` times goes to the dead-letter stream instead.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use batchgate_protocol::task::{unix_ms, Task};
use batchgate_queue::{Backlog, Completion, Delivery, Outcome, Queue, QueueError, Receipt};
use redis::streams::{StreamClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::{RedisResult, Script, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::conn::{bounded, RedisConfig, RedisConn};
use crate::describe;
use crate::keys::{Keys, GROUP};
use crate::notify::Notice;

/// Default time an entry may stay unacknowledged before another batcher claims it.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deliveries of one entry before it goes to the dead-letter stream.
pub const DEFAULT_MAX_DELIVERIES: usize = 5;
/// How long a reader blocks in one `XREADGROUP`.
const READ_BLOCK: Duration = Duration::from_millis(500);
/// Entries one `XREADGROUP` or claim takes at most.
const READ_COUNT: usize = 64;
/// Pause after a failed read before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The queue's settings.
#[derive(Debug, Clone)]
pub struct RedisQueueConfig {
    /// Most tasks in all partitions together (each partition takes its share).
    pub capacity: usize,
    /// Idle time after which an unacknowledged entry is claimed by another batcher.
    pub visibility_timeout: Duration,
    /// Deliveries after which an entry is dead-lettered.
    pub max_deliveries: usize,
    /// Which partitions this process reads (all when empty).
    pub read_partitions: Vec<usize>,
    /// Lifetime of the FAILED record written for a dead-lettered task.
    pub result_ttl: Duration,
}

impl Default for RedisQueueConfig {
    fn default() -> Self {
        RedisQueueConfig {
            capacity: 50_000,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            read_partitions: Vec::new(),
            result_ttl: Duration::from_secs(600),
        }
    }
}

/// The Redis Streams queue. Share it behind an `Arc`; readers start on the first `read`.
pub struct RedisQueue {
    /// Shared multiplexed connection for everything but blocking reads.
    conn: RedisConn,
    /// To open the readers' own connections.
    redis: RedisConfig,
    /// Key names.
    keys: Keys,
    /// Settings.
    config: RedisQueueConfig,
    /// This process's name in the consumer group (unique per process).
    consumer: String,
    /// The enqueue script.
    enqueue: Script,
    /// The local end of the readers, created by the first `read`.
    delivered: tokio::sync::OnceCell<tokio::sync::Mutex<mpsc::Receiver<Delivery>>>,
    /// Entries handed to the batcher and not acknowledged yet, whose leases we keep alive.
    leases: Leases,
    /// Stops the readers and the claiming of others' entries (`close_reads`).
    stop_reads: CancellationToken,
    /// Stops everything, lease renewal included (on drop).
    stop: CancellationToken,
}

/// Entry ids we hold, by partition, from the moment Redis delivers them to us (in the local
/// channel, in a batch, at the worker) until they are acked or abandoned. While a batcher
/// lives, it renews their idle time (XCLAIM to itself, JUSTID) so that a batch slower than the
/// visibility timeout is not claimed — and run twice — by another batcher; once it dies,
/// renewal stops and the entries are claimed.
#[derive(Clone, Default)]
struct Leases(Arc<Mutex<HashMap<usize, HashSet<String>>>>);

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, HashSet<String>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, receipt: &Receipt) {
        self.lock()
            .entry(receipt.partition)
            .or_default()
            .insert(receipt.entry_id.clone());
    }

    fn release(&self, receipts: &[Receipt]) {
        let mut held = self.lock();
        for r in receipts {
            if let Some(ids) = held.get_mut(&r.partition) {
                ids.remove(&r.entry_id);
            }
        }
    }

    fn snapshot(&self) -> Vec<(usize, Vec<String>)> {
        self.lock()
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(p, ids)| (*p, ids.iter().cloned().collect()))
            .collect()
    }
}

impl Drop for RedisQueue {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisQueue {
    /// A queue on `conn`; `consumer` names this process in the group.
    pub fn new(
        conn: RedisConn,
        redis: RedisConfig,
        keys: Keys,
        config: RedisQueueConfig,
        consumer: String,
    ) -> Self {
        RedisQueue {
            conn,
            redis,
            keys,
            config,
            consumer,
            enqueue: Script::new(include_str!("lua/enqueue.lua")),
            delivered: tokio::sync::OnceCell::new(),
            leases: Leases::default(),
            stop_reads: CancellationToken::new(),
            stop: CancellationToken::new(),
        }
    }

    fn partitions_read(&self) -> Vec<usize> {
        if self.config.read_partitions.is_empty() {
            (0..self.keys.partitions()).collect()
        } else {
            self.config.read_partitions.clone()
        }
    }

    fn per_partition_capacity(&self) -> usize {
        self.config.capacity.div_ceil(self.keys.partitions()).max(1)
    }

    fn start_readers(&self) -> tokio::sync::Mutex<mpsc::Receiver<Delivery>> {
        // Two batches deep: enough to form the next batch while one is dispatched.
        let (tx, rx) = mpsc::channel(2 * READ_COUNT);
        let partitions = self.partitions_read();
        let streams: Vec<(usize, String)> = partitions
            .iter()
            .map(|&p| (p, self.keys.stream(p)))
            .collect();
        let groups: Vec<Vec<(usize, String)>> = if self.redis.cluster {
            streams.into_iter().map(|s| vec![s]).collect()
        } else {
            vec![streams]
        };
        for streams in groups {
            let reader = StreamReader {
                redis: self.redis.clone(),
                leases: self.leases.clone(),
                streams,
                consumer: self.consumer.clone(),
                tx: tx.clone(),
                stop: self.stop_reads.clone(),
            };
            tokio::spawn(reader.run());
        }
        let claimer = Claimer {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            partitions: partitions.clone(),
            consumer: self.consumer.clone(),
            config: self.config.clone(),
            op_timeout: self.redis.op_timeout,
            tx,
            leases: self.leases.clone(),
            stop_reads: self.stop_reads.clone(),
            stop: self.stop.clone(),
        };
        tokio::spawn(claimer.run());
        info!(consumer = %self.consumer, partitions = partitions.len(), "stream readers started");
        tokio::sync::Mutex::new(rx)
    }

    fn unavailable(error: &redis::RedisError) -> QueueError {
        QueueError::Unavailable(describe(error))
    }
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(&self, task: Task) -> Result<(), QueueError> {
        let partition = self.keys.partition_of(&task.task_id);
        let stream = self.keys.stream(partition);
        let payload = task.to_bytes();
        let capacity = self.per_partition_capacity();
        let mut conn = self.conn.clone();
        let added: Option<String> = bounded(
            self.redis.op_timeout,
            self.enqueue
                .key(&stream)
                .arg(capacity)
                .arg(payload)
                .invoke_async(&mut conn),
        )
        .await
        .map_err(|e| Self::unavailable(&e))?;
        match added {
            Some(_) => Ok(()),
            None => Err(QueueError::Full {
                capacity: self.config.capacity,
            }),
        }
    }

    async fn read(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError> {
        let rx = self
            .delivered
            .get_or_init(|| async { self.start_readers() })
            .await;
        let mut rx = rx.lock().await;
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        match tokio::time::timeout(block, rx.recv()).await {
            Ok(Some(first)) => out.push(first),
            Ok(None) | Err(_) => return Ok(out),
        }
        while out.len() < max {
            match rx.try_recv() {
                Ok(d) => out.push(d),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        self.leases.release(receipts);
        let mut by_partition: Vec<Vec<&str>> = vec![Vec::new(); self.keys.partitions()];
        for r in receipts {
            if let Some(ids) = by_partition.get_mut(r.partition) {
                ids.push(&r.entry_id);
            }
        }
        let acks = by_partition
            .iter()
            .enumerate()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(p, ids)| {
                let stream = self.keys.stream(p);
                let mut conn = self.conn.clone();
                async move {
                    let mut pipe = redis::pipe();
                    pipe.cmd("XACK").arg(&stream).arg(GROUP).arg(ids).ignore();
                    pipe.cmd("XDEL").arg(&stream).arg(ids).ignore();
                    bounded(self.redis.op_timeout, pipe.query_async::<()>(&mut conn)).await
                }
            });
        for result in futures_util::future::join_all(acks).await {
            result.map_err(|e| Self::unavailable(&e))?;
        }
        Ok(())
    }

    async fn depth(&self) -> Result<Vec<usize>, QueueError> {
        let lens = (0..self.keys.partitions()).map(|p| {
            let stream = self.keys.stream(p);
            let mut conn = self.conn.clone();
            async move {
                bounded(
                    self.redis.op_timeout,
                    redis::cmd("XLEN")
                        .arg(&stream)
                        .query_async::<usize>(&mut conn),
                )
                .await
            }
        });
        futures_util::future::join_all(lens)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| Self::unavailable(&e)))
            .collect()
    }

    /// From `XINFO GROUPS` of each partition, summed: taken = `entries-read` (entries delivered
    /// to batchers), queued = `lag` (entries not delivered yet). `None` while Redis cannot count
    /// exactly (a group without a valid lag, e.g. right after entries past its position were
    /// deleted). Readers take at most about a batch ahead of their batcher, so what they hold
    /// is not hidden from `queued` for long.
    async fn backlog(&self) -> Result<Option<Backlog>, QueueError> {
        let infos = (0..self.keys.partitions()).map(|p| {
            let stream = self.keys.stream(p);
            let mut conn = self.conn.clone();
            async move {
                bounded(
                    self.redis.op_timeout,
                    redis::cmd("XINFO")
                        .arg("GROUPS")
                        .arg(&stream)
                        .query_async::<Vec<HashMap<String, Value>>>(&mut conn),
                )
                .await
            }
        });
        let mut total = Backlog {
            taken: 0,
            queued: 0,
        };
        for groups in futures_util::future::join_all(infos).await {
            let groups = groups.map_err(|e| Self::unavailable(&e))?;
            let Some(group) = groups.iter().find(
                |g| matches!(g.get("name"), Some(v) if value_text(v).as_deref() == Some(GROUP)),
            ) else {
                // No group yet: nothing was ever read from this partition.
                continue;
            };
            let number = |field: &str| group.get(field).and_then(value_number);
            match (number("entries-read"), number("lag")) {
                (Some(read), Some(lag)) => {
                    total.taken += read;
                    total.queued += lag;
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(total))
    }

    async fn abandon(&self, receipts: &[Receipt]) {
        // Stop renewing: after the visibility timeout any batcher (this one too) claims them.
        self.leases.release(receipts);
    }

    async fn close_reads(&self) {
        self.stop_reads.cancel();
    }
}

/// Creates the group at the start of the stream (and the stream) unless it exists.
async fn ensure_group(conn: &mut RedisConn, stream: &str, limit: Duration) -> RedisResult<()> {
    let created: RedisResult<()> = bounded(
        limit,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn),
    )
    .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Turns a stream entry into a delivery; `None` (logged) if it cannot be decoded.
fn delivery(partition: usize, entry: &StreamId) -> Option<Delivery> {
    let bytes = match entry.map.get("m") {
        Some(Value::BulkString(b)) => b,
        _ => {
            warn!(entry = %entry.id, "stream entry without a task message");
            return None;
        }
    };
    match Task::from_bytes(bytes) {
        Ok(task) => Some(Delivery {
            task,
            receipt: Receipt {
                partition,
                entry_id: entry.id.clone(),
            },
        }),
        Err(error) => {
            warn!(entry = %entry.id, %error, "undecodable task message");
            None
        }
    }
}

/// A reply field as text (bulk or simple string).
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// A reply field as a non-negative number; `None` for nil.
fn value_number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => value_text(other)?.parse().ok(),
    }
}

/// Blocks in `XREADGROUP` on its streams and feeds the local channel. A standalone Redis gets
/// one reader for all partitions (one command returns entries of every stream); a cluster gets
/// one per partition, since one command cannot span slots.
struct StreamReader {
    redis: RedisConfig,
    leases: Leases,
    /// `(partition, stream key)` of every stream read.
    streams: Vec<(usize, String)>,
    consumer: String,
    tx: mpsc::Sender<Delivery>,
    stop: CancellationToken,
}

impl StreamReader {
    async fn run(self) {
        let mut conn = None;
        while !self.stop.is_cancelled() {
            let mut c = match conn.take() {
                Some(c) => c,
                None => match self.redis.connect_blocking(READ_BLOCK).await {
                    Ok(c) => c,
                    Err(error) => {
                        warn!(%error, "stream reader cannot connect");
                        self.pause().await;
                        continue;
                    }
                },
            };
            // Wait for room first: entries stay in Redis while the batcher is behind.
            let Ok(permit) = self
                .tx
                .reserve_many(READ_COUNT.min(self.tx.max_capacity()))
                .await
            else {
                return;
            };
            drop(permit);
            match self.read_once(&mut c).await {
                Ok(entries) => {
                    for d in entries.iter().filter_map(|(p, e)| delivery(*p, e)) {
                        self.leases.hold(&d.receipt);
                        if self.tx.send(d).await.is_err() {
                            return;
                        }
                    }
                    conn = Some(c);
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // Redis lost the group (a restart without persistence): make it again.
                    for (_, stream) in &self.streams {
                        if let Err(error) =
                            ensure_group(&mut c, stream, self.redis.op_timeout).await
                        {
                            warn!(%error, "cannot recreate the consumer group");
                            self.pause().await;
                        }
                    }
                    conn = Some(c);
                }
                Err(error) => {
                    debug!(%error, "stream read failed; reconnecting");
                    self.pause().await;
                }
            }
        }
    }

    async fn read_once(&self, conn: &mut RedisConn) -> RedisResult<Vec<(usize, StreamId)>> {
        // COUNT is per stream: spread one batch's worth over the streams read, so that a read
        // takes about a batch, not a batch from every partition (entries left in Redis stay
        // visible to the gateways' shedding as `lag`).
        let per_stream = READ_COUNT.div_ceil(self.streams.len().max(1));
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(per_stream)
            .arg("BLOCK")
            .arg(READ_BLOCK.as_millis() as u64)
            .arg("STREAMS");
        for (_, stream) in &self.streams {
            cmd.arg(stream);
        }
        for _ in &self.streams {
            cmd.arg(">");
        }
        let reply: Option<StreamReadReply> =
            bounded(self.redis.op_timeout + READ_BLOCK, cmd.query_async(conn)).await?;
        let partition_of = |key: &str| self.streams.iter().find(|(_, s)| s == key).map(|(p, _)| *p);
        Ok(reply
            .map(|r| {
                r.keys
                    .into_iter()
                    .filter_map(|k| partition_of(&k.key).map(|p| (p, k.ids)))
                    .flat_map(|(p, ids)| ids.into_iter().map(move |id| (p, id)))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn pause(&self) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
        }
    }
}

/// Claims entries whose batcher stopped acknowledging them, and dead-letters the ones that
/// keep coming back.
struct Claimer {
    conn: RedisConn,
    keys: Keys,
    partitions: Vec<usize>,
    consumer: String,
    config: RedisQueueConfig,
    op_timeout: Duration,
    tx: mpsc::Sender<Delivery>,
    leases: Leases,
    stop_reads: CancellationToken,
    stop: CancellationToken,
}

impl Claimer {
    /// Every third of the visibility timeout: renew our leases, then (unless reads are
    /// closed) claim what others left behind.
    async fn run(mut self) {
        let every = (self.config.visibility_timeout / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(error) = self.renew().await {
                warn!(%error, "renewing leases failed; slow batches may be claimed by others");
            }
            if self.stop_reads.is_cancelled() {
                continue;
            }
            for p in self.partitions.clone() {
                if let Err(error) = self.sweep(p).await {
                    debug!(%error, partition = p, "claim sweep failed");
                }
            }
        }
    }

    /// Resets the idle time of every entry we hold (JUSTID: delivery counts stay).
    async fn renew(&mut self) -> RedisResult<()> {
        for (partition, ids) in self.leases.snapshot() {
            bounded(
                self.op_timeout,
                redis::cmd("XCLAIM")
                    .arg(self.keys.stream(partition))
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(0)
                    .arg(&ids)
                    .arg("JUSTID")
                    .query_async::<Value>(&mut self.conn),
            )
            .await?;
        }
        Ok(())
    }

    async fn sweep(&mut self, partition: usize) -> RedisResult<()> {
        let stream = self.keys.stream(partition);
        let idle_ms = self.config.visibility_timeout.as_millis() as u64;
        let pending: StreamPendingCountReply = bounded(
            self.op_timeout,
            redis::cmd("XPENDING")
                .arg(&stream)
                .arg(GROUP)
                .arg("IDLE")
                .arg(idle_ms)
                .arg("-")
                .arg("+")
                .arg(READ_COUNT)
                .query_async(&mut self.conn),
        )
        .await?;
        if pending.ids.is_empty() {
            return Ok(());
        }
        let (dead, retry): (Vec<_>, Vec<_>) = pending
            .ids
            .into_iter()
            .partition(|e| e.times_delivered >= self.config.max_deliveries);
        let ids = |v: &[redis::streams::StreamPendingId]| -> Vec<String> {
            v.iter().map(|e| e.id.clone()).collect()
        };
        // Claim only what the local channel has room for: the claimer must never block, or
        // lease renewal (same loop) would stall. The rest waits for the next round.
        let mut retry = retry;
        retry.truncate(self.tx.capacity());
        if !retry.is_empty() {
            let claimed: StreamClaimReply = bounded(
                self.op_timeout,
                redis::cmd("XCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(idle_ms)
                    .arg(ids(&retry))
                    .query_async(&mut self.conn),
            )
            .await?;
            info!(
                partition,
                claimed = claimed.ids.len(),
                "claimed entries left by another batcher"
            );
            for d in claimed.ids.iter().filter_map(|e| delivery(partition, e)) {
                let receipt = d.receipt.clone();
                self.leases.hold(&receipt);
                if self.tx.try_send(d).is_err() {
                    // No room after all (a reader filled it): let the lease lapse, so the
                    // entry is claimed again in a later round.
                    self.leases.release(&[receipt]);
                    break;
                }
            }
        }
        if !dead.is_empty() {
            self.dead_letter(partition, &stream, &dead).await?;
        }
        Ok(())
    }

    /// Moves entries delivered too often to the dead-letter stream, writes their FAILED
    /// result, then acknowledges them (the result is stored before the ack).
    async fn dead_letter(
        &mut self,
        partition: usize,
        stream: &str,
        dead: &[redis::streams::StreamPendingId],
    ) -> RedisResult<()> {
        let ids: Vec<&str> = dead.iter().map(|e| e.id.as_str()).collect();
        let mut entries = Vec::with_capacity(ids.len());
        for id in &ids {
            let one: redis::streams::StreamRangeReply = bounded(
                self.op_timeout,
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(id)
                    .arg(id)
                    .query_async(&mut self.conn),
            )
            .await?;
            entries.extend(one.ids);
        }
        let now = unix_ms(SystemTime::now());
        for entry in &entries {
            let Some(meta) = dead.iter().find(|d| d.id == entry.id) else {
                continue;
            };
            let reason = format!(
                "dead-lettered: delivered {} times without completing",
                meta.times_delivered
            );
            let task = delivery(partition, entry).map(|d| d.task);
            let bytes = match entry.map.get("m") {
                Some(Value::BulkString(m)) => m.as_slice(),
                _ => &[],
            };
            let dlq = crate::dead_letters::xadd(
                &self.keys.dead_letter(),
                bytes,
                &reason,
                meta.times_delivered as u64,
                now,
            );
            bounded(self.op_timeout, dlq.query_async::<()>(&mut self.conn)).await?;
            if let Some(task) = &task {
                let completion = Completion {
                    task_id: task.task_id.clone(),
                    outcome: Outcome::Failed(reason.clone()),
                    completed_at: now,
                    reply_to: task.reply_to.clone(),
                };
                let key = self.keys.result(&task.task_id);
                let mut pipe = redis::pipe();
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg("status")
                    .arg("FAILED")
                    .arg("error")
                    .arg(&reason)
                    .arg("completed_at")
                    .arg(now)
                    .ignore();
                pipe.cmd("EXPIRE")
                    .arg(&key)
                    .arg(self.config.result_ttl.as_secs())
                    .ignore();
                bounded(self.op_timeout, pipe.query_async::<()>(&mut self.conn)).await?;
                if let Some(gateway) = &task.reply_to {
                    let channel = self.keys.notify_channel(gateway);
                    let _: RedisResult<()> = bounded(
                        self.op_timeout,
                        redis::cmd("PUBLISH")
                            .arg(channel)
                            .arg(
                                serde_json::to_string(&[Notice::of(&completion)])
                                    .unwrap_or_default(),
                            )
                            .query_async(&mut self.conn),
                    )
                    .await;
                }
            }
            warn!(entry = %entry.id, partition, deliveries = meta.times_delivered, "task dead-lettered");
        }
        let mut pipe = redis::pipe();
        pipe.cmd("XACK").arg(stream).arg(GROUP).arg(&ids).ignore();
        pipe.cmd("XDEL").arg(stream).arg(&ids).ignore();
        bounded(self.op_timeout, pipe.query_async::<()>(&mut self.conn)).await
    }
}
