//! Recovery: entries whose batcher died are claimed by a live one; entries that keep coming
//! back are dead-lettered; consumers of batchers long gone leave the group.
//!
//! An entry is claimed only if it has been idle past the visibility timeout *and* the
//! batcher holding it has no heartbeat (see [`crate::leases`]) — or it is this batcher's own
//! and no longer held (its batch could not be settled, or a read's reply was lost).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use batchgate_protocol::task::unix_ms;
use batchgate_queue::Delivery;
use batchgate_store::{Completion, Outcome};
use redis::streams::{
    StreamClaimReply, StreamId, StreamPendingCountReply, StreamPendingId, StreamRangeReply,
};
use redis::{RedisResult, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::conn::{bounded, RedisConn};
use crate::entry::{deliveries, fetch_groups, group_key, hand_out, messages, Overflow};
use crate::keys::{Keys, GROUP};
use crate::leases::{Ack, Clock, Leases};
use crate::queue::RedisQueueConfig;
use crate::settle::Settler;

/// Pending entries one sweep of a partition looks at.
const SWEEP_COUNT: usize = 256;
/// Every how many sweeps the group's consumers are checked for departed batchers.
const CONSUMER_CHECK_EVERY: u64 = 10;

pub(crate) struct Claimer {
    pub(crate) conn: RedisConn,
    pub(crate) keys: Keys,
    pub(crate) partitions: Vec<usize>,
    pub(crate) consumer: String,
    pub(crate) config: RedisQueueConfig,
    pub(crate) op_timeout: Duration,
    pub(crate) tx: mpsc::Sender<Delivery>,
    pub(crate) leases: Leases,
    pub(crate) clock: Clock,
    pub(crate) settler: Settler,
    /// Where claimed tasks go that the channel could not take before the reads stopped.
    pub(crate) overflow: Overflow,
    /// Stops claiming (`close_reads`, or the queue dropped).
    pub(crate) stop: CancellationToken,
}

impl Claimer {
    pub(crate) async fn run(mut self) {
        let every = (self.config.visibility_timeout / 3).max(Duration::from_millis(50));
        let mut round = 0u64;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            for p in self.partitions.clone() {
                if self.stop.is_cancelled() {
                    return;
                }
                if let Err(error) = self.sweep(p).await {
                    debug!(%error, partition = p, "claim sweep failed");
                }
                if round % CONSUMER_CHECK_EVERY == 0 {
                    if let Err(error) = self.remove_departed(p).await {
                        debug!(%error, partition = p, "consumer check failed");
                    }
                }
            }
            round += 1;
        }
    }

    /// Whether `consumer`'s entries may be taken: its batcher is gone, or it is this one
    /// and the entry is no longer held.
    async fn claimable(
        &mut self,
        entry: &StreamPendingId,
        partition: usize,
        alive: &mut HashMap<String, bool>,
    ) -> RedisResult<bool> {
        if entry.consumer == self.consumer {
            return Ok(!self.leases.holds(partition, &entry.id));
        }
        if let Some(&live) = alive.get(&entry.consumer) {
            return Ok(!live);
        }
        let live: bool = bounded(
            self.op_timeout,
            redis::cmd("EXISTS")
                .arg(self.keys.alive(&entry.consumer))
                .query_async(&mut self.conn),
        )
        .await?;
        alive.insert(entry.consumer.clone(), live);
        Ok(!live)
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
                .arg(SWEEP_COUNT)
                .query_async(&mut self.conn),
        )
        .await?;
        let mut alive = HashMap::new();
        let mut takeable = Vec::new();
        for entry in pending.ids {
            if self.claimable(&entry, partition, &mut alive).await? {
                takeable.push(entry);
            }
        }
        if takeable.is_empty() {
            return Ok(());
        }
        let (dead, mut retry): (Vec<_>, Vec<_>) = takeable
            .into_iter()
            .partition(|e| e.times_delivered >= self.config.max_deliveries);
        // Claim only what the local channel has room for; the rest waits for the next round.
        retry.truncate(self.tx.capacity());
        if !retry.is_empty() {
            let ids: Vec<&str> = retry.iter().map(|e| e.id.as_str()).collect();
            let claimed: StreamClaimReply = bounded(
                self.op_timeout,
                redis::cmd("XCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(idle_ms)
                    .arg(&ids)
                    .query_async(&mut self.conn),
            )
            .await?;
            info!(
                partition,
                claimed = claimed.ids.len(),
                "claimed entries left by a batcher that is gone"
            );
            let mut claimed: Vec<(usize, StreamId)> =
                claimed.ids.into_iter().map(|e| (partition, e)).collect();
            fetch_groups(
                &mut self.conn,
                self.op_timeout,
                claimed.iter_mut().map(|(_, e)| e),
            )
            .await?;
            for (_, entry) in &claimed {
                let handed = deliveries(
                    partition,
                    entry,
                    None,
                    &self.clock,
                    self.settler.heads(),
                    self.keys.zone(),
                );
                let sent = hand_out(
                    partition,
                    entry,
                    handed,
                    &self.leases,
                    &self.tx,
                    &self.stop,
                    &self.overflow,
                )
                .await;
                if !sent {
                    // Stopped: the entries claimed and not handed out are not held, and
                    // lapse to a claimer again.
                    break;
                }
            }
        }
        if !dead.is_empty() {
            self.dead_letter(partition, &stream, &dead).await?;
        }
        Ok(())
    }

    /// Moves entries delivered too often to the dead-letter stream, then settles them as
    /// FAILED (never over a SUCCESS) with their acknowledgement, in the one settle script.
    async fn dead_letter(
        &mut self,
        partition: usize,
        stream: &str,
        dead: &[StreamPendingId],
    ) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        for entry in dead {
            pipe.cmd("XRANGE").arg(stream).arg(&entry.id).arg(&entry.id);
        }
        let ranges: Vec<StreamRangeReply> =
            bounded(self.op_timeout, pipe.query_async(&mut self.conn)).await?;
        let mut found: Vec<(usize, StreamId)> = ranges
            .into_iter()
            .map(|r| (partition, r.ids.into_iter().next().unwrap_or_default()))
            .collect();
        fetch_groups(
            &mut self.conn,
            self.op_timeout,
            found.iter_mut().map(|(_, e)| e),
        )
        .await?;
        let now = unix_ms(SystemTime::now());
        let mut completions = Vec::new();
        let mut acks = Vec::new();
        for (meta, (_, entry)) in dead.iter().zip(&found) {
            // Every dead entry is acknowledged, also one whose message was gone or unreadable.
            let mut ack = Ack {
                partition,
                entry_id: meta.id.clone(),
                tasks: 1,
                group: group_key(entry),
            };
            if entry.id.is_empty() {
                acks.push(ack);
                continue;
            }
            let reason = format!(
                "dead-lettered: delivered {} times without completing",
                meta.times_delivered
            );
            let messages = messages(entry);
            // An entry whose messages are gone still names its tasks (`i`): they fail too,
            // rather than stay pending.
            let lost = if messages.is_empty() {
                crate::entry::admitted_ids(entry)
            } else {
                Vec::new()
            };
            ack.tasks = messages.len().max(lost.len()).max(1);
            for task_id in lost {
                completions.push(Completion {
                    task_id,
                    outcome: Outcome::Failed(format!("{reason}; its message was gone")),
                    completed_at: now,
                    reply_to: None,
                });
            }
            let mut pipe = redis::pipe();
            for bytes in &messages {
                pipe.add_command(crate::dead_letters::xadd(
                    &self.keys.dead_letter(),
                    bytes,
                    &reason,
                    meta.times_delivered as u64,
                    now,
                ))
                .ignore();
            }
            if !messages.is_empty() {
                bounded(self.op_timeout, pipe.exec_async(&mut self.conn)).await?;
            }
            for d in deliveries(
                partition,
                entry,
                None,
                &self.clock,
                self.settler.heads(),
                self.keys.zone(),
            ) {
                completions.push(Completion {
                    task_id: d.task.task_id,
                    outcome: Outcome::Failed(reason.clone()),
                    completed_at: now,
                    reply_to: d.task.reply_to,
                });
            }
            acks.push(ack);
            warn!(entry = %entry.id, partition, tasks = messages.len(), deliveries = meta.times_delivered, "tasks dead-lettered");
        }
        self.settler.settle(&completions, &acks).await.map(|_| ())
    }

    /// Removes from the group the consumers of batchers that are gone: nothing pending,
    /// idle past the configured bound, and no heartbeat.
    async fn remove_departed(&mut self, partition: usize) -> RedisResult<()> {
        let stream = self.keys.stream(partition);
        let consumers: Vec<HashMap<String, Value>> = bounded(
            self.op_timeout,
            redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&stream)
                .arg(GROUP)
                .query_async(&mut self.conn),
        )
        .await?;
        let limit = self.config.consumer_idle_limit.as_millis() as u64;
        for c in consumers {
            let text = |f: &str| c.get(f).and_then(crate::value_text);
            let number = |f: &str| match c.get(f) {
                Some(Value::Int(i)) => u64::try_from(*i).ok(),
                _ => None,
            };
            let (Some(name), Some(pending), Some(idle)) =
                (text("name"), number("pending"), number("idle"))
            else {
                continue;
            };
            if name == self.consumer || pending > 0 || idle < limit {
                continue;
            }
            let live: bool = bounded(
                self.op_timeout,
                redis::cmd("EXISTS")
                    .arg(self.keys.alive(&name))
                    .query_async(&mut self.conn),
            )
            .await?;
            if live {
                continue;
            }
            bounded(
                self.op_timeout,
                redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(&name)
                    .exec_async(&mut self.conn),
            )
            .await?;
            info!(consumer = %name, partition, idle_ms = idle, "removed the consumer of a departed batcher");
        }
        Ok(())
    }
}
