//! Reading a partition's stream: batch-sized `XREADGROUP`s into the batcher's local channel.
//!
//! A standalone Redis gets one reader for all partitions (one command returns entries of
//! every stream); a cluster gets one per partition, since one command cannot span slots. A
//! reader waits for room under the read-ahead limit ([`ReadAhead`]: a batch per worker slot
//! the batcher could fill now, a quarter batch when every slot is busy), then asks for as
//! many entries as there is room for (an entry holds one task or a group: see
//! `crate::entry`). After a read that found only a few tasks it pauses briefly, so that the
//! next read brings a batch's worth rather than one admission's: reads are paid per batch,
//! not per task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use batchgate_queue::Delivery;
use redis::streams::{StreamId, StreamReadReply};
use redis::RedisResult;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::conn::{bounded, RedisConfig, RedisConn};
use crate::entry::{deliveries, fetch_groups, hand_out, take_kept, Heads, Overflow};
use crate::keys::GROUP;
use crate::leases::{Clock, Leases};
use crate::local_groups::{LocalGroups, Tasks};

/// How long a reader blocks in one `XREADGROUP`.
pub(crate) const READ_BLOCK: Duration = Duration::from_millis(500);
/// Pause after a failed read before trying again.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// How many tasks the readers may hold for the batcher, which moves it (`Queue::read_ahead`),
/// and the signal that room freed. Shared by the queue and its readers. The readers of a
/// cluster (one per partition) share the limit loosely: each that finds room reads up to it,
/// so together they may hold more, up to the channel's own bound (`READ_AHEAD` tasks) and
/// what their reads under way bring.
#[derive(Debug)]
pub(crate) struct ReadAhead {
    limit: AtomicUsize,
    /// Woken when the batcher took tasks or the limit rose.
    room: Notify,
}

impl ReadAhead {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(ReadAhead {
            limit: AtomicUsize::new(limit.max(1)),
            room: Notify::new(),
        })
    }

    /// Sets the limit (at least one task); a higher one wakes the readers.
    pub(crate) fn set(&self, limit: usize) {
        let limit = limit.max(1);
        if self.limit.swap(limit, Ordering::Relaxed) < limit {
            self.room.notify_waiters();
        }
    }

    /// The batcher took tasks from the channel.
    pub(crate) fn taken(&self) {
        self.room.notify_waiters();
    }

    /// Waits until the tasks `tx`'s channel holds leave room for a quarter of the limit, so
    /// that reads come in batch sizes; returns the room.
    async fn room<T>(&self, tx: &mpsc::Sender<T>) -> usize {
        loop {
            let freed = self.room.notified();
            tokio::pin!(freed);
            // Register before looking, so that room freed in between is not missed.
            freed.as_mut().enable();
            let limit = self.limit.load(Ordering::Relaxed);
            let held = tx.max_capacity() - tx.capacity();
            // Never more than the channel takes without waiting.
            let room = limit.saturating_sub(held).min(tx.capacity());
            if room >= (limit / 4).max(1) {
                return room;
            }
            freed.await;
        }
    }
}

pub(crate) struct StreamReader {
    pub(crate) redis: RedisConfig,
    pub(crate) leases: Leases,
    pub(crate) clock: Clock,
    /// `(partition, stream key)` of every stream read.
    pub(crate) streams: Vec<(usize, String)>,
    pub(crate) consumer: String,
    pub(crate) tx: mpsc::Sender<Delivery>,
    /// How much may be read ahead.
    pub(crate) ahead: Arc<ReadAhead>,
    pub(crate) stop: CancellationToken,
    /// Pause after a read that found fewer tasks than a quarter of the room.
    pub(crate) pace: Duration,
    /// Where tasks read but not handed out go when the reads stop.
    pub(crate) overflow: Overflow,
    /// Where the record heads of the tasks handed out are kept, for their settle.
    pub(crate) heads: Heads,
    /// The zone of the streams read.
    pub(crate) zone: Option<batchgate_protocol::zone::Zone>,
    /// The groups this process's intake kept, taken instead of fetched.
    pub(crate) local: LocalGroups,
}

impl StreamReader {
    pub(crate) async fn run(self) {
        let mut conn = None;
        // Tasks per entry in the last read.
        let mut per_entry = 1;
        while !self.stop.is_cancelled() {
            let mut c = match conn.take() {
                Some(c) => c,
                None => match self.redis.connect_blocking(READ_BLOCK).await {
                    Ok(c) => c,
                    Err(error) => {
                        warn!(%error, "stream reader cannot connect");
                        self.pause(RETRY_PAUSE).await;
                        continue;
                    }
                },
            };
            // Wait for room first: entries stay in Redis while the batcher is behind.
            let room = tokio::select! {
                _ = self.stop.cancelled() => return,
                room = self.ahead.room(&self.tx) => room,
            };
            if self.tx.is_closed() {
                return;
            }
            // Entries hold groups of tasks: ask for as many as fill the room, going by the
            // size of the last ones read.
            let wanted = room.div_ceil(per_entry).max(1);
            let read = tokio::select! {
                // An interrupted read may still deliver entries to us in Redis: the drain
                // reads this consumer's pending entries back (see `RedisQueue::close_reads`).
                _ = self.stop.cancelled() => return,
                r = self.read_once(&mut c, wanted) => r,
            };
            match read {
                Ok((entries, kept)) => {
                    let mut tasks = 0;
                    let mut kept = kept.into_iter();
                    for (i, (p, entry)) in entries.iter().enumerate() {
                        let handed = deliveries(
                            *p,
                            entry,
                            kept.next().flatten(),
                            &self.clock,
                            &self.heads,
                            self.zone.as_ref(),
                        );
                        tasks += handed.len();
                        let sent = hand_out(
                            *p,
                            entry,
                            handed,
                            &self.leases,
                            &self.tx,
                            &self.stop,
                            &self.overflow,
                        )
                        .await;
                        if !sent {
                            // Stopped by the drain: what this read brought that is not
                            // handed out yet waits in the overflow, held, for `read`.
                            for ((p, entry), kept) in entries[i + 1..].iter().zip(kept) {
                                let rest = deliveries(
                                    *p,
                                    entry,
                                    kept,
                                    &self.clock,
                                    &self.heads,
                                    self.zone.as_ref(),
                                );
                                if !rest.is_empty() {
                                    self.leases.hold(*p, entry, rest.len());
                                    self.overflow
                                        .lock()
                                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                                        .extend(rest);
                                }
                            }
                            return;
                        }
                    }
                    if !entries.is_empty() {
                        per_entry = tasks.div_ceil(entries.len()).max(1);
                    }
                    conn = Some(c);
                    if tasks > 0 && tasks < room / 4 {
                        self.pause(self.pace).await;
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // Redis lost the group (a restart without persistence): make it again.
                    for (_, stream) in &self.streams {
                        if let Err(error) =
                            ensure_group(&mut c, stream, self.redis.op_timeout).await
                        {
                            warn!(%error, "cannot recreate the consumer group");
                            self.pause(RETRY_PAUSE).await;
                        }
                    }
                    conn = Some(c);
                }
                Err(error) => {
                    debug!(%error, "stream read failed; reconnecting");
                    self.pause(RETRY_PAUSE).await;
                }
            }
        }
    }

    async fn read_once(
        &self,
        conn: &mut RedisConn,
        room: usize,
    ) -> RedisResult<(Vec<(usize, StreamId)>, Vec<Option<Tasks>>)> {
        // COUNT is per stream: spread the room over the streams read.
        let per_stream = room.div_ceil(self.streams.len().max(1));
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
        let mut entries = flatten(&self.streams, reply);
        // This process's own groups as its intake kept them; the others' messages fetched.
        // Entries read but not fetched stay pending to us, unheld: our claimer takes them.
        let kept = take_kept(&self.local, &entries);
        let unkept = entries
            .iter_mut()
            .zip(&kept)
            .filter(|(_, kept)| kept.is_none())
            .map(|((_, entry), _)| entry);
        fetch_groups(conn, self.redis.op_timeout, unkept).await?;
        Ok((entries, kept))
    }

    async fn pause(&self, pause: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// The entries of a read reply, with their partitions.
pub(crate) fn flatten(
    streams: &[(usize, String)],
    reply: Option<StreamReadReply>,
) -> Vec<(usize, StreamId)> {
    let partition_of = |key: &str| streams.iter().find(|(_, s)| s == key).map(|(p, _)| *p);
    reply
        .map(|r| {
            r.keys
                .into_iter()
                .filter_map(|k| partition_of(&k.key).map(|p| (p, k.ids)))
                .flat_map(|(p, ids)| ids.into_iter().map(move |id| (p, id)))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates the group at the start of the stream (and the stream) unless it exists.
pub(crate) async fn ensure_group(
    conn: &mut RedisConn,
    stream: &str,
    limit: Duration,
) -> RedisResult<()> {
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

/// The Redis time (ms) an entry id carries: `<ms>-<seq>`.
pub(crate) fn entry_ms(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::entry_ms;

    #[test]
    fn entry_ids_carry_redis_time() {
        assert_eq!(entry_ms("1700000000123-4"), Some(1_700_000_000_123));
        assert_eq!(entry_ms("nonsense"), None);
    }
}
