//! The task as it travels from the gateway through the queue to the batcher, and its wire
//! form: a protobuf message (prost), so the distributed queue carries compact bytes that any
//! language can read (`proto/task.proto` documents the schema).

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use crate::zone::Zone;

/// One accepted request, waiting for the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Unguessable id (UUID v4) handed to the client.
    pub task_id: String,
    /// The input to send to the worker.
    pub input: String,
    /// When the gateway accepted it; used for queue-age and end-to-end latency.
    pub enqueued_at: SystemTime,
    /// The gateway that waits for this task's result, to be told when it is stored.
    pub reply_to: Option<String>,
    /// The client's deadline (`timeout_ms` after acceptance): past it, the task is failed
    /// instead of sent to the worker.
    pub deadline: Option<SystemTime>,
    /// Who submitted it (the token's subject): only they may read its result.
    pub owner: Option<String>,
    /// The W3C `traceparent` of the span that enqueued it, so the batcher's spans join the
    /// request's trace; `None` when tracing is off (nothing to carry, nothing to parse).
    pub trace_parent: Option<String>,
    /// The zone of the gateway that accepted it (`--zone`): batchers of that zone take it,
    /// and send it to a worker of that zone while one has room. `None` without zones.
    pub zone: Option<Zone>,
}

/// The task's wire form. Field numbers are the contract: never reuse one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskMessage {
    /// See [`Task::task_id`].
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// See [`Task::input`].
    #[prost(string, tag = "2")]
    pub input: String,
    /// See [`Task::enqueued_at`], in milliseconds since the Unix epoch.
    #[prost(uint64, tag = "3")]
    pub enqueued_at_ms: u64,
    /// See [`Task::reply_to`]; empty when no gateway waits.
    #[prost(string, tag = "4")]
    pub reply_to: String,
    /// See [`Task::deadline`], in milliseconds since the Unix epoch; 0 when there is none.
    #[prost(uint64, tag = "5")]
    pub deadline_ms: u64,
    /// See [`Task::owner`]; empty when there is none.
    #[prost(string, tag = "6")]
    pub owner: String,
    /// See [`Task::trace_parent`]; empty when there is none.
    #[prost(string, tag = "7")]
    pub traceparent: String,
    /// See [`Task::zone`]; empty when there is none (and in messages written before zones).
    #[prost(string, tag = "8")]
    pub zone: String,
}

thread_local! {
    /// The message each decode on this thread merges into: its `zone` keeps its buffer from
    /// one decode to the next (prost's merge reuses a string's capacity), so decoding a zoned
    /// task allocates nothing for the zone.
    static SCRATCH: RefCell<TaskMessage> = RefCell::new(TaskMessage::default());
}

/// A task message that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("invalid task message: {0}")]
pub struct DecodeError(String);

impl Task {
    /// The protobuf encoding of this task (a `TaskMessage`, `proto/task.proto`), written from
    /// the task's own fields: the same bytes prost writes for the message, without first
    /// copying the task's input and names into one.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.encoded_len());
        // Writing into a Vec cannot fail.
        let _ = self.write_to(&mut bytes);
        bytes
    }

    /// How many bytes [`Task::to_bytes`] makes.
    pub fn encoded_len(&self) -> usize {
        use prost::encoding::{encoded_len_varint, key_len};
        let text = |tag: u32, s: &str| {
            if s.is_empty() {
                0
            } else {
                key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
            }
        };
        let number = |tag: u32, n: u64| {
            if n == 0 {
                0
            } else {
                key_len(tag) + encoded_len_varint(n)
            }
        };
        let fields = self.fields();
        text(1, &self.task_id)
            + text(2, &self.input)
            + number(3, fields.enqueued_at_ms)
            + text(4, fields.reply_to)
            + number(5, fields.deadline_ms)
            + text(6, fields.owner)
            + text(7, fields.traceparent)
            + text(8, fields.zone)
    }

    /// Writes the bytes of [`Task::to_bytes`] into `out` (a command's buffer, say), the
    /// input straight from the task.
    pub fn write_to<W: std::io::Write + ?Sized>(&self, out: &mut W) -> std::io::Result<()> {
        let fields = self.fields();
        // In field order, defaults left out, as prost's derived encoder writes them.
        write_text(1, &self.task_id, out)?;
        write_text(2, &self.input, out)?;
        write_number(3, fields.enqueued_at_ms, out)?;
        write_text(4, fields.reply_to, out)?;
        write_number(5, fields.deadline_ms, out)?;
        write_text(6, fields.owner, out)?;
        write_text(7, fields.traceparent, out)?;
        write_text(8, fields.zone, out)
    }

    /// The message's fields that are not the task's own strings, as they are encoded.
    fn fields(&self) -> Fields<'_> {
        Fields {
            enqueued_at_ms: unix_ms(self.enqueued_at),
            deadline_ms: self.deadline.map_or(0, unix_ms),
            reply_to: self.reply_to.as_deref().unwrap_or_default(),
            owner: self.owner.as_deref().unwrap_or_default(),
            traceparent: self.trace_parent.as_deref().unwrap_or_default(),
            zone: self.zone.as_ref().map_or("", Zone::as_str),
        }
    }

    /// Decodes a task encoded by [`Task::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Task, DecodeError> {
        Task::from_bytes_in(bytes, None)
    }

    /// Decodes a task; a zone equal to `known` (the reader's own) shares its name instead of
    /// allocating one.
    pub fn from_bytes_in(bytes: &[u8], known: Option<&Zone>) -> Result<Task, DecodeError> {
        SCRATCH.with_borrow_mut(|m| {
            prost::Message::clear(m);
            prost::Message::merge(m, bytes).map_err(|e| DecodeError(e.to_string()))?;
            if m.task_id.is_empty() {
                return Err(DecodeError("no task id".into()));
            }
            let zone = match known {
                Some(zone) if zone.as_str() == m.zone => Some(zone.clone()),
                _ => Zone::optional(&m.zone).map_err(|e| DecodeError(e.to_string()))?,
            };
            let text = |s: &mut String| (!s.is_empty()).then(|| std::mem::take(s));
            Ok(Task {
                task_id: std::mem::take(&mut m.task_id),
                input: std::mem::take(&mut m.input),
                enqueued_at: SystemTime::UNIX_EPOCH + Duration::from_millis(m.enqueued_at_ms),
                reply_to: text(&mut m.reply_to),
                deadline: (m.deadline_ms != 0)
                    .then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(m.deadline_ms)),
                owner: text(&mut m.owner),
                trace_parent: text(&mut m.traceparent),
                zone,
            })
        })
    }
}

/// [`Task::fields`].
struct Fields<'a> {
    enqueued_at_ms: u64,
    deadline_ms: u64,
    reply_to: &'a str,
    owner: &'a str,
    traceparent: &'a str,
    zone: &'a str,
}

/// Room for a field's key and length: at most 5 + 10 bytes.
const HEAD: usize = 16;

/// A `string` field of a message: its key, its length and its bytes; nothing if empty.
fn write_text<W: std::io::Write + ?Sized>(
    tag: u32,
    value: &str,
    out: &mut W,
) -> std::io::Result<()> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    if value.is_empty() {
        return Ok(());
    }
    let mut head = [0u8; HEAD];
    let mut rest = &mut head[..];
    encode_key(tag, WireType::LengthDelimited, &mut rest);
    encode_varint(value.len() as u64, &mut rest);
    let used = HEAD - rest.len();
    out.write_all(&head[..used])?;
    out.write_all(value.as_bytes())
}

/// A `uint64` field of a message; nothing if 0.
fn write_number<W: std::io::Write + ?Sized>(
    tag: u32,
    value: u64,
    out: &mut W,
) -> std::io::Result<()> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    if value == 0 {
        return Ok(());
    }
    let mut head = [0u8; HEAD];
    let mut rest = &mut head[..];
    encode_key(tag, WireType::Varint, &mut rest);
    encode_varint(value, &mut rest);
    let used = HEAD - rest.len();
    out.write_all(&head[..used])
}

/// Milliseconds since the Unix epoch, the timestamp unit of the API.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task with every field set.
    fn full(task_id: &str, input: String) -> Task {
        Task {
            task_id: task_id.into(),
            input,
            enqueued_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            reply_to: Some("gw-1".into()),
            deadline: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_001_000)),
            owner: Some("alice".into()),
            trace_parent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            zone: Some("eu-west-1a".parse().expect("zone")),
        }
    }

    #[test]
    fn round_trips_through_protobuf() {
        let t = full("ab-1", "héllo".into());
        assert_eq!(Task::from_bytes(&t.to_bytes()).expect("decodes"), t);
        let none = Task {
            reply_to: None,
            deadline: None,
            owner: None,
            trace_parent: None,
            zone: None,
            ..t
        };
        assert_eq!(Task::from_bytes(&none.to_bytes()).expect("decodes"), none);
        assert!(Task::from_bytes(b"\xff\xff").is_err());
        assert!(Task::from_bytes(&[]).is_err(), "no id");
    }

    #[test]
    fn the_encoding_is_the_bytes_prost_writes_for_the_message() {
        let full = full("ab-3", "é".repeat(300));
        let bare = Task {
            input: String::new(),
            enqueued_at: SystemTime::UNIX_EPOCH,
            reply_to: None,
            deadline: None,
            owner: None,
            trace_parent: None,
            zone: None,
            ..full.clone()
        };
        for t in [full, bare] {
            let message = TaskMessage {
                task_id: t.task_id.clone(),
                input: t.input.clone(),
                enqueued_at_ms: unix_ms(t.enqueued_at),
                reply_to: t.reply_to.clone().unwrap_or_default(),
                deadline_ms: t.deadline.map_or(0, unix_ms),
                owner: t.owner.clone().unwrap_or_default(),
                traceparent: t.trace_parent.clone().unwrap_or_default(),
                zone: t.zone.as_ref().map_or("", Zone::as_str).to_owned(),
            };
            let bytes = t.to_bytes();
            assert_eq!(bytes, prost::Message::encode_to_vec(&message));
            assert_eq!(bytes.len(), bytes.capacity(), "sized exactly");
            assert_eq!(t.encoded_len(), bytes.len());
        }
    }

    #[test]
    fn the_zone_field_is_compatible_both_ways() {
        let zoned = Task {
            task_id: "ab-2".into(),
            input: "x".into(),
            enqueued_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
            reply_to: None,
            deadline: None,
            owner: None,
            trace_parent: None,
            zone: Some("zone-a".parse().expect("zone")),
        };
        // A reader built before zones (the message without field 8) skips it.
        let old = TaskMessage {
            task_id: "ab-2".into(),
            input: "x".into(),
            enqueued_at_ms: 1_700_000_000_000,
            ..TaskMessage::default()
        };
        let decoded: TaskMessage = prost::Message::decode(&zoned.to_bytes()[..]).expect("decodes");
        assert_eq!(decoded.zone, "zone-a");
        assert_eq!(
            TaskMessage {
                zone: String::new(),
                ..decoded
            },
            old
        );
        // A message written before zones decodes to a task without one.
        let bytes = prost::Message::encode_to_vec(&old);
        assert_eq!(
            Task::from_bytes(&bytes).expect("decodes"),
            Task {
                zone: None,
                ..zoned.clone()
            }
        );
        // The reader's own zone is shared, not copied; another zone is read as written.
        let known: Zone = "zone-a".parse().expect("zone");
        let mine = Task::from_bytes_in(&zoned.to_bytes(), Some(&known)).expect("decodes");
        assert_eq!(mine, zoned);
        let shared = mine.zone.as_ref().map(|z| z.as_str().as_ptr());
        assert_eq!(shared, Some(known.as_str().as_ptr()), "the name is shared");
        let other: Zone = "zone-b".parse().expect("zone");
        assert_eq!(
            Task::from_bytes_in(&zoned.to_bytes(), Some(&other)).expect("decodes"),
            zoned
        );
        let mut bad = old;
        bad.zone = "no spaces".into();
        assert!(Task::from_bytes(&prost::Message::encode_to_vec(&bad)).is_err());
    }
}
