//! What a stream entry holds, and how its tasks reach the batcher.
//!
//! An entry holds one task (field `m`, the task message, and `q`, the time it first entered
//! the queue, when it was requeued) or a group of tasks admitted together on one node
//! (field `b`: the key of a string holding their messages, each framed by its 4-byte
//! big-endian length, which the admission stores beside the entry; field `n`: how many; field
//! `s`: the positions of those the admission refused, a duplicate or a full partition, which
//! are skipped; field `w`: how long, in ms, the group's oldest task had waited for the group
//! to be written, which the batcher counts as waited for its batch, see [`waited`]). Whoever
//! reads entries fetches their groups' messages ([`fetch_groups`]), and the settle that
//! acknowledges an entry deletes them. A group is read, acknowledged and deleted as one
//! entry, so admission and reading pay per group, not per task; each of its tasks is still
//! handed to the batcher, batched and settled on its own, and the entry is acknowledged once
//! all of them are settled ([`Leases::finish`]). If any is given back, the entry comes back
//! whole, and the tasks already settled run again (their stored SUCCESS is kept).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use batchgate_protocol::task::{unix_ms, Task};
use batchgate_protocol::zone::Zone;
use batchgate_queue::{Delivery, Receipt};
use batchgate_store::memory::TaskId;
use redis::streams::StreamId;
use redis::{RedisResult, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::conn::{bounded, RedisConn};
use crate::leases::{Clock, Leases};
use crate::local_groups::{LocalGroups, Tasks};
use crate::reader::entry_ms;
use crate::record;

/// Longest gathering wait an entry is believed to carry ([`waited`]): more than any window, and
/// enough to mean "already overdue" to any batch window.
const MAX_WAITED: Duration = Duration::from_secs(60);

/// How long the tasks of a group entry had waited for their group to be written (field `w`,
/// ms, the group's oldest task's wait; zero for an entry of one task or without the field),
/// at most [`MAX_WAITED`]. The batcher's window counts it as waited already, so that the
/// admission's gathering (`crate::intake`) does not add to the batch window: a lone request
/// waits the window in all, as in process.
pub(crate) fn waited(entry: &StreamId) -> Duration {
    entry
        .map
        .get("w")
        .and_then(crate::value_text)
        .and_then(|w| w.parse::<u64>().ok())
        .map_or(Duration::ZERO, |ms| {
            Duration::from_millis(ms).min(MAX_WAITED)
        })
}

/// The frame that goes before a message of `len` bytes in a group: its length.
pub(crate) fn frame_length(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// The framed messages of a group; stops (logged) at a frame that runs past the end.
pub(crate) fn unframe<'a>(mut group: &'a [u8], entry_id: &str) -> Vec<&'a [u8]> {
    let mut messages = Vec::new();
    while !group.is_empty() {
        let Some((len, rest)) = group.split_first_chunk::<4>() else {
            warn!(entry = %entry_id, "truncated task group");
            break;
        };
        let len = u32::from_be_bytes(*len) as usize;
        let Some(message) = rest.get(..len) else {
            warn!(entry = %entry_id, "truncated task group");
            break;
        };
        messages.push(message);
        group = &rest[len..];
    }
    messages
}

/// The key of the messages of a group entry (`None` for an entry of one task).
pub(crate) fn group_key(entry: &StreamId) -> Option<String> {
    entry.map.get("b").and_then(crate::value_text)
}

/// Fetches the messages of the group entries among `entries` from Redis, in one pipelined
/// round trip, and puts them in each entry as field `g`. A group whose messages are gone
/// keeps no `g`: it yields no task, is never held, and lapses to the claimer until it is
/// dead-lettered. (A reader first takes the groups this process's intake kept whole:
/// [`take_kept`].)
pub(crate) async fn fetch_groups<'a>(
    conn: &mut RedisConn,
    limit: Duration,
    entries: impl IntoIterator<Item = &'a mut StreamId>,
) -> RedisResult<()> {
    let mut groups: Vec<(&mut StreamId, String)> = entries
        .into_iter()
        .filter_map(|entry| group_key(entry).map(|key| (entry, key)))
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for (_, key) in &groups {
        pipe.cmd("GET").arg(key);
    }
    let fetched: Vec<Value> = bounded(limit, pipe.query_async(conn)).await?;
    for ((entry, key), group) in groups.iter_mut().zip(fetched) {
        match group {
            Value::BulkString(_) => {
                entry.map.insert("g".to_owned(), group);
            }
            _ => warn!(entry = %entry.id, %key, "the messages of a group entry are gone"),
        }
    }
    Ok(())
}

/// The tasks this process's intake kept whole (`local`) for each of `entries` that holds one
/// of its groups, taken from there; `None` for the others, whose messages are fetched.
pub(crate) fn take_kept(local: &LocalGroups, entries: &[(usize, StreamId)]) -> Vec<Option<Tasks>> {
    entries
        .iter()
        .map(|(_, entry)| group_key(entry).and_then(|key| local.take(&key)))
        .collect()
}

/// The ids of the tasks a group entry admitted (its field `i`; none for an entry of one task
/// or one written before entries named them).
pub(crate) fn admitted_ids(entry: &StreamId) -> Vec<String> {
    entry
        .map
        .get("i")
        .and_then(crate::value_text)
        .map(|ids| {
            ids.split(',')
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The task messages of an entry, as raw bytes: its one task, or the tasks of its group that
/// were admitted (those at the positions listed in `s` were not), framed in one string as
/// fetched from Redis.
pub(crate) fn messages(entry: &StreamId) -> Vec<&[u8]> {
    let group = match (entry.map.get("m"), entry.map.get("g")) {
        (Some(Value::BulkString(m)), _) => return vec![m.as_slice()],
        (_, Some(Value::BulkString(g))) => unframe(g, &entry.id),
        _ => {
            warn!(entry = %entry.id, "stream entry without a task message");
            return Vec::new();
        }
    };
    admitted(entry, group)
}

/// The members of a group that its entry admitted: all but those at the positions its field
/// `s` lists.
fn admitted<T>(entry: &StreamId, group: impl IntoIterator<Item = T>) -> Vec<T> {
    let skipped: Vec<usize> = entry
        .map
        .get("s")
        .and_then(crate::value_text)
        .map(|s| s.split(',').filter_map(|i| i.parse().ok()).collect())
        .unwrap_or_default();
    group
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !skipped.contains(i))
        .map(|(_, m)| m)
        .collect()
}

/// The record heads (`record::head`: admission time and owner, as the pending record holds
/// them) of the tasks handed out, by task id, with the partition of the stream each came
/// from: with the head, a task's settle writes its final record without reading the pending
/// one first; with the stream, it knows whether the entry still shares a node with the
/// record. Taken by the settle; bounded (past [`MAX_HEADS`] it starts again empty, and
/// settles without a head read the record, and acknowledge after the results are written,
/// in a step of their own). Cloning is shallow.
#[derive(Clone, Default)]
pub(crate) struct Heads(Arc<Mutex<HeadMap>>);

/// Keyed with foldhash, not SipHash: the ids are the gateways' own (read from the streams,
/// never a caller's), and two hashes a task went to them. Packed when canonical (see
/// [`TaskId`]): the key sits in the table, so a look-up reads no other allocation.
type HeadMap = HashMap<TaskId, Held, foldhash::fast::RandomState>;

/// What [`Heads`] keeps of a task handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// Its record's head.
    pub(crate) head: String,
    /// The partition of the stream whose entry holds it.
    pub(crate) stream: usize,
}

/// Most heads kept.
const MAX_HEADS: usize = 65_536;

impl Heads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeadMap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keep<'a>(&self, stream: usize, tasks: impl Iterator<Item = &'a Task>) {
        let mut heads = self.lock();
        for task in tasks {
            if heads.len() >= MAX_HEADS {
                heads.clear();
            }
            let head = record::head(unix_ms(task.enqueued_at), task.owner.as_deref());
            heads.insert(TaskId::new(&task.task_id), Held { head, stream });
        }
    }

    /// What is kept of a task handed out, taken (`None` if not known here).
    pub(crate) fn take(&self, task_id: &str) -> Option<Held> {
        self.lock().remove(&TaskId::new(task_id))
    }
}

/// The tasks of an entry, each a delivery with the entry's receipt: those this process's
/// intake kept whole (`kept`, see [`take_kept`]), else its messages decoded (the
/// undecodable ones are logged and left out). Their queue time is Redis's: the first
/// admission (`q`, kept across requeues) or the entry's id. Their record heads are kept in
/// `heads`. `zone` is the reader's (the stream's): decoded tasks share its name.
pub(crate) fn deliveries(
    partition: usize,
    entry: &StreamId,
    kept: Option<Tasks>,
    clock: &Clock,
    heads: &Heads,
    zone: Option<&Zone>,
) -> Vec<Delivery> {
    let first = entry
        .map
        .get("q")
        .and_then(crate::value_text)
        .and_then(|q| q.parse().ok())
        .or_else(|| entry_ms(&entry.id));
    let Some(first) = first else {
        warn!(entry = %entry.id, "stream entry id without a time");
        return Vec::new();
    };
    let queued_at = clock.local(first);
    let waited = waited(entry);
    let delivery = |task| Delivery {
        task,
        receipt: Receipt {
            partition,
            entry_id: entry.id.clone(),
        },
        queued_at,
        waited,
    };
    let tasks: Vec<Delivery> = match kept {
        Some(tasks) => admitted(entry, tasks).into_iter().map(delivery).collect(),
        None => messages(entry)
            .into_iter()
            .filter_map(|bytes| match Task::from_bytes_in(bytes, zone) {
                Ok(task) => Some(delivery(task)),
                Err(error) => {
                    warn!(entry = %entry.id, %error, "undecodable task message");
                    None
                }
            })
            .collect(),
    };
    heads.keep(partition, tasks.iter().map(|d| &d.task));
    tasks
}

/// Where deliveries go that the channel could not take before the reads stopped: `read`
/// hands them out first. Cloning is shallow.
pub(crate) type Overflow = Arc<Mutex<Vec<Delivery>>>;

/// Hands an entry's tasks to the batcher: holds the entry, then sends each task, waiting for
/// room. If the reads stop meanwhile, the tasks not sent yet go to `overflow` (still held),
/// and `false` is returned; if the batcher is gone, they are given back.
pub(crate) async fn hand_out(
    partition: usize,
    entry: &StreamId,
    deliveries: Vec<Delivery>,
    leases: &Leases,
    tx: &mpsc::Sender<Delivery>,
    stop: &CancellationToken,
    overflow: &Overflow,
) -> bool {
    if deliveries.is_empty() {
        return true;
    }
    leases.hold(partition, entry, deliveries.len());
    let mut rest = deliveries.into_iter();
    while let Some(d) = rest.next() {
        if stop.is_cancelled() {
            keep(overflow, std::iter::once(d).chain(rest));
            return false;
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => None,
            permit = tx.reserve() => Some(permit),
        };
        match permit {
            Some(Ok(permit)) => permit.send(d),
            Some(Err(_)) => {
                let receipts: Vec<Receipt> =
                    std::iter::once(d).chain(rest).map(|d| d.receipt).collect();
                leases.give_back(&receipts);
                return false;
            }
            None => {
                keep(overflow, std::iter::once(d).chain(rest));
                return false;
            }
        }
    }
    true
}

fn keep(overflow: &Overflow, deliveries: impl Iterator<Item = Delivery>) {
    overflow
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(deliveries);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `message` to a group, framed by its length, as admission writes it.
    fn frame(message: &[u8], group: &mut Vec<u8>) {
        group.extend_from_slice(&frame_length(message.len()));
        group.extend_from_slice(message);
    }

    #[test]
    fn a_group_unframes_into_its_messages() {
        let mut group = Vec::new();
        frame(b"first", &mut group);
        frame(b"", &mut group);
        frame(&[7u8; 300], &mut group);
        let messages = unframe(&group, "1-0");
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0], b"first");
        assert_eq!(messages[1], b"");
        assert_eq!(messages[2], &[7u8; 300][..]);
    }

    fn entry(fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: "1-0".to_owned(),
            map: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        }
    }

    #[test]
    fn an_entry_says_how_long_its_group_gathered() {
        assert_eq!(
            waited(&entry(&[("b", "k"), ("w", "7")])),
            Duration::from_millis(7)
        );
        assert_eq!(waited(&entry(&[("b", "k")])), Duration::ZERO);
        assert_eq!(waited(&entry(&[("w", "soon")])), Duration::ZERO);
        assert_eq!(waited(&entry(&[("w", "99999999999")])), MAX_WAITED);
    }

    #[test]
    fn a_truncated_group_keeps_its_whole_frames() {
        let mut group = Vec::new();
        frame(b"whole", &mut group);
        frame(b"cut short", &mut group);
        group.truncate(group.len() - 3);
        assert_eq!(unframe(&group, "1-0"), vec![&b"whole"[..]]);
        assert!(unframe(&[0, 0], "1-0").is_empty());
    }
}
