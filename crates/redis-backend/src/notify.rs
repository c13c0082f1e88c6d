//! The gateway's subscription: completions published on its channels wake its local waiters.
//!
//! The settle script publishes a batch's results on the channel of every gateway that waits
//! for one of them (for each result its record's key and the final record as stored, see
//! [`parse_notices`]): the one named in the task's
//! `reply_to`, and any other that registered a long poll on the pending record. A waiter gets
//! its task's result from the message itself, without reading the store again. A process
//! that is also a batcher hands the results it writes for its own gateway to [`Notifier`]
//! directly instead (`crate::settle`).
//!
//! On a standalone Redis a gateway subscribes to one channel. On a cluster it subscribes,
//! with sharded pub/sub (`SSUBSCRIBE`), to one channel per partition on the master that
//! holds the partition's slot, so a notice never crosses the cluster bus. Subscriptions use
//! RESP3 connections whose pushes wake waiters directly. When a connection breaks or a slot
//! moves, everything is subscribed again from the current topology; every (re)subscription
//! then wakes every waiter to re-read the store once, so a notice published while the
//! subscription was down is never waited for in vain.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::Output;
use batchgate_store::memory::TaskId;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Value};
use smallvec::SmallVec;
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::conn::{bounded, RedisConfig};
use crate::keys::Keys;
use crate::record;

/// Pause before subscribing again after a failure.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(250);
/// How often subscriptions are checked (PING) and closed waiters pruned.
const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// One task's result as published to its gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// Which task.
    pub task_id: String,
    /// `SUCCESS` or `FAILED`.
    pub status: TaskStatus,
    /// The output, on success.
    pub output: Option<Output>,
    /// The reason, on failure.
    pub error: Option<String>,
    /// When the result was stored, ms since the Unix epoch.
    pub completed_at: u64,
}

/// Reads a message of notices as the settle script publishes it: a MessagePack array of
/// strings, for each result its record's key (ending in the task id, [`Keys::result`]) then
/// the final record as stored (`crate::record`); so the script is never given a result's
/// bytes twice. `None` if the message is not one.
pub(crate) fn parse_notices(message: &[u8]) -> Option<Vec<Notice>> {
    let mut packed = Packed(message);
    let items = packed.array_len()?;
    if items % 2 != 0 {
        return None;
    }
    let mut notices = Vec::with_capacity(items / 2);
    for _ in 0..items / 2 {
        let key = packed.bytes()?;
        notices.push(Notice::of(Keys::task_of_result(key)?, packed.bytes()?)?);
    }
    packed.0.is_empty().then_some(notices)
}

impl Notice {
    /// The notice of task `task_id` whose final record (`crate::record`) is `record`; `None`
    /// if the record is not final.
    pub(crate) fn of(task_id: String, record: &[u8]) -> Option<Notice> {
        let r = record::parse(record)?;
        if !r.status.is_terminal() {
            return None;
        }
        Some(Notice {
            task_id,
            status: r.status,
            output: r.output,
            error: r.error,
            completed_at: r.completed_at?,
        })
    }
}

/// Packs a message of notices as [`parse_notices`] reads it and as the settle script's
/// `cmsgpack.pack` makes it: a MessagePack array of strings (str8/16/32 by length), for each
/// result its record's key then the final record. The batcher packs the notices of the
/// results it writes without the script (see `crate::settle`).
pub(crate) fn pack_notices(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + items.iter().map(|i| i.len() + 5).sum::<usize>());
    let n = items.len();
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xdc);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    for item in items {
        let len = item.len();
        if len < 32 {
            out.push(0xa0 | len as u8);
        } else if let Ok(len) = u8::try_from(len) {
            out.extend_from_slice(&[0xd9, len]);
        } else if let Ok(len) = u16::try_from(len) {
            out.push(0xda);
            out.extend_from_slice(&len.to_be_bytes());
        } else {
            out.push(0xdb);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
        out.extend_from_slice(item);
    }
    out
}

/// The MessagePack that Redis's `cmsgpack.pack` makes of an array of strings: what a
/// notice holds, and nothing more.
struct Packed<'a>(&'a [u8]);

impl<'a> Packed<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    /// A big-endian unsigned number of `n` bytes.
    fn number(&mut self, n: usize) -> Option<usize> {
        let bytes = self.take(n)?;
        Some(bytes.iter().fold(0usize, |v, &b| (v << 8) | usize::from(b)))
    }

    fn array_len(&mut self) -> Option<usize> {
        match *self.take(1)?.first()? {
            b @ 0x90..=0x9f => Some(usize::from(b & 0x0f)),
            0xdc => self.number(2),
            0xdd => self.number(4),
            _ => None,
        }
    }

    /// A str or bin.
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = match *self.take(1)?.first()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            0xd9 | 0xc4 => self.number(1)?,
            0xda | 0xc5 => self.number(2)?,
            0xdb | 0xc6 => self.number(4)?,
            _ => return None,
        };
        self.take(len)
    }
}

/// What a waiter is woken with.
#[derive(Debug, Clone, PartialEq)]
pub enum Wake {
    /// Its task's result.
    Done(Notice),
    /// The subscription was (re)made: a notice may have been missed, read the store once.
    Recheck,
}

/// Waiters by task: the id packed when canonical (see [`TaskId`]), and nearly always one
/// waiter, kept without a vector of its own. SipHash: a GET may wait on any id a client
/// names.
type Waiters = HashMap<TaskId, SmallVec<[oneshot::Sender<Wake>; 1]>>;

/// Local waiters by task id, woken by messages on this gateway's channels.
#[derive(Debug, Default)]
pub struct Notifier {
    /// A waiter that timed out leaves a closed sender, removed on the next notice of that id
    /// or by [`Notifier::prune`].
    waiters: Mutex<Waiters>,
}

impl Notifier {
    /// Registers interest in `task_id`; the receiver gets the task's notice, or a recheck.
    pub fn register(&self, task_id: &str) -> oneshot::Receiver<Wake> {
        let (tx, rx) = oneshot::channel();
        self.lock()
            .entry(TaskId::new(task_id))
            .or_default()
            .push(tx);
        rx
    }

    /// Hands each notice of `message` ([`parse_notices`]) to the waiters of its task.
    pub fn wake(&self, message: &[u8]) {
        let Some(notices) = parse_notices(message) else {
            debug!(bytes = message.len(), "bad notification payload");
            return;
        };
        self.deliver(notices);
    }

    /// Wakes the waiters of each notice's task. The settle calls it directly for the results
    /// of this process's own gateway, once they are stored: those notices are not published
    /// (see `crate::settle`).
    pub(crate) fn deliver(&self, notices: impl IntoIterator<Item = Notice>) {
        let mut waiters = self.lock();
        for notice in notices {
            let Some(mut senders) = waiters.remove(&TaskId::new(&notice.task_id)) else {
                continue;
            };
            // Nearly always one waiter: it gets the notice itself, not a copy.
            let last = senders.pop();
            for tx in senders {
                let _ = tx.send(Wake::Done(notice.clone()));
            }
            if let Some(tx) = last {
                let _ = tx.send(Wake::Done(notice));
            }
        }
    }

    /// Wakes every waiter to re-read the store (after a (re)subscription).
    pub fn recheck_all(&self) {
        let waiters = std::mem::take(&mut *self.lock());
        for tx in waiters.into_values().flatten() {
            let _ = tx.send(Wake::Recheck);
        }
    }

    /// Drops registrations whose waiters have all gone; keeps the map bounded by live waits.
    pub fn prune(&self) {
        self.lock().retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
    }

    /// How many tasks have waiters.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no task has a waiter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to the channels of gateway `gateway_id` and wakes waiters until `stop`,
    /// subscribing again (from the current topology) whenever a connection breaks.
    pub async fn run(
        self: Arc<Self>,
        redis: RedisConfig,
        keys: Keys,
        gateway_id: String,
        stop: CancellationToken,
    ) {
        while !stop.is_cancelled() {
            let lost = Arc::new(Notify::new());
            let subscribed = tokio::select! {
                _ = stop.cancelled() => return,
                s = self.subscribe(&redis, &keys, &gateway_id, &lost) => s,
            };
            let mut connections = match subscribed {
                Ok(c) => c,
                Err(error) => {
                    debug!(%error, "notification subscription failed; retrying");
                    pause(&stop).await;
                    continue;
                }
            };
            // Anything published while we were not subscribed is read from the store.
            self.recheck_all();
            info!(
                gateway = %gateway_id,
                connections = connections.len(),
                "subscribed to completion notifications"
            );
            let mut health = tokio::time::interval(HEALTH_EVERY);
            health.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = lost.notified() => {
                        warn!("notification subscription lost; subscribing again");
                        break;
                    }
                    _ = health.tick() => {
                        self.prune();
                        if !alive(&mut connections, redis.op_timeout).await {
                            warn!("notification connection not answering; subscribing again");
                            break;
                        }
                    }
                }
            }
            pause(&stop).await;
        }
    }

    /// Opens the subscriptions: one connection on a standalone Redis, one per master holding
    /// a partition on a cluster.
    async fn subscribe(
        self: &Arc<Self>,
        redis: &RedisConfig,
        keys: &Keys,
        gateway_id: &str,
        lost: &Arc<Notify>,
    ) -> redis::RedisResult<Vec<MultiplexedConnection>> {
        let seed = redis.client(&redis.urls[0])?;
        let mut plan: BTreeMap<Option<(String, u16)>, Vec<String>> = BTreeMap::new();
        if redis.cluster {
            let masters = slot_masters(redis).await?;
            for p in 0..keys.partitions() {
                let slot = keys.partition_slot(p);
                let node = masters
                    .iter()
                    .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
                    .map(|(_, _, node)| node.clone())
                    .ok_or_else(|| {
                        redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "cluster slot without a master",
                        ))
                    })?;
                let channel = format!("{}{gateway_id}", keys.notify_prefix(Some(p)));
                plan.entry(Some(node)).or_default().push(channel);
            }
        } else {
            plan.insert(None, vec![keys.notify_channel(gateway_id)]);
        }
        let mut connections = Vec::with_capacity(plan.len());
        for (node, channels) in plan {
            let info = match node {
                Some((host, port)) => redis.node_info(&seed, host, port)?,
                None => seed.get_connection_info().clone(),
            };
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            let client = redis::Client::open(info.set_redis_settings(settings))?;
            let (notifier, lost) = (self.clone(), lost.clone());
            let on_push = move |push: PushInfo| -> Result<(), ()> {
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        if let Some(Value::BulkString(payload)) = push.data.get(1) {
                            notifier.wake(payload);
                        }
                    }
                    PushKind::Disconnection | PushKind::SUnsubscribe | PushKind::Unsubscribe => {
                        lost.notify_one();
                    }
                    _ => {}
                }
                Ok(())
            };
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(redis.op_timeout))
                .set_response_timeout(Some(redis.op_timeout))
                .set_push_sender(on_push);
            let mut conn = bounded(
                redis.op_timeout,
                client.get_multiplexed_async_connection_with_config(&config),
            )
            .await?;
            // One command per channel: a sharded subscription cannot span slots.
            let command = if redis.cluster {
                "SSUBSCRIBE"
            } else {
                "SUBSCRIBE"
            };
            for channel in &channels {
                bounded(
                    redis.op_timeout,
                    redis::cmd(command).arg(channel).exec_async(&mut conn),
                )
                .await?;
            }
            connections.push(conn);
        }
        Ok(connections)
    }
}

/// Whether every subscription connection still answers.
async fn alive(connections: &mut [MultiplexedConnection], limit: Duration) -> bool {
    for conn in connections {
        let pong: redis::RedisResult<Value> =
            bounded(limit, redis::cmd("PING").query_async(conn)).await;
        if pong.is_err() {
            return false;
        }
    }
    true
}

/// The cluster's slot ranges and the master serving each: `(first, last, (host, port))`.
async fn slot_masters(redis: &RedisConfig) -> redis::RedisResult<Vec<(u16, u16, (String, u16))>> {
    let mut errors = Vec::new();
    for url in &redis.urls {
        let client = redis.client(url)?;
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Vec<Value>>(&mut conn)
                .await
        };
        match bounded(redis.op_timeout, attempt).await {
            Ok(ranges) => return Ok(crate::topology::parse_slots(&ranges)),
            Err(error) => errors.push(error),
        }
    }
    Err(errors.pop().unwrap_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Client, "no cluster seed node"))
    }))
}

async fn pause(stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(RESUBSCRIBE_PAUSE) => {}
    }
}

#[cfg(test)]
mod tests;
