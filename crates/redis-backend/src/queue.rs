//! The task queue on Redis Streams: one stream per partition, one consumer group.
//!
//! - `enqueue`/`requeue`: a script adds the entry unless the partition holds its share of the
//!   capacity (admission itself goes through [`crate::intake`], gathered per group of tasks).
//! - reading: stream readers ([`crate::reader`]) take batch-sized reads into a small local
//!   channel, which `read` drains: a batch for each worker slot the batcher could fill now
//!   (`Queue::read_ahead`, at most [`READ_AHEAD`]), a quarter batch while every slot is
//!   busy. Past it the readers stop, so entries stay in Redis — visible in `depth` and in the
//!   gateways' estimate of the queue's wait — rather than here.
//! - `settle`: one script per master (one per batch on a standalone Redis) stores the
//!   results, publishes the notices and acknowledges and deletes the entries, the ack last
//!   ([`crate::settle`]): streams hold only waiting and in-progress tasks, and an entry is
//!   never acknowledged without its result, nor acknowledged and left behind.
//! - leases: a live batcher renews its entries and its heartbeat ([`crate::leases`]).
//! - recovery: entries of batchers that are gone are claimed, entries delivered too often
//!   are dead-lettered, departed consumers removed ([`crate::claimer`]).
//! - drain: `close_reads` stops the readers and the claimer, then reads back the entries
//!   Redis delivered to this batcher that it never saw (a read cut short), so that `read`
//!   hands them out too rather than leaving them for the visibility timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::task::Task;
use batchgate_queue::{Backlog, Delivery, Queue, QueueError, Receipt};
use batchgate_store::{Completion, ResultStore, StoreError};
use redis::streams::StreamReadReply;
use redis::Script;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::claimer::Claimer;
use crate::conn::{bounded, RedisConfig, RedisConn};
use crate::depth;
use crate::describe;
use crate::entry::{deliveries, fetch_groups, Overflow};
use crate::keys::{Keys, GROUP};
use crate::leases::{Clock, Leases, Renewer};
use crate::local_groups::LocalGroups;
use crate::notify::Notifier;
use crate::reader::{flatten, ReadAhead, StreamReader, READ_BLOCK};
use crate::settle::Settler;

/// Default time an entry may stay unacknowledged before another batcher claims it.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deliveries of one entry before it goes to the dead-letter stream.
pub const DEFAULT_MAX_DELIVERIES: usize = 5;
/// Default idle time after which the consumer of a departed batcher is removed.
pub const DEFAULT_CONSUMER_IDLE_LIMIT: Duration = Duration::from_secs(600);
/// Most tasks the readers hold read ahead for the batcher: four batches of the default size.
/// Within it the batcher sets the limit ([`Queue::read_ahead`]): a batch for each of its
/// worker slots it could fill now, a quarter batch while none is free. With one batch (64)
/// always, a standalone reader — a read and a fetch per refill, entries of ~80 tasks that did
/// not fit at once — refilled one entry per round trip while free slots waited for tasks
/// (at 11,000/s offered on a busy machine: 9,400/s through, 70% of the slots in calls). With
/// 256 always, tasks waited unseen in the
/// channel while every slot was busy, out of the gateways' estimate of the queue's wait.
/// Counting them in that estimate did not help: at 3× a 2-slot worker's capacity the queue
/// then held too little to keep both slots in calls, the slots no longer looked busy, and
/// shedding stopped by turns (p99 1.2–1.4 s, against ≈ 0.5 s with one batch).
const READ_AHEAD: usize = 256;
/// The read-ahead until the batcher says otherwise: one batch of the default size.
const FIRST_READ_AHEAD: usize = 64;
/// Entries read back per command at the drain.
const READ_BACK_COUNT: usize = 64;
/// Longest pause between reads that found only a few entries.
const MAX_READ_PACE: Duration = Duration::from_millis(20);
/// Pause between sparse reads per stream reader.
const READ_PACE: Duration = Duration::from_millis(2);
/// Most own pending entries read back at the drain.
const DRAIN_READ_BACK: usize = 10_000;

/// The queue's settings.
#[derive(Debug, Clone)]
pub struct RedisQueueConfig {
    /// Most tasks in all partitions together (each partition takes its share).
    pub capacity: usize,
    /// Idle time after which an entry of a batcher without a heartbeat is claimed.
    pub visibility_timeout: Duration,
    /// Deliveries after which an entry is dead-lettered.
    pub max_deliveries: usize,
    /// Which partitions this process reads (all when empty).
    pub read_partitions: Vec<usize>,
    /// Lifetime of a stored result.
    pub result_ttl: Duration,
    /// Idle time after which a consumer with nothing pending and no heartbeat leaves the
    /// group.
    pub consumer_idle_limit: Duration,
}

impl Default for RedisQueueConfig {
    fn default() -> Self {
        RedisQueueConfig {
            capacity: 50_000,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            read_partitions: Vec::new(),
            result_ttl: Duration::from_secs(600),
            consumer_idle_limit: DEFAULT_CONSUMER_IDLE_LIMIT,
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
    /// Stores results and acknowledges entries in one step.
    settler: Settler,
    /// The local end of the readers, created by the first `read`.
    delivered: tokio::sync::OnceCell<tokio::sync::Mutex<mpsc::Receiver<Delivery>>>,
    /// Tasks read (or read back at the drain) that the channel could not take before the
    /// reads stopped, handed out by `read` first.
    read_back: Overflow,
    /// The readers' end of the local channel, to tell how much it holds; weak, so that the
    /// channel still closes when the readers stop.
    holding: std::sync::OnceLock<mpsc::WeakSender<Delivery>>,
    /// How much the readers may hold.
    ahead: Arc<ReadAhead>,
    /// Readers and claimer, awaited by `close_reads`.
    feeders: Mutex<Vec<JoinHandle<()>>>,
    /// Entries handed to the batcher and not settled yet, whose leases we keep alive.
    leases: Leases,
    /// Redis's clock, for queue ages.
    clock: Clock,
    /// Stops the readers and the claiming of others' entries (`close_reads`).
    stop_reads: CancellationToken,
    /// Stops everything, lease renewal included (on drop).
    stop: CancellationToken,
    /// The groups this process's intake kept for these reads (see `crate::local_groups`).
    local: LocalGroups,
}

impl Drop for RedisQueue {
    fn drop(&mut self) {
        self.stop_reads.cancel();
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
            settler: Settler::new(
                conn.clone(),
                keys.clone(),
                config.result_ttl,
                redis.cluster,
                redis.op_timeout,
            ),
            conn,
            redis,
            keys,
            config,
            consumer,
            enqueue: Script::new(include_str!("lua/enqueue.lua")),
            delivered: tokio::sync::OnceCell::new(),
            read_back: Overflow::default(),
            holding: std::sync::OnceLock::new(),
            ahead: ReadAhead::new(FIRST_READ_AHEAD),
            feeders: Mutex::new(Vec::new()),
            leases: Leases::default(),
            clock: Clock::default(),
            stop_reads: CancellationToken::new(),
            stop: CancellationToken::new(),
            local: LocalGroups::default(),
        }
    }

    /// The queue of a process that is also gateway `name`, whose waiters `notifier` wakes:
    /// the results of its own tasks wake them directly once stored, without a notice through
    /// Redis (see `crate::settle`).
    pub fn with_local_gateway(mut self, notifier: Arc<Notifier>, name: String) -> Self {
        self.settler = self.settler.clone().with_local_gateway(notifier, name);
        self
    }

    /// The queue of a process whose intake keeps the groups it admits in `local` (shared
    /// with [`RedisIntake::local_groups`](crate::RedisIntake::local_groups)): the reads take
    /// those groups' tasks from there instead of fetching and decoding them.
    pub fn with_local_groups(mut self, local: LocalGroups) -> Self {
        self.local = local;
        self
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

    /// The stream groups each reader serves: all in one on a standalone Redis, one each on a
    /// cluster.
    fn reader_streams(&self) -> Vec<Vec<(usize, String)>> {
        let streams: Vec<(usize, String)> = self
            .partitions_read()
            .iter()
            .map(|&p| (p, self.keys.stream(p)))
            .collect();
        if self.redis.cluster {
            streams.into_iter().map(|s| vec![s]).collect()
        } else {
            vec![streams]
        }
    }

    async fn start_readers(&self) -> tokio::sync::Mutex<mpsc::Receiver<Delivery>> {
        self.local.start();
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let _ = self.holding.set(tx.downgrade());
        let mut conn = self.conn.clone();
        if let Err(error) = self.clock.sync(&mut conn, self.redis.op_timeout).await {
            warn!(%error, "cannot read Redis's clock yet; queue ages use this process's");
        }
        tokio::spawn(
            Renewer {
                conn: self.conn.clone(),
                keys: self.keys.clone(),
                consumer: self.consumer.clone(),
                visibility_timeout: self.config.visibility_timeout,
                op_timeout: self.redis.op_timeout,
                leases: self.leases.clone(),
                clock: self.clock.clone(),
                stop: self.stop.clone(),
            }
            .run(),
        );
        let groups = self.reader_streams();
        let pace = (READ_PACE * groups.len() as u32).min(MAX_READ_PACE);
        let mut feeders = Vec::new();
        for streams in groups {
            let reader = StreamReader {
                redis: self.redis.clone(),
                leases: self.leases.clone(),
                clock: self.clock.clone(),
                streams,
                consumer: self.consumer.clone(),
                tx: tx.clone(),
                ahead: self.ahead.clone(),
                stop: self.stop_reads.clone(),
                pace,
                overflow: self.read_back.clone(),
                heads: self.settler.heads().clone(),
                zone: self.keys.zone().cloned(),
                local: self.local.clone(),
            };
            feeders.push(tokio::spawn(reader.run()));
        }
        let claimer = Claimer {
            conn: self.conn.clone(),
            keys: self.keys.clone(),
            partitions: self.partitions_read(),
            consumer: self.consumer.clone(),
            config: self.config.clone(),
            op_timeout: self.redis.op_timeout,
            tx,
            leases: self.leases.clone(),
            clock: self.clock.clone(),
            settler: self.settler.clone(),
            overflow: self.read_back.clone(),
            stop: self.stop_reads.clone(),
        };
        feeders.push(tokio::spawn(claimer.run()));
        *self.feeders.lock().unwrap_or_else(|p| p.into_inner()) = feeders;
        info!(consumer = %self.consumer, partitions = self.partitions_read().len(), "stream readers started");
        tokio::sync::Mutex::new(rx)
    }

    fn unavailable(error: &redis::RedisError) -> QueueError {
        QueueError::Unavailable(describe(error))
    }

    async fn add(&self, task: &Task, first_queued_ms: Option<u64>) -> Result<(), QueueError> {
        let partition = self.keys.partition_of(&task.task_id);
        let mut call = self.enqueue.prepare_invoke();
        call.key(self.keys.stream(partition))
            .arg(self.per_partition_capacity())
            .arg(task.to_bytes());
        if let Some(ms) = first_queued_ms {
            call.arg(ms);
        }
        let mut conn = self.conn.clone();
        let added: Option<String> = bounded(self.redis.op_timeout, call.invoke_async(&mut conn))
            .await
            .map_err(|e| Self::unavailable(&e))?;
        match added {
            Some(_) => Ok(()),
            None => Err(QueueError::Full {
                capacity: self.config.capacity,
            }),
        }
    }

    /// Tasks the readers hold read ahead for the batcher (read from the streams, not handed
    /// out yet).
    pub fn held(&self) -> usize {
        let in_channel = self
            .holding
            .get()
            .and_then(mpsc::WeakSender::upgrade)
            .map_or(0, |tx| tx.max_capacity() - tx.capacity());
        let read_back = self
            .read_back
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        in_channel + read_back
    }

    /// Reads back this consumer's pending entries that it does not hold: delivered by Redis
    /// to a read that was cut short, never seen here.
    async fn read_back_unseen(&self) -> Vec<Delivery> {
        let mut found = Vec::new();
        for streams in self.reader_streams() {
            for (partition, stream) in streams {
                let mut after = "0".to_owned();
                while found.len() < DRAIN_READ_BACK {
                    let mut conn = self.conn.clone();
                    let reply: Result<Option<StreamReadReply>, _> = bounded(
                        self.redis.op_timeout,
                        redis::cmd("XREADGROUP")
                            .arg("GROUP")
                            .arg(GROUP)
                            .arg(&self.consumer)
                            .arg("COUNT")
                            .arg(READ_BACK_COUNT)
                            .arg("STREAMS")
                            .arg(&stream)
                            .arg(&after)
                            .query_async(&mut conn),
                    )
                    .await;
                    let mut entries = match reply {
                        Ok(reply) => flatten(&[(partition, stream.clone())], reply),
                        Err(error) => {
                            warn!(%error, partition, "cannot read back pending entries at the drain");
                            break;
                        }
                    };
                    let Some((_, last)) = entries.last() else {
                        break;
                    };
                    after = last.id.clone();
                    let mut conn = self.conn.clone();
                    if let Err(error) = fetch_groups(
                        &mut conn,
                        self.redis.op_timeout,
                        entries.iter_mut().map(|(_, e)| e),
                    )
                    .await
                    {
                        warn!(%error, partition, "cannot read back pending entries at the drain");
                        break;
                    }
                    for (p, entry) in &entries {
                        if self.leases.holds(*p, &entry.id) {
                            continue;
                        }
                        let tasks = deliveries(
                            *p,
                            entry,
                            None,
                            &self.clock,
                            self.settler.heads(),
                            self.keys.zone(),
                        );
                        if !tasks.is_empty() {
                            self.leases.hold(*p, entry, tasks.len());
                            found.extend(tasks);
                        }
                    }
                }
            }
        }
        found
    }
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(&self, task: Task) -> Result<(), QueueError> {
        self.add(&task, None).await
    }

    async fn requeue(&self, delivery: Delivery) -> Result<(), QueueError> {
        let first = self.clock.redis_ms(delivery.queued_at);
        self.add(&delivery.task, Some(first)).await
    }

    async fn read(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, QueueError> {
        let rx = self
            .delivered
            .get_or_init(|| async { self.start_readers().await })
            .await;
        let mut rx = rx.lock().await;
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        {
            let mut read_back = self.read_back.lock().unwrap_or_else(|p| p.into_inner());
            let n = read_back.len().min(max);
            out.extend(read_back.drain(..n));
        }
        if out.is_empty() {
            match tokio::time::timeout(block, rx.recv()).await {
                Ok(Some(first)) => out.push(first),
                Ok(None) | Err(_) => return Ok(out),
            }
        }
        while out.len() < max {
            match rx.try_recv() {
                Ok(d) => out.push(d),
                Err(_) => break,
            }
        }
        self.ahead.taken();
        Ok(out)
    }

    async fn ack(&self, receipts: &[Receipt]) -> Result<(), QueueError> {
        // An entry is acknowledged once every task it holds is finished.
        let acks = self.leases.finish(receipts);
        let acked = self.settler.settle(&[], &acks).await;
        if acked.is_err() {
            self.leases.spoil(receipts);
        }
        acked.map(|_| ()).map_err(|e| Self::unavailable(&e))
    }

    async fn settle(
        &self,
        _results: &dyn ResultStore,
        completions: Vec<Completion>,
        receipts: &[Receipt],
    ) -> Result<(), StoreError> {
        // Results go through the same script whichever store the caller holds: writing and
        // acknowledging are one step here. An entry is acknowledged with the last of its
        // tasks; until then it stays held and renewed. Not settled: the entries lapse to our
        // own claimer after the visibility timeout, and run again.
        let acks = self.leases.finish(receipts);
        let settled = self.settler.settle(&completions, &acks).await;
        if settled.is_err() {
            self.leases.spoil(receipts);
        }
        settled
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(describe(&e)))
    }

    fn read_ahead(&self, tasks: usize) {
        self.ahead.set(tasks.min(READ_AHEAD));
    }

    async fn depth(&self) -> Result<Vec<usize>, QueueError> {
        depth::depth(&self.conn, &self.keys, self.redis.op_timeout)
            .await
            .map_err(|e| Self::unavailable(&e))
    }

    async fn backlog(&self) -> Result<Option<Backlog>, QueueError> {
        depth::backlog(&self.conn, &self.keys, self.redis.op_timeout)
            .await
            .map_err(|e| Self::unavailable(&e))
    }

    async fn abandon(&self, receipts: &[Receipt]) {
        // Only ever after a settle that failed, which counted these tasks as finished and
        // marked their entries: those are renewed while other tasks of them are out, then
        // lapse to our own claimer and run again, never acknowledged here.
        self.leases.spoil(receipts);
    }

    async fn close_reads(&self) {
        self.stop_reads.cancel();
        if self.delivered.get().is_none() {
            return;
        }
        let feeders = std::mem::take(&mut *self.feeders.lock().unwrap_or_else(|p| p.into_inner()));
        let limit = self.redis.op_timeout + READ_BLOCK;
        for feeder in feeders {
            if tokio::time::timeout(limit, feeder).await.is_err() {
                warn!("a stream reader did not stop in time");
            }
        }
        let unseen = self.read_back_unseen().await;
        if !unseen.is_empty() {
            info!(
                entries = unseen.len(),
                "read back entries delivered to a read cut short by the drain"
            );
        }
        self.read_back
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(unseen);
    }
}
